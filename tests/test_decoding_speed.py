"""Vectorised greedy decoding returns exactly what a row-by-row loop returns, and a finished row
leaves the batch."""
from __future__ import annotations

import torch

from m4i.models.decoding import greedy

END, START, V = 1, 0, 6


class Toy:
    """Row i's next token depends on its previous token, its row and the step; some rows end early,
    some never; the state carries each batch row's original row, so a decoder that drops rows must
    ``select`` them. Records how many rows each step was given."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(n, 25, V, V, generator=g)
        self.batch_sizes = []

    def start(self, inputs):
        return {"t": 0, "rows": torch.arange(len(inputs))}

    def step(self, prev, state):
        t = state["t"]
        self.batch_sizes.append(len(prev))
        logits = self.table[state["rows"], t, prev]
        return torch.log_softmax(logits, 1), {"t": t + 1, "rows": state["rows"]}

    @staticmethod
    def select(state, index):
        return {"t": state["t"], "rows": state["rows"][index]}


def _reference(model, n, max_len):
    """The row-by-row loop greedy decoding used before it was vectorised."""
    state = model.start(torch.zeros(n, 1))
    prev = torch.full((n,), START, dtype=torch.long)
    ids, lps = [[] for _ in range(n)], [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_len):
        logprobs, state = model.step(prev, state)
        top_lp, top_id = logprobs.topk(1, dim=1)
        prev = top_id[:, 0]
        for i in torch.nonzero(~done).flatten().tolist():
            ids[i].append(int(top_id[i, 0]))
            lps[i].append(float(top_lp[i, 0]))
        done |= prev == END
        if bool(done.all()):
            break
    return list(zip(ids, lps))


def test_vectorised_greedy_equals_the_row_loop():
    for seed in range(5):
        for max_len in (1, 3, 20):
            model = Toy(17, seed)
            got = greedy(model, torch.zeros(17, 1), START, END, max_len)
            # a step decodes only the rows still running: the steps cost the captions' lengths
            assert sum(model.batch_sizes) == sum(len(ids) for ids, _ in got)
            want = _reference(model, 17, max_len)
            assert got == want
            assert all(len(ids) <= max_len and (END not in ids[:-1]) for ids, _ in got)
    assert any(ids and ids[-1] == END for ids, _ in got) and any(len(ids) == 20 for ids, _ in got)


def test_greedy_of_no_rows():
    assert greedy(Toy(1), torch.zeros(0, 1), START, END, 5) == []
