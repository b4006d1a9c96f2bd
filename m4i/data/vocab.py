"""Vocabulary files: JSON, built from one training split, never pickled."""
from __future__ import annotations

import pandas as pd

from m4i.io import M4IError, sha256_json
from m4i.text import build_vocab


def vocab_for_split(records: pd.DataFrame, split: str, splits_sha256: str, min_count: int) -> dict:
    """The vocabulary file's content for the captions of ``records`` (one training split)."""
    if min_count < 1:
        raise M4IError(f"vocab.min_count must be >= 1, got {min_count}")
    tokens = build_vocab((c for caps in records["captions"] for c in caps), min_count)
    return {
        "tokens": tokens,
        "min_count": min_count,
        "split": split,
        "splits_sha256": splits_sha256,
        "sha256": sha256_json(tokens),
    }
