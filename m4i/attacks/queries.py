"""Multi-query signals: one table row per (record, query) -> one row per record.

A multi-query black-box attacker asks the target N times for a (sampled) caption of each record
and gets N signal rows per record (``record_id``, ``query`` 0..N-1, signal columns). The
calibrated and the shadow attacks read one row per record, so the queries are summarised per
signal column by their mean (the typical answer; the variance of a per-query signal shrinks by N)
and their max (the best answer: a member's memorised caption needs to come up only once).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from m4i.io import M4IError

AGGREGATES = ("mean", "max")


def is_list_column(col: pd.Series) -> bool:
    return len(col) > 0 and isinstance(col.iloc[0], (list, tuple, np.ndarray))


def aggregate_queries(table: pd.DataFrame, what: str = "signal table") -> pd.DataFrame:
    """Per record (first-appearance order): ``<column>_qmean`` and ``<column>_qmax`` of every
    signal column over its queries.

    Signal columns are all but ``record_id`` and ``query``: numeric ones, or list columns of
    equal-length numeric rows (aggregated element-wise, e.g. MFE ``absdiff``). Every record must
    have exactly the queries 0..N-1, the same N for all, and finite values; otherwise M4IError.
    """
    for col in ("record_id", "query"):
        if col not in table:
            raise M4IError(f"{what}: no {col!r} column (has {list(table.columns)})")
    if len(table) == 0:
        raise M4IError(f"{what}: no rows")
    ids = table["record_id"].astype(str)
    try:
        q = table["query"].to_numpy(dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise M4IError(f"{what}: column 'query' is not integer") from exc
    if (q < 0).any():
        i = int(np.argmin(q))
        raise M4IError(f"{what}: record {ids.iloc[i]!r} has a negative query number {q[i]}")
    dup = pd.DataFrame({"r": ids.to_numpy(), "q": q}).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise M4IError(f"{what}: record {ids.iloc[i]!r} has query {q[i]} twice")
    order = pd.unique(ids)
    n_queries = int(q.max()) + 1
    counts = ids.value_counts()
    short = counts.index[(counts != n_queries).to_numpy()]
    if len(short):
        have = sorted(q[(ids == short[0]).to_numpy()].tolist())
        raise M4IError(f"{what}: record {short[0]!r} has queries {have}, expected 0..{n_queries - 1} "
                       "(every record needs the same queries)")
    # rows as (record position, query) -> (n, N) blocks
    pos = pd.Index(order).get_indexer(ids)
    cols = [c for c in table.columns if c not in ("record_id", "query")]
    if not cols:
        raise M4IError(f"{what}: no signal column besides record_id and query")
    out = {"record_id": list(order)}
    for c in cols:
        col = table[c]
        if is_list_column(col):
            try:
                vals = np.stack([np.asarray(v, dtype=float) for v in col])
            except (TypeError, ValueError) as exc:
                raise M4IError(f"{what}: list column {c!r} has rows of different lengths or non-numbers") from exc
        else:
            if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                raise M4IError(f"{what}: column {c!r} is not numeric (drop non-signal columns first)")
            vals = col.to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(vals.reshape(len(vals), -1)).all(axis=1))
        if len(bad):
            raise M4IError(f"{what}: record {ids.iloc[bad[0]]!r} query {q[bad[0]]} has a non-finite {c!r}")
        block = np.empty((len(order), n_queries) + vals.shape[1:])
        block[pos, q] = vals
        for agg in AGGREGATES:
            res = block.mean(axis=1) if agg == "mean" else block.max(axis=1)
            out[f"{c}_q{agg}"] = list(res) if res.ndim > 1 else res
    return pd.DataFrame(out)


def map_queries(table: pd.DataFrame, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """Apply a per-record signal function (e.g. ``metric_signals(captions, manifest)``) to each
    query's rows separately and stack the results with their ``query`` column.

    Per query, so that corpus-level statistics (CIDEr's IDF) are computed over one caption per
    record, as for single-query captions, and record ids stay unique within each call.
    Rows come out in (query, fn's order). A table without a ``query`` column (one answer per
    record) goes to ``fn`` whole.
    """
    if "query" not in table:  # one answer per record (greedy or beam): nothing to split
        return fn(table)
    parts = []
    for q in sorted(table["query"].unique().tolist()):
        part = fn(table[table["query"] == q].drop(columns="query").reset_index(drop=True))
        if "query" in part:
            raise M4IError("map_queries: the function's result already has a 'query' column")
        part.insert(1 if "record_id" in part else 0, "query", np.int64(q))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def first_query(table: pd.DataFrame) -> pd.DataFrame:
    """What one query returns: the rows of query 0 without the ``query`` column (a table of one
    answer per record is returned as it is)."""
    if "query" not in table:
        return table
    return table[table["query"] == 0].drop(columns="query").reset_index(drop=True)


def attacker_view(table: pd.DataFrame, queries: int) -> pd.DataFrame:
    """The signal table an attacker who asks ``queries`` times per record sees: one answer (query
    0) for a single query; else the mean and max over its first ``queries`` answers per column
    (``aggregate_queries``). A model that answers deterministically gives the same answer every
    time, so its single row stands for all queries."""
    if queries <= 1:
        return first_query(table)
    if "query" not in table:
        table = table.assign(query=np.int64(0))
    return aggregate_queries(table[table["query"] < queries].reset_index(drop=True))
