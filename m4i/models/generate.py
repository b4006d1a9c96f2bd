"""Captions (with per-token log-probabilities) from a trained captioner, batched and deterministic."""
from __future__ import annotations

import pandas as pd
import torch

from m4i.io import M4IError
from m4i.models.decoding import decode_batch, normalize_decode
from m4i.models.train import input_source, load_captioner

COLUMNS = ["record_id", "caption", "tokens", "token_logprobs"]


def generate_captions(checkpoint: dict, records: pd.DataFrame, root, features: dict | None, decode: dict,
                      device: str = "cpu") -> pd.DataFrame:
    """One row per record, in record order: record_id, caption, tokens (emitted words, ``<end>``
    included when emitted), token_logprobs (one per token).

    Records are decoded in fixed chunks of ``decode.batch_size`` in record order, so the same
    inputs and settings give the same table.
    """
    if "record_id" not in records:
        raise M4IError("records to caption lack the 'record_id' column")
    decode = normalize_decode(decode)
    model, vocab = load_captioner(checkpoint)
    model.to(device).eval()
    records = records.reset_index(drop=True)
    if len(records) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    source = input_source(model, checkpoint["arch"], records, root, features)
    rows = []
    bs = decode["batch_size"]
    for i in range(0, len(records), bs):
        idx = list(range(i, min(i + bs, len(records))))
        with torch.no_grad():
            results = decode_batch(model, source.take(idx).to(device), vocab, decode)
        for j, (ids, lps) in zip(idx, results):
            rows.append({
                "record_id": str(records.at[j, "record_id"]),
                "caption": vocab.decode(ids),
                "tokens": [vocab.tokens[t] for t in ids],
                "token_logprobs": [float(x) for x in lps],
            })
    return pd.DataFrame(rows, columns=COLUMNS)
