"""Training captioners, resumably and reproducibly.

Every epoch's batch order comes from ``derive_seed(seed, "batches", epoch)`` and its dropout
stream from ``derive_seed(seed, "epoch", epoch)``, so an epoch does not depend on how the run
got there: a run interrupted after any epoch and resumed from the saved state (weights,
optimizer, RNG states) ends with the same weights as an uninterrupted one on the CPU.

Training pairs: every caption of every record, each epoch (the paper's choice: 5 pairs/image),
or with ``train.captions_per_image: k`` a seeded sample of k captions per image per epoch.
"""
from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from m4i.io import M4IError, load_torch, save_torch, sha256_json
from m4i.models.inputs import InputSource, check_records
from m4i.seeding import derive_seed
from m4i.text import Vocab

KINDS = ("show_tell", "vit_gpt2")
TRAIN_DEFAULTS = {
    "epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": 1e-3, "momentum": 0.0,
    "weight_decay": 0.0, "length_grouped": True, "image_grouped": False, "grad_clip": None, "captions_per_image": None,
}
LOSS_COLUMNS = ["epoch", "train_loss", "seconds"]


# --- building and loading ----------------------------------------------------------------------
def make_vocab(tokens: list[str]) -> Vocab:
    try:
        return Vocab(list(tokens))
    except (ValueError, TypeError) as exc:
        raise M4IError(f"vocabulary: {exc}") from exc


def uses_features(arch: dict) -> bool:
    return arch.get("kind") == "show_tell" and "features" in (arch.get("encoder") or {})


