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
import logging
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from m4i.io import M4IError, load_torch, save_torch, sha256_json
from m4i.models.batching import pad_tokens
from m4i.models.inputs import InputSource, check_records
from m4i.models.recipe import Recipe, TrainContext, default_recipe
from m4i.names import CAPTIONER_KINDS, OPTIMIZERS
from m4i.progress import Progress
from m4i.seeding import derive_seed
from m4i.text import Vocab

log = logging.getLogger("m4i.train")
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
    if kind not in CAPTIONER_KINDS:
        raise M4IError(f"captioner kind {kind!r} unknown; known: {list(CAPTIONER_KINDS)}")
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


# --- settings ----------------------------------------------------------------------------------
def train_settings(arch: dict) -> dict:
    out = {**TRAIN_DEFAULTS, **(arch.get("train") or {})}
    for key in ("epochs", "batch_size"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < (0 if key == "epochs" else 1):
            raise M4IError(f"arch.train.{key} must be a non-negative integer, got {out[key]!r}")
    cpi = out["captions_per_image"]
    if cpi is not None and (not isinstance(cpi, int) or isinstance(cpi, bool) or cpi < 1):
        raise M4IError(f"arch.train.captions_per_image must be a positive integer or null, got {cpi!r}")
    if out["optimizer"] not in OPTIMIZERS:
        raise M4IError(f"arch.train.optimizer must be one of {list(OPTIMIZERS)}, got {out['optimizer']!r}")
    return out


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


def settings_hash(arch: dict, vocab_tokens: list[str], seed: int, records: pd.DataFrame, features: dict | None,
                  recipe_info: dict | None = None) -> str:
    """What a resume state must match. ``train.epochs`` is left out: a longer run may continue."""
    arch_ = copy.deepcopy(arch)
    arch_.get("train", {}).pop("epochs", None)
    feats = None
    if features is not None:
        feats = {"spec": features.get("spec"), "shape": list(features["features"].shape)}
    data = [[str(r), list(c)] for r, c in zip(records["record_id"], records["captions"])]
    doc = {"arch": arch_, "vocab": sha256_json(list(vocab_tokens)), "seed": int(seed),
           "records": sha256_json(data), "features": feats}
    if recipe_info is not None:  # absent for the default recipe: older resume states stay valid
        doc["recipe"] = recipe_info
    return sha256_json(doc)


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


def teacher_forced_loss(model, source: InputSource, token_ids: list[list[int]], pair_rec: np.ndarray, pad: int,
                        device: str, batch_size: int = 256) -> float:
    """Mean token cross-entropy of the given (image row, caption ids) pairs under ``model`` in eval
    mode, token-weighted over all pairs; no gradients. Used for validation losses."""
    from m4i.models.recipe import CrossEntropy

    was = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(token_ids), batch_size):
            rows = np.arange(i, min(i + batch_size, len(token_ids)))
            tokens = pad_tokens([token_ids[j] for j in rows], pad).to(device)
            logits = _forward(model, source, pair_rec[rows], tokens, device)
            _, ce_sum, n = CrossEntropy().batch_loss(logits, tokens, pad, 0)
            total, count = total + ce_sum, count + n
    model.train(was)
    return total / max(count, 1)


def _forward(module, source: InputSource, images: np.ndarray, tokens: torch.Tensor, device: str) -> torch.Tensor:
    """Teacher-forced logits for pairs whose images are rows ``images`` of ``source``."""
    if getattr(module, "shares_images", False):  # encode each distinct image once
        recs, inverse = np.unique(images, return_inverse=True)
        return module(source.take(recs).to(device), tokens, torch.as_tensor(inverse).to(device))
    return module(source.take(images).to(device), tokens)


def caption_pairs(records: pd.DataFrame, vocab: Vocab) -> tuple[np.ndarray, list[list[int]]]:
    """(record row of each pair, token ids of each pair) over every caption of ``records``."""
    pair_rec, pair_ids = [], []
    for i, caps in enumerate(records["captions"]):
        for c in caps:
            pair_rec.append(i)
            pair_ids.append(vocab.encode(c))
    return np.array(pair_rec), pair_ids


