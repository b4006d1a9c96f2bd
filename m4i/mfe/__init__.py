"""Multi-modal feature extractors (MFEs) for the feature-based attack (FB M^4I).

The attacker trains an MFE on its own combination set (image + reference captions), then embeds
each image and the caption a captioner generated for it; members' pairs sit closer together.

Kinds (``mfe["kind"]``): ``paper`` (m4i.mfe.paper: cached backbone features and bag of words,
MSE-aligned, as in the original code) and ``open_clip`` (m4i.mfe.clip: a CLIP trained
contrastively on pixels). A checkpoint is a plain dict (``kind``, ``settings``, ``seed``,
``vocab`` tokens, ``state_dict``, ``loss`` per epoch, ``embed_dim``, ``absdiff_space``, ...),
safe for ``m4i.io.save_torch`` / ``load_torch`` (weights_only).
"""
from __future__ import annotations

import logging

import pandas as pd
import torch

from m4i.io import M4IError
from m4i.records import lookup, unique_ids
from m4i.mfe import clip, paper
from m4i.mfe.common import cosine, expected_recall
from m4i.models.inputs import check_records
from m4i.progress import Progress

KINDS = {paper.KIND: paper, clip.KIND: clip}
SIGNAL_COLUMNS = ["record_id", "cos", "ref_cos", "absdiff"]

__all__ = ["KINDS", "SIGNAL_COLUMNS", "load_encoder", "mfe_signals", "retrieval_quality", "train_mfe"]


def _module(kind, what: str):
    if kind not in KINDS:
        raise M4IError(f"{what}: unknown MFE kind {kind!r}; known: {sorted(KINDS)}")
    return KINDS[kind]


def train_mfe(mfe: dict, records: pd.DataFrame, root, features: dict | None, seed: int, device="cpu") -> dict:
    """Train an MFE on ``records`` (the combination set); returns the checkpoint dict.

    Deterministic on the CPU for a given seed (and thread count).
    """
    if not isinstance(mfe, dict):
        raise M4IError(f"mfe settings: expected a mapping, got {type(mfe).__name__}")
    return _module(mfe.get("kind"), "mfe settings").train(mfe, records, root, features, int(seed), device)


def load_encoder(checkpoint: dict, device="cpu"):
    """An eval-mode encoder with ``images(records, root, features)`` and ``texts(list[str])``."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise M4IError("MFE checkpoint: expected a dict with 'kind' and 'state_dict'")
    return _module(checkpoint.get("kind"), "MFE checkpoint").Encoder(checkpoint, device)


def retrieval_quality(checkpoint: dict, records: pd.DataFrame, root, features: dict | None, device="cpu") -> dict:
    """Image->text retrieval among held-out ``records`` (query: image, gallery: each record's first
    reference caption; cosine similarity). Returns recall@1/5/10, chance@k = k/n, n, median_rank;
    ties count as broken at random, so a collapsed MFE scores chance."""
    check_records(records, "retrieval records")
    records = records.reset_index(drop=True)
    enc = load_encoder(checkpoint, device)
    img = enc.images(records, root, features)
    txt = enc.texts([_first_caption(c, r) for c, r in zip(records["captions"], records["record_id"])])
    sim = torch.nn.functional.normalize(img, dim=1) @ torch.nn.functional.normalize(txt, dim=1).T
    return {"kind": checkpoint["kind"], **expected_recall(sim)}


def _first_caption(captions, record_id) -> str:
    if captions is None or len(captions) == 0:
        raise M4IError(f"record {record_id!r} has no reference captions")
    return str(captions[0])


def mfe_signals(checkpoint: dict, captions: pd.DataFrame, manifest: pd.DataFrame, root, features: dict | None,
                device="cpu") -> pd.DataFrame:
    """Per generated caption: ``record_id``, ``cos`` (image vs generated caption; higher = more
    member-like), ``ref_cos`` (generated caption vs the mean of the normalised reference-caption
    embeddings; uses references), ``absdiff`` (list[float], |f_img - f_txt| in the embedding space
    the MFE aligned: raw BN outputs for ``paper``, L2-normalised for ``open_clip``; see the
    checkpoint's ``absdiff_space``). Rows in ``captions`` order."""
    for col in ("record_id", "caption"):
        if col not in captions:
            raise M4IError(f"generated captions: missing column {col!r}")
    ids = unique_ids(captions["record_id"], "generated captions")
    records = lookup(manifest.assign(record_id=manifest["record_id"].astype(str)) if "record_id" in manifest
                     else manifest, ids, "generated captions")
    enc = load_encoder(checkpoint, device)
    if len(ids) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("record_id", "absdiff") else float)
                             for c in SIGNAL_COLUMNS})
    progress = Progress(f"mfe signals ({checkpoint.get('kind')}) of {len(ids)} captions", 3, unit="stage",
                        logger=logging.getLogger("m4i.mfe"))
    f_img = enc.images(records, root, features)
    progress.update(1, embedded="images")
    f_txt = enc.texts([c if isinstance(c, str) else "" for c in captions["caption"]])  # None/NaN: empty
    progress.update(2, embedded="captions")
    ref_mean = _mean_reference_embeddings(enc, records)
    progress.update(3, embedded="references")
    if checkpoint.get("absdiff_space") == "l2_normalized":
        diff = (torch.nn.functional.normalize(f_img, dim=1) - torch.nn.functional.normalize(f_txt, dim=1)).abs()
    else:
        diff = (f_img - f_txt).abs()
    return pd.DataFrame({
        "record_id": ids,
        "cos": cosine(f_img, f_txt).double().numpy(),
        "ref_cos": cosine(f_txt, ref_mean).double().numpy(),
        "absdiff": [row.tolist() for row in diff.float()],
    })


def _mean_reference_embeddings(enc, records: pd.DataFrame) -> torch.Tensor:
    """Per record: mean of its L2-normalised reference-caption embeddings (one batched pass)."""
    texts, owner = [], []
    for i, (caps, rid) in enumerate(zip(records["captions"], records["record_id"])):
        _first_caption(caps, rid)  # raises on a record without references
        texts += [str(c) for c in caps]
        owner += [i] * len(caps)
    emb = torch.nn.functional.normalize(enc.texts(texts), dim=1)
    owner_t = torch.tensor(owner)
    sums = torch.zeros(len(records), emb.shape[1]).index_add_(0, owner_t, emb)
    counts = torch.bincount(owner_t, minlength=len(records)).unsqueeze(1).to(emb.dtype)
    return sums / counts
