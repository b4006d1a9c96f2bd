"""Atomic, pickle-free reading and writing of every artifact the study produces.

Every writer goes through a temporary file in the destination folder and an
``os.replace``, so a failed job never leaves a half-written artifact behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd


class M4IError(Exception):
    """A user-facing error: bad input, bad config. The message names the culprit."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def flat_paths(values) -> list[str]:
    """The paths among named-input values (each a path or a list of paths), in order, each once."""
    out: dict[str, None] = {}
    for v in values:
        for p in v if isinstance(v, (list, tuple)) else [v]:
            out[os.fspath(p)] = None
    return list(out)


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise M4IError(f"{path}: not valid JSON ({exc})") from exc


def write_table(df: pd.DataFrame, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Write a parquet table; ``meta`` (JSON-serialisable) goes into the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        md = dict(table.schema.metadata or {})
        md[b"m4i"] = json.dumps(meta, sort_keys=True).encode()
        table = table.replace_schema_metadata(md)
    with atomic_path(path) as tmp:
        # No compression-dependent timestamps: same data gives byte-identical files.
        pq.write_table(table, tmp)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_parquet(path)


def select_part(table: pd.DataFrame, split: str, where: str = "table", **keys: str) -> pd.DataFrame:
    """One part's rows of a per-record table of several parts: the rows of ``split`` (a ``split``
    column, e.g. a captioner's metric signals) and of each further key column's value (e.g.
    ``mfe=...`` in a captioner's MFE signals), without those columns. A table of one split (no
    ``split`` column) and no further keys: the table as it is. A key column the table lacks, or no
    rows for the part, is an error naming ``where`` (the file): the job that wrote it was not
    asked for that part."""
    if "split" not in table.columns and not keys:
        return table
    want = {"split": split, **keys}
    rows = np.ones(len(table), dtype=bool)
    for col, value in want.items():
        if col not in table.columns:
            raise M4IError(f"{where}: no {col!r} column to select {col} {value!r} (columns {list(table.columns)})")
        rows &= (table[col].astype(str) == str(value)).to_numpy()
    if not rows.any():
        have = sorted("/".join(t) for t in table[list(want)].astype(str).drop_duplicates().itertuples(index=False, name=None))
        raise M4IError(f"{where}: no rows of {want} (its {'/'.join(want)} parts: {have})")
    return table[rows].drop(columns=list(want)).reset_index(drop=True)


def read_split(path: str | os.PathLike, split: str, **keys: str) -> pd.DataFrame:
    """``select_part`` of the table at ``path`` (read a table once and select several parts with
    ``select_part`` where a job needs more than one)."""
    return select_part(read_table(path), split, where=str(path), **keys)


def read_table_meta(path: str | os.PathLike) -> dict:
    import pyarrow.parquet as pq

    md = pq.read_schema(path).metadata or {}
    raw = md.get(b"m4i")
    return json.loads(raw) if raw else {}


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """Save tensors/dicts/lists/str/numbers only, so that ``load_torch`` can use weights_only.

    Through an open file handle, not a path: given a path, ``torch.save`` names the archive's
    folder after the (random) temporary file, so equal objects got different bytes on every run
    and provenance hashes / dvc.lock changed with nothing changed. A handle gets the fixed name
    ``archive``, and the same object then always gives the same bytes.
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | os.PathLike, map_location: str = "cpu") -> Any:
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object in canonical form (sorted keys, no spaces)."""
    return sha256_text(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def safe_join(root: str | os.PathLike, rel: str, what: str = "path") -> Path:
    """Join ``rel`` under ``root``, refusing absolute paths and paths that escape the root."""
    root_p = Path(root).resolve()
    if os.path.isabs(rel):
        raise M4IError(f"{what} {rel!r} is absolute; it must be relative to the dataset root {root}")
    full = (root_p / rel).resolve()
    if full != root_p and root_p not in full.parents:
        raise M4IError(f"{what} {rel!r} escapes the dataset root {root}")
    return full
