"""A captioner's vocabulary: JSON, built from its own training records, never pickled."""
from __future__ import annotations

import pandas as pd

from m4i.io import M4IError, sha256_json
from m4i.text import build_vocab


def training_vocab(records: pd.DataFrame, min_count: int) -> dict:
    """``{"tokens", "min_count", "sha256"}`` for the captions of a model's training records.

    Built per model from its members (part of the training recipe), so a reference or extra shadow
    captioner trained on another draw gets its own vocabulary, as the target got its own.
    """
    if min_count < 1:
        raise M4IError(f"vocab.min_count must be >= 1, got {min_count}")
    tokens = build_vocab((c for caps in records["captions"] for c in caps), min_count)
    return {"tokens": tokens, "min_count": min_count, "sha256": sha256_json(tokens)}
