"""Captions (with per-token log-probabilities) from a trained captioner, batched and deterministic."""
from __future__ import annotations

import logging
import math
import numbers

import pandas as pd
import torch

from m4i.io import M4IError
from m4i.models.decoding import decode_batch, normalize_decode, sample_seed
from m4i.models.train import input_source, load_captioner
from m4i.progress import Progress

log = logging.getLogger("m4i.generate")

COLUMNS = ["record_id", "caption", "tokens", "token_logprobs"]


def generate_captions(checkpoint: dict, records: pd.DataFrame, root, features: dict | None, decode: dict,
                      device: str = "cpu", seed: int | None = None) -> pd.DataFrame:
    """One row per record, in record order: record_id, caption, tokens (emitted words, ``<end>``
    included when emitted), token_logprobs (one per token).

    With ``decode.method: sample`` a ``query`` column (0..queries-1) follows ``record_id``: one row
    per record and query, in (record, query) order, each caption seeded by (``seed``, record,
    query) (``seed`` is then required). Rows are decoded in fixed chunks of
    ``decode.batch_size`` in that order, so the same inputs and settings give the same table.
    """
    if "record_id" not in records:
        raise M4IError("records to caption lack the 'record_id' column")
    decode = normalize_decode(decode)
    sampled = decode["method"] == "sample"
    if sampled and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise M4IError(f"sampled decoding needs an integer seed, got {seed!r}")
    columns = COLUMNS[:1] + ["query"] + COLUMNS[1:] if sampled else COLUMNS
    model, vocab = load_captioner(checkpoint)
    model.to(device).eval()
    records = records.reset_index(drop=True)
    if len(records) == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "query" else object) for c in columns})
    source = input_source(model, checkpoint["arch"], records, root, features)
    rows = []
    record_ids = records["record_id"].astype(str).tolist()  # read once: a pandas lookup per row costs
    bs = decode["batch_size"]                               # more than a batched decoding step
    pairs = [(i, q) for i in range(len(records)) for q in range(decode["queries"])]
    progress = Progress(f"generate {decode['method']}", math.ceil(len(pairs) / bs), unit="chunk", logger=log,
                        min_interval_s=2.0)
    for i in range(0, len(pairs), bs):
        chunk = pairs[i : i + bs]
        idx = [j for j, _ in chunk]
        seeds = [sample_seed(int(seed), record_ids[j], q) for j, q in chunk] if sampled else None
        with torch.no_grad():
            results = decode_batch(model, source.take(idx).to(device), vocab, decode, seeds=seeds)
        for (j, q), (ids, lps) in zip(chunk, results):
            rows.append({
                "record_id": record_ids[j],
                **({"query": q} if sampled else {}),
                "caption": vocab.decode(ids),
                "tokens": [vocab.tokens[t] for t in ids],
                "token_logprobs": [float(x) for x in lps],
            })
        progress.update(i // bs + 1, captions=len(rows))
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"query": "int64"}) if sampled else table
