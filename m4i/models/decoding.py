"""Batched greedy, beam-search and sampled decoding for any captioner with a step interface.

A captioner provides ``start(inputs) -> state``, ``step(prev_ids[B], state) -> (logprobs[B,V],
state)`` and ``select(state, index[B']) -> state`` (gather rows). Every hypothesis starts from
``<start>``; a decoded sequence lists the emitted ids (``<end>`` included when emitted, at most
``max_len`` ids) and the log-probability of each under the model.

Greedy and beam search both choose with ``topk`` so that ties break the same way: beam search
with width 1 returns the greedy tokens (log-probabilities equal to float rounding: greedy drops
finished rows from its batch, beam search keeps stepping them).

Sampled decoding (``method: sample``) draws each token from the model's distribution sharpened
or flattened by ``temperature`` and limited to the ``top_k`` most likely tokens (0 = all). Each
decoded row reads its own stream of uniforms, seeded per record and query (``sample_seed``), and
picks the token by inverse CDF, so a record's captions do not depend on which records share its
batch. ``queries: N`` asks for N sampled captions per record (the multi-query attacker; a
sampling defense answers with one). ``truncate: k`` (any method) cuts the answer to its first k
words after decoding, as a target that returns only a caption prefix would. The log-probabilities
reported are always the model's own (temperature 1, no top-k), like greedy's and beam's.
"""
from __future__ import annotations

import numpy as np
import torch

from m4i.io import M4IError
from m4i.names import DECODE_METHODS
from m4i.seeding import derive_seed

METHODS = DECODE_METHODS
DECODE_DEFAULTS = {"method": "greedy", "beam_size": 1, "max_len": 20, "length_penalty": 0.0, "batch_size": 64,
                   "temperature": 1.0, "top_k": 0, "truncate": None, "queries": 1}


