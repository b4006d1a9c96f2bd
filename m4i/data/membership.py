"""Which records each captioner trains on (its members) and which of its pool it does not.

One function decides it for every model from the split file and the model's identity, so the
training job, the attacks (labels of shadow records) and the audit all agree:

- the target: ``target_in`` (members) / ``target_out`` (non-members);
- shadow 0: ``shadow_in`` / ``shadow_out``, exactly as the paper's single shadow;
- shadow i >= 1: a seeded re-partition of the shadow pool (``shadow_in`` + ``shadow_out``) with
  the same sizes, so K shadows are K independent draws of the attacker's own data;
- reference captioner i of K (LiRA's online reference models): row i of a balanced membership
  matrix over the candidate pool (``target_in`` + ``target_out``): every candidate is a member of
  exactly K/2 of them, each trains on about half of the pool.

Members are returned sorted (the order every split file uses), so the training set of a model
does not depend on how its membership was derived.
"""
from __future__ import annotations

import numpy as np

from m4i.identity import ModelId
from m4i.io import M4IError
from m4i.seeding import derive_seed

MEMBER_SPLIT = {"target": "target_in", "shadow": "shadow_in", "ref": "target_in"}
NONMEMBER_SPLIT = {"target": "target_out", "shadow": "shadow_out", "ref": "target_out"}


def pool_splits(model: ModelId) -> tuple[str, str]:
    """The two named splits a model's members and non-members are drawn from."""
    if model.role not in MEMBER_SPLIT:
        raise M4IError(f"{model}: no member pool defined for role {model.role!r}")
    return MEMBER_SPLIT[model.role], NONMEMBER_SPLIT[model.role]


def _split(splits: dict, name: str) -> list[str]:
    try:
        return list(splits["splits"][name])
    except (KeyError, TypeError):
        raise M4IError(f"split file of {splits.get('dataset')!r} has no split {name!r}") from None


def membership_matrix(n_candidates: int, k: int, seed: int) -> np.ndarray:
    """Which of ``k`` reference models trains on which of ``n_candidates`` candidates: (k, n) bool.

    LiRA's construction: per candidate, a seeded random ranking of the k models; the first k/2
    take it. Every candidate is then IN for exactly k/2 models (its IN and OUT Gaussians rest on
    equally many models) and every model is IN for about half of the candidates (each model
    trains on a random half of the pool).
    """
    for name, v in (("n_candidates", n_candidates), ("k", k), ("seed", seed)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise M4IError(f"membership_matrix: {name} must be an integer, got {v!r}")
    if n_candidates < 1:
        raise M4IError(f"membership_matrix: n_candidates must be >= 1, got {n_candidates}")
    if k < 2 or k % 2:
        raise M4IError(f"membership_matrix: the number of reference models k must be even and >= 2 "
                       f"(every candidate IN for exactly k/2 of them), got {k}")
    rng = np.random.default_rng(derive_seed(int(seed), "membership-matrix"))
    order = rng.random((k, n_candidates)).argsort(axis=0)  # per column: a random permutation of models
    return order < k // 2


def model_members(model: ModelId, splits: dict, n_refs: int | None = None) -> dict:
    """``{"members", "nonmembers", "pool_splits", "construction"}`` of ``model``.

    ``splits`` is the content of the model's split file (its dataset, protocol and seed);
    ``n_refs`` the number K of reference captioners (needed for role ``ref`` only).
    """
    member_split, nonmember_split = pool_splits(model)
    members, nonmembers = _split(splits, member_split), _split(splits, nonmember_split)
    construction = f"split {member_split} (members) / {nonmember_split} (non-members)"
    if model.role == "ref":
        if not n_refs:
            raise M4IError(f"{model}: the number of reference captioners is needed to draw its members")
        if model.index >= n_refs:
            raise M4IError(f"{model}: index {model.index} but only {n_refs} reference captioners")
        pool = sorted(set(members) | set(nonmembers))
        keep = membership_matrix(len(pool), int(n_refs),
                                 derive_seed(model.seed, "ref-members", model.dataset, model.protocol))[model.index]
        members = [r for r, k in zip(pool, keep) if k]
        nonmembers = [r for r, k in zip(pool, keep) if not k]
        construction = (f"row {model.index} of a balanced {n_refs} x {len(pool)} membership matrix over "
                        f"{member_split} + {nonmember_split} (each candidate a member of {n_refs // 2})")
    if model.role == "shadow" and model.index > 0:
        pool = sorted(set(members) | set(nonmembers))
        rng = np.random.default_rng(derive_seed(model.seed, "shadow-members", model.dataset, model.protocol, model.index))
        order = [pool[i] for i in rng.permutation(len(pool))]
        members, nonmembers = order[: len(members)], order[len(members):]
        construction = (f"seeded re-partition {model.index} of {member_split} + {nonmember_split} "
                        f"({len(members)} members)")
    return {"members": sorted(members), "nonmembers": sorted(nonmembers),
            "pool_splits": [member_split, nonmember_split], "construction": construction}
