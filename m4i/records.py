"""Record ids: the two checks every stage makes, in one place.

Every table, cache and split names its rows by ``record_id`` (a string, ``<dataset>:<local id>``).
Two things go wrong with them and must fail the same way everywhere, naming the id: an id that
appears twice where each must be once, and an id asked for that the table does not hold.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from m4i.io import M4IError


def unique_ids(values: Iterable, what: str) -> list[str]:
    """The ids as strings; M4IError naming the first one that appears twice."""
    ids = pd.Series(list(values), dtype=object).astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise M4IError(f"{what}: duplicate record id {dup.iloc[0]!r}")
    return ids.tolist()


def positions(held: Iterable, wanted: Iterable, what: str, where: str) -> np.ndarray:
    """Position in ``held`` of each id of ``wanted`` (in that order); M4IError naming the first
    id ``held`` lacks and how many it lacks; ``held`` must name each record once."""
    wanted = [str(r) for r in wanted]
    pos = pd.Index(unique_ids(held, where)).get_indexer(wanted)
    if (pos < 0).any():
        missing = [r for r, p in zip(wanted, pos) if p < 0]
        raise M4IError(f"{what}: record {missing[0]!r} is not in {where} ({len(missing)} missing)")
    return pos


def lookup(table: pd.DataFrame, ids: Iterable, what: str, where: str = "the manifest") -> pd.DataFrame:
    """Rows of ``table`` for ``ids`` in that order (index reset); the table's ``record_id`` must be
    unique and hold every id."""
    if "record_id" not in table:
        raise M4IError(f"{what}: {where} has no 'record_id' column")
    held = unique_ids(table["record_id"], where)
    return table.iloc[positions(held, ids, what, where)].reset_index(drop=True)
