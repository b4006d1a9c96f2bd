"""Seeded, disjoint, single-distribution splits, stored with the hashes of what they contain.

The original M^4I code drew non-members from another dataset than members, reused the target's
non-members as the shadow's, and let shadow members overlap target members. That protocol is
available only under the explicit name ``paper_protocol_confounded``: with it, a blind
classifier can tell members from non-members by dataset shift alone.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from m4i.io import M4IError, sha256_json
from m4i.names import OPTIONAL_SPLITS, PROTOCOLS, REQUIRED_SPLITS, SPLIT_NAMES
from m4i.seeding import derive_seed


def split_hash(manifest: pd.DataFrame, record_ids: list[str]) -> str:
    """Hash of a split's content: its record ids with their image hashes and captions."""
    rows = manifest.set_index("record_id").loc[sorted(record_ids)]
    return sha256_json([[rid, r.sha256, list(r.captions)] for rid, r in rows.iterrows()])


def _check_sizes(sizes: dict) -> dict:
    """Sizes of the splits a study uses, in cutting order: the required ones, and the optional
    ones (``val``) only when given a size > 0, so a study without them keeps its split files."""
    unknown = set(sizes) - set(SPLIT_NAMES)
    if unknown:
        raise M4IError(f"splits.sizes: unknown split(s) {sorted(unknown)}; known: {list(SPLIT_NAMES)}")
    missing = [s for s in REQUIRED_SPLITS if s not in sizes]
    if missing:
        raise M4IError(f"splits.sizes: missing size for {missing}")
    bad = [s for s in REQUIRED_SPLITS if not isinstance(sizes[s], int) or isinstance(sizes[s], bool) or sizes[s] < 1]
    bad += [s for s in OPTIONAL_SPLITS if s in sizes and (not isinstance(sizes[s], int) or isinstance(sizes[s], bool) or sizes[s] < 0)]
    if bad:
        raise M4IError(f"splits.sizes: sizes must be positive integers, got {[(s, sizes[s]) for s in bad]}")
    return {s: int(sizes[s]) for s in SPLIT_NAMES if s in REQUIRED_SPLITS or sizes.get(s, 0) > 0}


def _permuted_ids(manifest: pd.DataFrame, seed: int, *names: str) -> list[str]:
    # Sort first: the permutation must not depend on the manifest's row order.
    ids = sorted(manifest["record_id"])
    rng = np.random.default_rng(derive_seed(seed, "splits", *names))
    return [ids[i] for i in rng.permutation(len(ids))]


def disjoint_splits(manifest: pd.DataFrame, dataset: str, sizes: dict, seed: int) -> dict[str, list[str]]:
    sizes = _check_sizes(sizes)
    need, have = sum(sizes.values()), len(manifest)
    if need > have:
        raise M4IError(
            f"dataset {dataset} has {have} records but splits.sizes ask for {need} "
            f"({', '.join(f'{k}={v}' for k, v in sizes.items())})"
        )
    ids = _permuted_ids(manifest, seed, dataset)
    out, start = {}, 0
    for name in sizes:
        out[name] = sorted(ids[start : start + sizes[name]])
        start += sizes[name]
    return out


def confounded_splits(
    manifest: pd.DataFrame, nonmembers: pd.DataFrame, dataset: str, nonmember_dataset: str, sizes: dict, seed: int
) -> dict[str, list[str]]:
    """The original code's protocol: members from ``dataset``, non-members from another dataset,
    shadow non-members = target non-members, shadow members drawn independently (overlapping)."""
    sizes = _check_sizes(sizes)
    own = [s for s in sizes if s not in ("shadow_in", "target_out", "shadow_out")]
    need, have = sum(sizes[s] for s in own), len(manifest)
    if need > have or sizes["shadow_in"] > have:
        raise M4IError(f"dataset {dataset} has {have} records but the confounded protocol asks for {need}")
    if sizes["target_out"] > len(nonmembers):
        raise M4IError(
            f"dataset {nonmember_dataset} has {len(nonmembers)} records but splits.sizes.target_out "
            f"asks for {sizes['target_out']}"
        )
    ids = _permuted_ids(manifest, seed, dataset, "confounded")
    out, start = {}, 0
    for name in own:
        out[name] = sorted(ids[start : start + sizes[name]])
        start += sizes[name]
    # Shadow members: an independent draw from the same pool, so they overlap the target's.
    out["shadow_in"] = sorted(_permuted_ids(manifest, seed, dataset, "confounded-shadow")[: sizes["shadow_in"]])
    out["target_out"] = sorted(_permuted_ids(nonmembers, seed, nonmember_dataset, "confounded")[: sizes["target_out"]])
    out["shadow_out"] = list(out["target_out"])
    return {name: out[name] for name in sizes}


def make_splits(
    manifest: pd.DataFrame,
    dataset: str,
    sizes: dict,
    seed: int,
    protocol: str = "disjoint",
    nonmember_manifest: pd.DataFrame | None = None,
    nonmember_dataset: str | None = None,
) -> dict:
    """The split file's content (see docs/CONTRACTS.md)."""
    if protocol == "disjoint":
        splits = disjoint_splits(manifest, dataset, sizes, seed)
        pool = manifest
    elif protocol == "paper_protocol_confounded":
        if nonmember_manifest is None:
            raise M4IError("splits: protocol paper_protocol_confounded needs a non-member dataset")
        splits = confounded_splits(manifest, nonmember_manifest, dataset, nonmember_dataset, sizes, seed)
        pool = pd.concat([manifest, nonmember_manifest], ignore_index=True)
    else:
        raise M4IError(f"splits.protocol: unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")
    return {
        "dataset": dataset,
        "nonmember_dataset": nonmember_dataset if protocol != "disjoint" else None,
        "seed": seed,
        "protocol": protocol,
        "confounded": protocol != "disjoint",
        "sizes": {k: len(v) for k, v in splits.items()},
        "splits": splits,
        "hashes": {k: split_hash(pool, v) for k, v in splits.items()},
        "manifest_sha256": sha256_json(manifest[["record_id", "sha256"]].values.tolist()),
    }


def check_disjoint(splits: dict[str, list[str]]) -> None:
    """Raise if any record sits in two splits (the contract of the disjoint protocol)."""
    owner: dict[str, str] = {}
    for name, ids in splits.items():
        for rid in ids:
            if rid in owner:
                raise M4IError(f"record {rid!r} is in both {owner[rid]} and {name}")
            owner[rid] = name