def train_captioner(arch: dict, records: pd.DataFrame, root, features: dict | None, vocab_tokens: list[str],
                    seed: int, out_path, resume_path, device: str = "cpu", recipe=None,
                    name: str | None = None) -> pd.DataFrame:
    """Train a captioner on all captions of ``records``; write the checkpoint to ``out_path``.

    ``recipe``: a function ``TrainContext -> Recipe`` giving the sampler, objective, updater and
    stopper (``m4i.models.recipe``; default: length-grouped batches, cross-entropy, the
    configured optimizer, every epoch). Returns the loss table (epoch, train_loss = token-weighted
    mean cross-entropy, seconds, and any columns the stopper adds). After every epoch the resume
    state goes to ``resume_path`` (atomically); a matching one is continued on start.
    """
    _check_arch_json(arch)
    check_records(records, "training records")
    records = records.reset_index(drop=True)
    vocab = make_vocab(vocab_tokens)
    train = train_settings(arch)
    name = name or Path(out_path).stem
    feature_dim = None
    if uses_features(arch):
        if features is None:
            raise M4IError(f"captioner encoder reads features {arch['encoder']['features']!r}: pass the feature cache")
        feature_dim = int(features["features"].shape[1])
    model = build_captioner(arch, vocab, feature_dim, seed)
    source = input_source(model, arch, records, root, features)
    pair_rec, pair_ids = caption_pairs(records, vocab)
    if len(pair_ids) < 2:
        raise M4IError("training records hold fewer than two captions")
    lengths = np.array([len(s) for s in pair_ids])

    enc = arch.get("encoder") or {}
    if arch["kind"] == "show_tell" and model.backbone is not None and enc.get("bn_recalibrate"):
        from m4i.models.features import recalibrate_batchnorm

        bs = model.backbone.spec["batch_size"]
        recalibrate_batchnorm(model.backbone, (source.take(range(i, min(i + bs, len(source))))
                                               for i in range(0, len(source), bs)))
    model.to(device)

    def eval_loss(eval_records: pd.DataFrame) -> float:
        check_records(eval_records, "validation records")
        eval_records = eval_records.reset_index(drop=True)
        rec, ids = caption_pairs(eval_records, vocab)
        return teacher_forced_loss(model, input_source(model, arch, eval_records, root, features), ids, rec,
                                   vocab.pad, device)

    ctx = TrainContext(model=model, vocab=vocab, arch=arch, train=train, seed=int(seed), pair_rec=pair_rec,
                       lengths=lengths, n_records=len(records), device=device, eval_loss=eval_loss)
    plan: Recipe = (recipe or default_recipe)(ctx)
    updater, objective, stopper = plan.updater, plan.objective, plan.stopper
    settings = settings_hash(arch, vocab_tokens, seed, records, features, plan.info)
    rows, start_epoch = [], 0
    resumed = _read_resume(resume_path, settings)
    if resumed is not None and resumed["epoch"] <= train["epochs"]:
        model.load_state_dict(resumed["model"])
        updater.load_state_dict(resumed["optimizer"])
        stopper.load_state_dict(resumed.get("stopper", {}))
        set_rng_state(resumed["rng"])
        rows, start_epoch = list(resumed["loss_rows"]), int(resumed["epoch"])
    progress = Progress(f"train {name}", train["epochs"], unit="epoch", logger=log, start=start_epoch)
    if resumed is not None and start_epoch:
        progress.resumed(start_epoch, str(resume_path))

    forward = updater.module()
    stopped = bool(rows) and bool(rows[-1].get("stopped"))
    for epoch in range(start_epoch + 1, train["epochs"] + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(seed, "epoch", epoch))  # dropout stream of this epoch
        model.train()
        total, count = 0.0, 0
        for batch in plan.sampler(epoch):
            tokens = pad_tokens([pair_ids[j] for j in batch], vocab.pad).to(device)
            logits = _forward(forward, source, pair_rec[batch], tokens, device)
            if updater.per_sample:
                losses, ce_sum, n = objective.row_losses(logits, tokens, vocab.pad, epoch)
                updater.step(losses, pair_rec[batch])
            else:
                loss, ce_sum, n = objective.batch_loss(logits, tokens, vocab.pad, epoch)
                updater.step(loss)
            total += ce_sum
            count += n
        row = {"epoch": epoch, "train_loss": total / max(count, 1), "seconds": time.perf_counter() - t0}
        stop, extra = stopper.after_epoch(epoch, model)
        row.update(extra)
        if stop:
            row["stopped"] = True
            stopped = True
        rows.append(row)
        if resume_path is not None:
            save_torch({"settings_sha256": settings, "epoch": epoch, "model": _cpu_state(model),
                        "optimizer": updater.state_dict(), "stopper": stopper.state_dict(), "rng": rng_state(),
                        "loss_rows": rows}, resume_path)
        progress.update(epoch, loss=row["train_loss"], **{k: v for k, v in extra.items() if isinstance(v, float)})
        _after_epoch(epoch)

    chosen = stopper.finish(model)
    checkpoint = {"state_dict": _cpu_state(model), "arch": copy.deepcopy(arch), "vocab": list(vocab.tokens),
                  "vocab_sha256": sha256_json(list(vocab.tokens)), "epoch": rows[-1]["epoch"] if rows else 0,
                  "seed": int(seed)}
    if plan.info is not None:  # only non-default recipes: default checkpoints keep their keys
        checkpoint["recipe"] = {**plan.info, **updater.summary(), **chosen}
    if arch["kind"] == "vit_gpt2":
        checkpoint["model_config"] = model.model_config()
    save_torch(checkpoint, out_path)
    if resume_path is not None:  # the final checkpoint supersedes it; a stale one must not linger
        Path(resume_path).unlink(missing_ok=True)
    columns = LOSS_COLUMNS + sorted({k for r in rows for k in r} - set(LOSS_COLUMNS))
    return pd.DataFrame(rows, columns=columns)


def _cpu_state(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
