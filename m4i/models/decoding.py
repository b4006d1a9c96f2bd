"""Batched greedy and beam-search decoding for any captioner with a step interface.

A captioner provides ``start(inputs) -> state``, ``step(prev_ids[B], state) -> (logprobs[B,V],
state)`` and ``select(state, index[B']) -> state`` (gather rows). Every hypothesis starts from
``<start>``; a decoded sequence lists the emitted ids (``<end>`` included when emitted, at most
``max_len`` ids) and the log-probability of each under the model.

Greedy and beam search both choose with ``topk`` so that ties break the same way: beam search
with width 1 returns exactly the greedy result.
"""
from __future__ import annotations

import torch

from m4i.io import M4IError
from m4i.names import DECODE_METHODS

DECODE_DEFAULTS = {"method": "greedy", "beam_size": 1, "max_len": 20, "length_penalty": 0.0, "batch_size": 64}


def normalize_decode(decode: dict | None) -> dict:
    out = {**DECODE_DEFAULTS, **(decode or {})}
    if out["method"] not in DECODE_METHODS:
        raise M4IError(f"decode.method must be one of {list(DECODE_METHODS)}, got {out['method']!r}")
    for key in ("beam_size", "max_len", "batch_size"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < 1:
            raise M4IError(f"decode.{key} must be an integer >= 1, got {out[key]!r}")
    if not isinstance(out["length_penalty"], (int, float)):
        raise M4IError(f"decode.length_penalty must be a number, got {out['length_penalty']!r}")
    return out


@torch.no_grad()
def greedy(model, inputs, start_id: int, end_id: int, max_len: int) -> list[tuple[list[int], list[float]]]:
    n, dev = len(inputs), inputs.device
    state = model.start(inputs)
    prev = torch.full((n,), start_id, dtype=torch.long, device=dev)
    ids = [[] for _ in range(n)]
    lps = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_len):
        logprobs, state = model.step(prev, state)
        top_lp, top_id = logprobs.topk(1, dim=1)
        prev = top_id[:, 0]
        tok, lp = top_id[:, 0].tolist(), top_lp[:, 0].tolist()
        for i in torch.nonzero(~done).flatten().tolist():
            ids[i].append(tok[i])
            lps[i].append(lp[i])
        done |= prev.cpu() == end_id
        if bool(done.all()):
            break
    return list(zip(ids, lps))


def _final_score(score: float, length: int, alpha: float) -> float:
    return score / (length**alpha) if alpha else score


@torch.no_grad()
def beam_search(
    model, inputs, start_id: int, end_id: int, max_len: int, beam_size: int, length_penalty: float = 0.0
) -> list[tuple[list[int], list[float]]]:
    """Per item: the hypothesis with the best (optionally length-normalised) total log-prob.

    Standard scheme: each step expands the k alive beams by their 2k best continuations; an
    ``<end>`` continuation ranked within the first k becomes a finished hypothesis, the best
    non-ending ones stay alive. An item stops once it holds k finished hypotheses; at
    ``max_len`` the alive beams count as finished.
    """
    n, k, dev = len(inputs), beam_size, inputs.device
    state = model.start(inputs)
    # Beams of item b live at rows b*k .. b*k+k-1. Only beam 0 is real at the start.
    state = model.select(state, torch.arange(n, device=dev).repeat_interleave(k))
    # float64 totals: adding a float32 log-prob is then (nearly) exact, so ranking candidates by
    # total keeps the per-step order of log-probs, and width 1 picks what greedy picks.
    scores = torch.full((n, k), float("-inf"), dtype=torch.float64)
    scores[:, 0] = 0.0
    seqs = [[[] for _ in range(k)] for _ in range(n)]  # ids per alive beam
    seq_lps = [[[] for _ in range(k)] for _ in range(n)]
    finished: list[list[tuple[float, list[int], list[float]]]] = [[] for _ in range(n)]
    done = [False] * n
    prev = torch.full((n * k,), start_id, dtype=torch.long, device=dev)
    for t in range(max_len):
        logprobs, state = model.step(prev, state)
        logprobs = logprobs.float().cpu()  # bookkeeping on the CPU: one transfer per step
        vocab = logprobs.shape[1]
        cand = (scores.unsqueeze(2) + logprobs.double().view(n, k, vocab)).view(n, k * vocab)
        top_s, top_i = cand.topk(min(2 * k, k * vocab), dim=1)
        src = torch.arange(n * k).view(n, k).clone()  # default: keep rows (done items)
        new_prev = torch.full((n, k), end_id, dtype=torch.long)
        new_scores = torch.full((n, k), float("-inf"), dtype=torch.float64)
        new_seqs, new_lps = [], []
        for b in range(n):
            if done[b]:
                new_seqs.append(seqs[b])
                new_lps.append(seq_lps[b])
                continue
            alive_s, alive_l = [], []
            for rank in range(top_s.shape[1]):
                s = float(top_s[b, rank])
                if s == float("-inf"):
                    break
                beam, tok = divmod(int(top_i[b, rank]), vocab)
                lp = float(logprobs[b * k + beam, tok])
                hyp, hyp_lp = seqs[b][beam] + [tok], seq_lps[b][beam] + [lp]
                if tok == end_id:
                    if rank < k:
                        finished[b].append((s, hyp, hyp_lp))
                    continue
                j = len(alive_s)
                src[b, j] = b * k + beam
                new_prev[b, j] = tok
                new_scores[b, j] = s
                alive_s.append(hyp)
                alive_l.append(hyp_lp)
                if len(alive_s) == k:
                    break
            n_alive = len(alive_s)
            alive_s += [[] for _ in range(k - n_alive)]
            alive_l += [[] for _ in range(k - n_alive)]
            new_seqs.append(alive_s)
            new_lps.append(alive_l)
            if len(finished[b]) >= k or n_alive == 0 or t == max_len - 1:
                done[b] = True
        if t == max_len - 1:
            for b in range(n):  # out of length: alive beams are hypotheses too
                for j in range(k):
                    if new_scores[b, j] > float("-inf"):
                        finished[b].append((float(new_scores[b, j]), new_seqs[b][j], new_lps[b][j]))
            break
        seqs, seq_lps, scores = new_seqs, new_lps, new_scores
        prev = new_prev.view(-1).to(dev)
        state = model.select(state, src.view(-1).to(dev))
        if all(done):
            break
    out = []
    for b in range(n):
        if not finished[b]:  # cannot happen with a vocabulary of >= 2 words; stay total anyway
            finished[b].append((0.0, [], []))
        best = max(finished[b], key=lambda h: _final_score(h[0], len(h[1]), length_penalty))
        out.append((best[1], best[2]))
    return out


def decode_batch(model, inputs, vocab, decode: dict) -> list[tuple[list[int], list[float]]]:
    """Decode one batch of encoder inputs with the normalised ``decode`` settings."""
    if decode["method"] == "greedy":
        return greedy(model, inputs, vocab.start, vocab.end, decode["max_len"])
    return beam_search(
        model, inputs, vocab.start, vocab.end, decode["max_len"], decode["beam_size"], decode["length_penalty"]
    )