def build_captioner(arch: dict, vocab: Vocab, feature_dim: int | None, seed: int, model_config: dict | None = None):
    """A freshly initialised captioner for ``arch`` (weights drawn from ``seed``)."""
    kind = arch.get("kind")
    if kind not in KINDS:
        raise M4IError(f"captioner kind {kind!r} unknown; known: {list(KINDS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        if kind == "show_tell":
            from m4i.models.show_tell import ShowTell

            return ShowTell(arch, len(vocab), feature_dim, derive_seed(seed, "backbone"))
        from m4i.models.vit_gpt2 import VitGpt2

        ids = {"start": vocab.start, "end": vocab.end, "pad": vocab.pad}
        return VitGpt2(arch, len(vocab), ids, derive_seed(seed, "init"), model_config=model_config)


def input_source(model, arch: dict, records: pd.DataFrame, root, features: dict | None) -> InputSource:
    """The encoder inputs ``model`` reads for ``records``."""
    if uses_features(arch):
        if features is None:
            raise M4IError(f"captioner encoder reads features {arch['encoder']['features']!r}: pass the feature cache")
        return InputSource(records, root, features=features)
    if arch["kind"] == "show_tell":
        return InputSource(records, root, image_size=model.backbone.spec["input_size"])
    return InputSource(records, root, image_size=model.image_size)


def load_captioner(checkpoint: dict):
    """(model in eval mode, Vocab) from a checkpoint dict written by ``train_captioner``."""
    missing = [k for k in ("state_dict", "arch", "vocab", "vocab_sha256", "seed") if k not in checkpoint]
    if missing:
        raise M4IError(f"captioner checkpoint lacks {missing}")
    if sha256_json(list(checkpoint["vocab"])) != checkpoint["vocab_sha256"]:
        raise M4IError("captioner checkpoint: vocabulary does not match its vocab_sha256")
    vocab = make_vocab(checkpoint["vocab"])
    arch = copy.deepcopy(checkpoint["arch"])
    state = checkpoint["state_dict"]
    if arch.get("kind") == "show_tell" and "backbone" in arch.get("encoder", {}):
        arch["encoder"]["weights"] = "none"  # the state dict carries the weights: never download
    feature_dim = state["proj.weight"].shape[1] if uses_features(arch) else None
    model = build_captioner(arch, vocab, feature_dim, int(checkpoint["seed"]), checkpoint.get("model_config"))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise M4IError(f"captioner checkpoint: weights do not fit its arch ({exc})") from exc
    return model.eval(), vocab


# --- batching ----------------------------------------------------------------------------------
def train_settings(arch: dict) -> dict:
    out = {**TRAIN_DEFAULTS, **(arch.get("train") or {})}
    for key in ("epochs", "batch_size"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < (0 if key == "epochs" else 1):
            raise M4IError(f"arch.train.{key} must be a non-negative integer, got {out[key]!r}")
    cpi = out["captions_per_image"]
    if cpi is not None and (not isinstance(cpi, int) or isinstance(cpi, bool) or cpi < 1):
        raise M4IError(f"arch.train.captions_per_image must be a positive integer or null, got {cpi!r}")
    if out["optimizer"] not in ("adam", "adamw", "sgd"):
        raise M4IError(f"arch.train.optimizer must be adam, adamw or sgd, got {out['optimizer']!r}")
    return out


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


def image_batches(pair_rec: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
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
    return _merge_lone_pairs(batches)


def _merge_lone_pairs(batches: list[np.ndarray]) -> list[np.ndarray]:
    """Join every one-pair batch to its predecessor (the first to its successor)."""
    out: list[np.ndarray] = []
    for b in batches:
        if out and (len(b) == 1 or len(out[-1]) == 1):
            out[-1] = np.concatenate([out[-1], b])
        else:
            out.append(b)
    return out


def pad_tokens(seqs: list[list[int]], pad: int) -> torch.Tensor:
    out = torch.full((len(seqs), max(map(len, seqs))), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def caption_loss(logits: torch.Tensor, tokens: torch.Tensor, pad: int) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over non-pad target tokens, and their count."""
    target = tokens[:, 1 : logits.shape[1] + 1]
    n = int((target != pad).sum())
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=pad)
    return loss, n


def make_optimizer(params, train: dict):
    lr, wd = float(train["lr"]), float(train["weight_decay"])
    if train["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(train["momentum"]), weight_decay=wd)
    if train["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


# --- resume state --------------------------------------------------------------------------------
def rng_state() -> dict:
    """Python, numpy and torch RNG states as weights_only-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def settings_hash(arch: dict, vocab_tokens: list[str], seed: int, records: pd.DataFrame, features: dict | None) -> str:
    """What a resume state must match. ``train.epochs`` is left out: a longer run may continue."""
    arch_ = copy.deepcopy(arch)
    arch_.get("train", {}).pop("epochs", None)
    feats = None
    if features is not None:
        feats = {"spec": features.get("spec"), "shape": list(features["features"].shape)}
    data = [[str(r), list(c)] for r, c in zip(records["record_id"], records["captions"])]
    return sha256_json({"arch": arch_, "vocab": sha256_json(list(vocab_tokens)), "seed": int(seed),
                        "records": sha256_json(data), "features": feats})


def _read_resume(resume_path, settings: str) -> dict | None:
    if resume_path is None or not Path(resume_path).is_file():
        return None
    try:
        state = load_torch(resume_path)
    except Exception:  # noqa: BLE001 - a corrupt resume file is just ignored: start afresh
        return None
    if not isinstance(state, dict) or state.get("settings_sha256") != settings:
        return None
    return state


def _after_epoch(epoch: int) -> None:
    """Hook called once an epoch's resume state is on disk (tests interrupt a run here)."""


# --- training ------------------------------------------------------------------------------------
def _check_arch_json(arch: dict) -> None:
    try:
        sha256_json(arch)
    except (TypeError, ValueError) as exc:
        raise M4IError(f"arch must hold only JSON values (it goes into the checkpoint): {exc}") from exc


def train_captioner(arch: dict, records: pd.DataFrame, root, features: dict | None, vocab_tokens: list[str],
                    seed: int, out_path, resume_path, device: str = "cpu") -> pd.DataFrame:
    """Train a captioner on all captions of ``records``; write the checkpoint to ``out_path``.

    Returns the loss table (epoch, train_loss = token-weighted mean cross-entropy, seconds).
    After every epoch the resume state goes to ``resume_path`` (atomically); a matching one is
    continued on start.
    """
    _check_arch_json(arch)
    check_records(records, "training records")
    records = records.reset_index(drop=True)
    vocab = make_vocab(vocab_tokens)
    train = train_settings(arch)
    feature_dim = None
    if uses_features(arch):
        if features is None:
            raise M4IError(f"captioner encoder reads features {arch['encoder']['features']!r}: pass the feature cache")
        feature_dim = int(features["features"].shape[1])
    model = build_captioner(arch, vocab, feature_dim, seed)
    source = input_source(model, arch, records, root, features)
    pair_rec, pair_ids = [], []
    for i, caps in enumerate(records["captions"]):
        for c in caps:
            pair_rec.append(i)
            pair_ids.append(vocab.encode(c))
    if len(pair_ids) < 2:
        raise M4IError("training records hold fewer than two captions")
    lengths = np.array([len(s) for s in pair_ids])
    pair_rec = np.array(pair_rec)

    enc = arch.get("encoder") or {}
    if arch["kind"] == "show_tell" and model.backbone is not None and enc.get("bn_recalibrate"):
        from m4i.models.features import recalibrate_batchnorm

        bs = model.backbone.spec["batch_size"]
        recalibrate_batchnorm(model.backbone, (source.take(range(i, min(i + bs, len(source))))
                                               for i in range(0, len(source), bs)))
    model.to(device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], train)
    settings = settings_hash(arch, vocab_tokens, seed, records, features)
    rows, start_epoch = [], 0
    resumed = _read_resume(resume_path, settings)
    if resumed is not None and resumed["epoch"] <= train["epochs"]:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        set_rng_state(resumed["rng"])
        rows, start_epoch = list(resumed["loss_rows"]), int(resumed["epoch"])

    for epoch in range(start_epoch + 1, train["epochs"] + 1):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(seed, "epoch", epoch))  # dropout stream of this epoch
        model.train()
        total, count = 0.0, 0
        active = epoch_pairs(pair_rec, train["captions_per_image"], seed, epoch)
        if train["image_grouped"]:
            subs = image_batches(pair_rec[active], train["batch_size"], seed, epoch)
        else:
            subs = epoch_batches(lengths[active], train["batch_size"], bool(train["length_grouped"]), seed, epoch)
        for sub in subs:
            batch = active[sub]
            tokens = pad_tokens([pair_ids[j] for j in batch], vocab.pad).to(device)
            if getattr(model, "shares_images", False):  # encode each distinct image once
                recs, inverse = np.unique(pair_rec[batch], return_inverse=True)
                logits = model(source.take(recs).to(device), tokens, torch.as_tensor(inverse).to(device))
            else:
                logits = model(source.take(pair_rec[batch]).to(device), tokens)
            loss, n = caption_loss(logits, tokens, vocab.pad)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(train["grad_clip"]))
            optimizer.step()
            total += loss.item() * n
            count += n
        rows.append({"epoch": epoch, "train_loss": total / max(count, 1), "seconds": time.perf_counter() - t0})
        if resume_path is not None:
            save_torch({"settings_sha256": settings, "epoch": epoch, "model": _cpu_state(model),
                        "optimizer": optimizer.state_dict(), "rng": rng_state(), "loss_rows": rows}, resume_path)
        _after_epoch(epoch)

    checkpoint = {"state_dict": _cpu_state(model), "arch": copy.deepcopy(arch), "vocab": list(vocab.tokens),
                  "vocab_sha256": sha256_json(list(vocab.tokens)), "epoch": rows[-1]["epoch"] if rows else 0,
                  "seed": int(seed)}
    if arch["kind"] == "vit_gpt2":
        checkpoint["model_config"] = model.model_config()
    save_torch(checkpoint, out_path)
    if resume_path is not None:  # the final checkpoint supersedes it; a stale one must not linger
        Path(resume_path).unlink(missing_ok=True)
    return pd.DataFrame(rows, columns=LOSS_COLUMNS)


def _cpu_state(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
