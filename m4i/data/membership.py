"""Which records each captioner trains on (its members) and which of its pool it does not.

One function decides it for every model from the split file and the model's identity, so the
training job, the attacks (labels of shadow records) and the audit all agree:

- the target: ``target_in`` (members) / ``target_out`` (non-members);
- shadow 0: ``shadow_in`` / ``shadow_out``, exactly as the paper's single shadow;
- shadow i >= 1: a seeded re-partition of the shadow pool (``shadow_in`` + ``shadow_out``) with
  the same sizes, so K shadows are K independent draws of the attacker's own data.

Members are returned sorted (the order every split file uses), so the training set of a model
does not depend on how its membership was derived.
"""
from __future__ import annotations

import numpy as np

from m4i.identity import ModelId
from m4i.io import M4IError
from m4i.seeding import derive_seed

MEMBER_SPLIT = {"target": "target_in", "shadow": "shadow_in"}
NONMEMBER_SPLIT = {"target": "target_out", "shadow": "shadow_out"}


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


def model_members(model: ModelId, splits: dict) -> dict:
    """``{"members", "nonmembers", "pool_splits", "construction"}`` of ``model``.

    ``splits`` is the content of the model's split file (its dataset, protocol and seed).
    """
    member_split, nonmember_split = pool_splits(model)
    members, nonmembers = _split(splits, member_split), _split(splits, nonmember_split)
    construction = f"split {member_split} (members) / {nonmember_split} (non-members)"
    if model.role == "shadow" and model.index > 0:
        pool = sorted(set(members) | set(nonmembers))
        rng = np.random.default_rng(derive_seed(model.seed, "shadow-members", model.dataset, model.protocol, model.index))
        order = [pool[i] for i in rng.permutation(len(pool))]
        members, nonmembers = order[: len(members)], order[len(members):]
        construction = (f"seeded re-partition {model.index} of {member_split} + {nonmember_split} "
                        f"({len(members)} members)")
    return {"members": sorted(members), "nonmembers": sorted(nonmembers),
            "pool_splits": [member_split, nonmember_split], "construction": construction}
