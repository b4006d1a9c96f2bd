"""The blind baseline: membership signals that NEVER query the captioner.

Per record, statistics of its reference captions and cheap statistics of its image. Run through
``m4i.attacks.run_attack`` like any other signal table. On the project's disjoint splits (one
distribution) it must score AUC ~ 0.5; under the confounded paper protocol (non-members from
another dataset) it scores high, which is the point of running it: any attack that does not
beat it there measures the dataset, not the model.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from m4i.io import M4IError
from m4i.records import lookup, unique_ids
from m4i.text import tokenize

CAPTION_COLUMNS = ("n_refs", "ref_len_mean", "ref_len_std", "ref_ttr", "ref_n_distinct", "ref_word_len_mean",
                   "ref_char_len_mean")
IMAGE_COLUMNS = ("img_width", "img_height", "img_mean_r", "img_mean_g", "img_mean_b", "img_std_r", "img_std_g",
                 "img_std_b")


def caption_stats(captions: list[str]) -> dict[str, float]:
    """Length, vocabulary and word-length statistics of one record's reference captions."""
    toks = [tokenize(c) for c in captions]
    lens = np.array([len(t) for t in toks], dtype=float)
    words = [w for t in toks for w in t]
    n = len(words)
    return {
        "n_refs": float(len(captions)),
        "ref_len_mean": float(lens.mean()),
        "ref_len_std": float(lens.std()),  # population std: defined for one reference too
        "ref_ttr": float(len(set(words)) / n) if n else 0.0,  # type-token ratio over all references
        "ref_n_distinct": float(len(set(words))),
        "ref_word_len_mean": float(np.mean([len(w) for w in words])) if n else 0.0,
        "ref_char_len_mean": float(np.mean([len(c) for c in captions])),
    }


def image_stats(image) -> dict[str, float]:
    """Size and per-channel mean/std of an RGB PIL image (pixel values scaled to [0, 1])."""
    a = np.asarray(image.convert("RGB"), dtype=float) / 255.0
    mean, std = a.reshape(-1, 3).mean(axis=0), a.reshape(-1, 3).std(axis=0)
    return {"img_width": float(a.shape[1]), "img_height": float(a.shape[0]),
            **{f"img_mean_{c}": float(v) for c, v in zip("rgb", mean)},
            **{f"img_std_{c}": float(v) for c, v in zip("rgb", std)}}


def blind_signals(manifest: pd.DataFrame, root: str | os.PathLike, record_ids: list[str]) -> pd.DataFrame:
    """``record_id`` + float columns (CAPTION_COLUMNS, IMAGE_COLUMNS) for ``record_ids``, in that order."""
    from m4i.data.images import load_image

    for col in ("record_id", "image", "captions"):
        if col not in manifest:
            raise M4IError(f"blind_signals: manifest has no column {col!r}")
    ids = unique_ids(record_ids, "blind_signals: requested records")
    by_id = lookup(manifest.assign(record_id=manifest["record_id"].astype(str)), ids, "blind_signals")
    by_id = by_id.set_index("record_id")
    rows = []
    for r in ids:
        caps = by_id.at[r, "captions"]
        caps = [] if caps is None else [str(c) for c in caps]
        if not caps:
            raise M4IError(f"blind_signals: record {r!r} has no reference captions")
        rows.append({"record_id": r, **caption_stats(caps), **image_stats(load_image(root, by_id.at[r, "image"]))})
    return pd.DataFrame(rows, columns=["record_id", *CAPTION_COLUMNS, *IMAGE_COLUMNS])
