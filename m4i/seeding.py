"""Every random choice in the study is seeded from the config through ``derive_seed``; the seed of
each artifact that a workflow rule produces is derived once, by the functions at the end."""
from __future__ import annotations

import hashlib


def derive_seed(base_seed: int, *names: object) -> int:
    """A stable 31-bit seed for one purpose (e.g. derive_seed(0, "splits", "shapes"))."""
    key = "/".join([str(base_seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


# --- the seed of each artifact, derived in one place -----------------------------------------------
def train_seed(model) -> int:
    """A captioner's training seed (init, batch order, dropout). A defended captioner shares it with
    its undefended twin, so that the defense is the only difference between the two."""
    return derive_seed(model.seed, "train", str(model.undefended()))


def mfe_seed(mfe_id) -> int:
    """An MFE's training seed (the confounded protocol's MFEs get their own)."""
    extra = () if mfe_id.protocol == "disjoint" else (mfe_id.protocol,)
    return derive_seed(mfe_id.seed, "mfe", mfe_id.mfe, mfe_id.dataset, *extra)


def features_seed(feat: str, spec: dict) -> int:
    """A feature extractor's random initialisation (irrelevant once pretrained or ImageNet weights
    are loaded over it). Features are shared by every study seed: the spec's own ``seed`` (0)."""
    return derive_seed(int(spec.get("seed", 0)), "features", feat)


def decode_seed(model) -> int:
    """The seed of a model's sampled answers (each record and query draws from it, see
    m4i.models.decoding.sample_seed)."""
    return derive_seed(model.seed, "decode", str(model))
