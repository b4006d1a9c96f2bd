"""Every random choice in the study is seeded from the config through these two functions."""
from __future__ import annotations

import hashlib
import random


def derive_seed(base_seed: int, *names: object) -> int:
    """A stable 31-bit seed for one purpose (e.g. derive_seed(0, "splits", "shapes"))."""
    key = "/".join([str(base_seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency, but keep data code light
        return
    torch.manual_seed(seed)
