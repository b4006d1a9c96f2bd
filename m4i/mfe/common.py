"""Pieces both MFE kinds share: settings checks, training pairs, retrieval recall, batching."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from m4i.io import M4IError
from m4i.models.inputs import check_records
from m4i.text import build_vocab

EVAL_BATCH = 256  # rows per forward pass at evaluation; no effect on results (eval mode)
COMMON_DEFAULTS = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0, "min_count": 1}


def normalize_settings(mfe: dict, defaults: dict, what: str) -> dict:
    """``mfe`` with defaults filled in; unknown keys and bad numbers raise naming the key."""
    if not isinstance(mfe, dict):
        raise M4IError(f"{what}: expected a mapping, got {type(mfe).__name__}")
    allowed = {"kind", *defaults}
    unknown = sorted(set(mfe) - allowed)
    if unknown:
        raise M4IError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    out = {**defaults, **mfe}
    for key in ("epochs", "batch_size", "min_count"):
        if not _posint(out[key]):
            raise M4IError(f"{what}: {key} must be a positive integer, got {out[key]!r}")
    cpi = out.get("captions_per_image")
    if cpi is not None and not _posint(cpi):
        raise M4IError(f"{what}: captions_per_image must be a positive integer or null, got {cpi!r}")
    for key in ("lr", "weight_decay"):
        if isinstance(out[key], bool) or not isinstance(out[key], (int, float)) or out[key] < 0:
            raise M4IError(f"{what}: {key} must be a non-negative number, got {out[key]!r}")
    if out["lr"] == 0:
        raise M4IError(f"{what}: lr must be > 0")
    return out


def _posint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def training_pairs(records: pd.DataFrame, what: str = "MFE records") -> tuple[np.ndarray, list[str]]:
    """(record row of each pair, caption of each pair) over every reference caption."""
    check_records(records, what)
    rows, texts = [], []
    for i, caps in enumerate(records["captions"]):
        caps = list(caps) if caps is not None else []
        if not caps:
            raise M4IError(f"{what}: record {records['record_id'].iloc[i]!r} has no captions")
        rows += [i] * len(caps)
        texts += [str(c) for c in caps]
    return np.asarray(rows, dtype=np.int64), texts


def combination_vocab(texts: list[str], min_count: int) -> list[str]:
    """The MFE's own vocabulary, from the combination set's captions only."""
    return build_vocab(texts, min_count)


def expected_recall(sim: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """Image->text recall@k for a square similarity matrix (row i's match is column i).

    Ties are broken at random *in expectation*: with g texts scoring strictly higher than the
    match and t texts (match included) tied with it, P(match in top k) = clip((k - g) / t, 0, 1).
    A collapsed MFE (all scores equal) thus gets exactly chance, never a lucky 100 %.
    """
    n = sim.shape[0]
    if sim.ndim != 2 or sim.shape[1] != n or n == 0:
        raise M4IError(f"retrieval needs a non-empty square similarity matrix, got {tuple(sim.shape)}")
    true = sim.diagonal().unsqueeze(1)
    greater = (sim > true).sum(1).double()
    tied = (sim == true).sum(1).double()
    out = {}
    for k in ks:
        out[f"recall@{k}"] = float(((k - greater) / tied).clamp(0, 1).mean())
        out[f"chance@{k}"] = min(k, n) / n
    out["n"] = int(n)
    out["median_rank"] = float((greater + (tied + 1) / 2).median())
    return out


def batched(fn, n: int, batch: int = EVAL_BATCH) -> torch.Tensor:
    """``torch.cat([fn(slice) ...])`` over row slices of size ``batch``."""
    return torch.cat([fn(slice(i, min(i + batch, n))) for i in range(0, n, batch)])


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity."""
    return F.cosine_similarity(a, b, dim=-1, eps=1e-8)