def _posint(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def normalize_decode(decode: dict | None) -> dict:
    """The decode settings with defaults filled in, validated without the config schema.

    Sampling knobs (temperature, top_k) with a deterministic method, and several queries of a
    deterministic method (N identical captions), are refused rather than silently ignored.
    """
    given = dict(decode or {})
    unknown = sorted(set(given) - set(DECODE_DEFAULTS))
    if unknown:
        raise M4IError(f"decode: unknown setting(s) {unknown} (known: {sorted(DECODE_DEFAULTS)})")
    out = {**DECODE_DEFAULTS, **given}
    if out["method"] not in METHODS:
        raise M4IError(f"decode.method must be one of {list(METHODS)}, got {out['method']!r}")
    for key in ("beam_size", "max_len", "batch_size", "queries"):
        if not _posint(out[key]):
            raise M4IError(f"decode.{key} must be an integer >= 1, got {out[key]!r}")
    if not isinstance(out["length_penalty"], (int, float)) or isinstance(out["length_penalty"], bool):
        raise M4IError(f"decode.length_penalty must be a number, got {out['length_penalty']!r}")
    t = out["temperature"]
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t < float("inf"):
        raise M4IError(f"decode.temperature must be a number > 0, got {t!r}")
    if not isinstance(out["top_k"], int) or isinstance(out["top_k"], bool) or out["top_k"] < 0:
        raise M4IError(f"decode.top_k must be an integer >= 0 (0 = no limit), got {out['top_k']!r}")
    if out["truncate"] is not None and not _posint(out["truncate"]):
        raise M4IError(f"decode.truncate must be null or an integer >= 1 (words kept), got {out['truncate']!r}")
    if out["method"] != "sample":
        if out["queries"] != 1:
            raise M4IError(f"decode.queries = {out['queries']} needs method 'sample' "
                           f"({out['method']} decoding gives the same caption every time)")
        if float(t) != 1.0 or out["top_k"] != 0:
            raise M4IError(f"decode.temperature/top_k apply to method 'sample' only, not {out['method']!r}")
    return out


def sample_seed(seed: int, record_id: str, query: int) -> int:
    """The seed of one sampled caption: a function of (seed, record, query) only."""
    return derive_seed(seed, "decode-sample", str(record_id), int(query))


@torch.no_grad()
def greedy(model, inputs, start_id: int, end_id: int, max_len: int) -> list[tuple[list[int], list[float]]]:
    """Per row: the most likely token each step until ``<end>`` (kept) or ``max_len`` tokens.

    Vectorised, and a row leaves the batch at its ``<end>`` (the model's state is cut to the rows
    still running with ``select``): a batch costs the steps of its captions, not ``max_len`` (or its
    longest caption) times its size. Each row's tokens are the same as decoded alone; its
    log-probabilities equal to float rounding (a matrix product over fewer rows may round
    differently).
    """
    n = len(inputs)
    if not n:
        return []
    state = model.start(inputs)
    prev = torch.full((n,), start_id, dtype=torch.long, device=inputs.device)
    tok = torch.zeros((n, max_len), dtype=torch.long)
    lp = torch.zeros((n, max_len))
    length = torch.full((n,), max_len, dtype=torch.long)
    rows = torch.arange(n)  # the original row of each row still in the batch
    for t in range(max_len):
        logprobs, state = model.step(prev, state)
        top_lp, top_id = logprobs.topk(1, dim=1)
        step_tok = top_id[:, 0].cpu()
        tok[rows, t] = step_tok
        lp[rows, t] = top_lp[:, 0].cpu()
        ended = step_tok == end_id
        if bool(ended.any()):
            length[rows[ended]] = t + 1
            keep = torch.nonzero(~ended).flatten()
            rows = rows[keep]
            if not len(rows):
                break
            state = model.select(state, keep)
            step_tok = step_tok[keep]
        prev = step_tok.to(inputs.device)
    tok_l, lp_l, lengths = tok.tolist(), lp.tolist(), length.tolist()
    return [(tok_l[i][: lengths[i]], lp_l[i][: lengths[i]]) for i in range(n)]


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


@torch.no_grad()
def sample(model, inputs, start_id: int, end_id: int, max_len: int, temperature: float, top_k: int,
           seeds: list[int]) -> list[tuple[list[int], list[float]]]:
    """Ancestral sampling; row i reads the uniforms of ``seeds[i]`` (one per step).

    Token t of row i is the first whose cumulative probability exceeds u[i, t] (float64), from
    softmax(logprobs / temperature) restricted to tokens at least as likely as the top_k-th
    (ties at the k-th value are all kept, so the cut does not depend on topk's tie order).
    """
    n = len(inputs)
    if len(seeds) != n:
        raise M4IError(f"sample: {len(seeds)} seeds for {n} inputs")
    uniforms = torch.from_numpy(np.stack([np.random.default_rng(s).random(max_len) for s in seeds])
                                if n else np.zeros((0, max_len)))
    state = model.start(inputs)
    prev = torch.full((n,), start_id, dtype=torch.long, device=inputs.device)
    ids = [[] for _ in range(n)]
    lps = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    for t in range(max_len):
        logprobs, state = model.step(prev, state)
        logprobs = logprobs.float().cpu()
        logits = logprobs.double() / float(temperature)
        if 0 < top_k < logits.shape[1]:
            kth = logits.topk(top_k, dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        cdf = torch.softmax(logits, dim=1).cumsum(dim=1)
        total = cdf[:, -1:]
        u = torch.minimum(uniforms[:, t : t + 1] * total, torch.nextafter(total, torch.zeros_like(total)))
        tok = torch.searchsorted(cdf, u, right=True)[:, 0].clamp(max=cdf.shape[1] - 1)
        lp = logprobs.gather(1, tok[:, None])[:, 0]
        tok_l, lp_l = tok.tolist(), lp.tolist()
        for i in torch.nonzero(~done).flatten().tolist():
            ids[i].append(tok_l[i])
            lps[i].append(lp_l[i])
        done |= tok == end_id
        if bool(done.all()):
            break
        prev = tok.to(inputs.device)
    return list(zip(ids, lps))


def truncate(ids: list[int], lps: list[float], k: int | None, end_id: int) -> tuple[list[int], list[float]]:
    """The first ``k`` words of a decoded sequence; an ``<end>`` right after them stays (the
    caption ended on its own), a longer caption loses its tail and its ``<end>``."""
    words = len(ids) - (1 if ids and ids[-1] == end_id else 0)
    if k is None or words <= k:
        return ids, lps
    return ids[:k], lps[:k]


def decode_batch(model, inputs, vocab, decode: dict, seeds: list[int] | None = None) -> list[tuple[list[int], list[float]]]:
    """Decode one batch of encoder inputs with the normalised ``decode`` settings.

    ``seeds`` (one per input row, from ``sample_seed``) is required by method ``sample``.
    """
    if decode["method"] == "greedy":
        out = greedy(model, inputs, vocab.start, vocab.end, decode["max_len"])
    elif decode["method"] == "beam":
        out = beam_search(model, inputs, vocab.start, vocab.end, decode["max_len"], decode["beam_size"],
                          decode["length_penalty"])
    else:
        if seeds is None:
            raise M4IError("decode method 'sample' needs a seed per row")
        out = sample(model, inputs, vocab.start, vocab.end, decode["max_len"], decode["temperature"],
                     decode["top_k"], seeds)
    if decode.get("truncate") is None:
        return out
    return [truncate(ids, lps, decode["truncate"], vocab.end) for ids, lps in out]
