"""Seeded batching of (image, caption) training pairs, shared by captioners and MFEs.

Every function is a pure function of its arguments and ``(seed, epoch)``: an epoch's batches do
not depend on how a run got there, which is what makes interrupted training resume to the same
weights.
"""
from __future__ import annotations

import numpy as np
import torch

from m4i.seeding import derive_seed


def epoch_batches(lengths: np.ndarray, batch_size: int, grouped: bool, seed: int, epoch: int) -> list[np.ndarray]:
    """Seeded batches of pair indices for one epoch.

    Grouped: pairs sorted by caption length (random order within a length), cut into batches,
    batches shuffled: almost no padding, which makes LSTM epochs several times faster. A final
    batch of one pair joins its neighbour (train-mode BatchNorm needs two samples).
    """
    n = len(lengths)
    rng = np.random.default_rng(derive_seed(seed, "batches", epoch))
    order = rng.permutation(n)
    if grouped:
        order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        lone = batches.pop()
        batches[-1] = np.concatenate([batches[-1], lone])
    if grouped:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def epoch_pairs(pair_rec: np.ndarray, captions_per_image: int | None, seed: int, epoch: int) -> np.ndarray:
    """Indices of the (image, caption) pairs trained on in ``epoch``, ascending.

    ``None``: every caption of every image. ``k``: a fresh seeded sample of k captions per
    image each epoch (fewer pairs per epoch: faster epochs, same images).
    """
    if captions_per_image is None:
        return np.arange(len(pair_rec))
    rng = np.random.default_rng(derive_seed(seed, "captions", epoch))
    keys = rng.random(len(pair_rec))
    order = np.lexsort((keys, pair_rec))  # by image, random order of its captions
    rank = np.empty(len(pair_rec), dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(pair_rec[order])) + 1]
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        rank[order[a:b]] = np.arange(b - a)
    return np.flatnonzero(rank < captions_per_image)


def image_grouped_batches(pair_rec: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Seeded batches of whole images (all their pairs), at most ``batch_size`` pairs each
    unless one image alone has more.

    For encoders that are costly per image (ViT on pixels), which then encode each image once
    per batch instead of once per caption. A batch of one pair joins a neighbour.
    """
    rng = np.random.default_rng(derive_seed(seed, "image-batches", epoch))
    order = np.argsort(pair_rec, kind="stable")
    cuts = np.flatnonzero(np.diff(pair_rec[order])) + 1
    groups = np.split(order, cuts) if len(order) else []
    batches, current, size = [], [], 0
    for g in rng.permutation(len(groups)):
        if current and size + len(groups[g]) > batch_size:
            batches.append(np.concatenate(current))
            current, size = [], 0
        current.append(groups[g])
        size += len(groups[g])
    if current:
        batches.append(np.concatenate(current))
    return merge_lone_pairs(batches)


def merge_lone_pairs(batches: list[np.ndarray]) -> list[np.ndarray]:
    """Join every one-pair batch to its predecessor (the first to its successor)."""
    out: list[np.ndarray] = []
    for b in batches:
        if out and (len(b) == 1 or len(out[-1]) == 1):
            out[-1] = np.concatenate([out[-1], b])
        else:
            out.append(b)
    return out


def pad_tokens(seqs: list[list[int]], pad: int) -> torch.Tensor:
    """Right-padded [B, T] token ids."""
    out = torch.full((len(seqs), max(map(len, seqs))), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
