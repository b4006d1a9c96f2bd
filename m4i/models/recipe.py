"""The pluggable pieces of captioner training: what a defense replaces instead of editing the loop.

``m4i.models.train.train_captioner`` runs one fixed loop: for each epoch, for each batch of
(image, caption) pairs that the *sampler* yields, a teacher-forced forward pass, the
*objective*'s loss and the *updater*'s step; after each epoch the *stopper* may end training.
A defense that needs another architecture (e.g. DP-compatible modules) says so in the
captioner's ``arch`` settings, which the checkpoint stores, so that loading rebuilds the same
modules without the defense's code. A training-side defense is a different piece:

=========  =================================================  ===================================
piece      default                                            a defense could be
=========  =================================================  ===================================
sampler    length-grouped (or image-grouped) seeded batches   Poisson sampling of images (DP-SGD)
objective  token cross-entropy                                RelaxLoss
updater    optimizer step (optional gradient-norm clipping)   per-image clipping + noise (opacus)
stopper    train every epoch                                  early stopping on a validation split
=========  =================================================  ===================================

An updater with ``per_sample = True`` receives one loss per *row* (caption) plus the image of
each row, so it can form per-image gradients; the default updater receives the batch loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from m4i.io import M4IError
from m4i.models.batching import epoch_batches, epoch_pairs, image_grouped_batches
from m4i.names import OPTIMIZERS


# ------------------------------------------------------------------------------------- samplers
class GroupedSampler:
    """The default sampler: every epoch's pairs (all captions, or k sampled per image), cut into
    length-grouped batches, or into batches of whole images when the encoder is costly per image."""

    def __init__(self, pair_rec: np.ndarray, lengths: np.ndarray, train: dict, seed: int):
        self.pair_rec, self.lengths, self.train, self.seed = pair_rec, lengths, train, seed

    def __call__(self, epoch: int) -> list[np.ndarray]:
        active = epoch_pairs(self.pair_rec, self.train["captions_per_image"], self.seed, epoch)
        if self.train["image_grouped"]:
            subs = image_grouped_batches(self.pair_rec[active], self.train["batch_size"], self.seed, epoch)
        else:
            subs = epoch_batches(self.lengths[active], self.train["batch_size"], bool(self.train["length_grouped"]),
                                 self.seed, epoch)
        return [active[sub] for sub in subs]


# ----------------------------------------------------------------------------------- objectives
def _targets(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return tokens[:, 1 : logits.shape[1] + 1]


class CrossEntropy:
    """Token cross-entropy: the batch mean over non-pad target tokens (default training), or the
    mean per row (caption) for per-sample updaters."""

    def batch_loss(self, logits, tokens, pad: int, epoch: int) -> tuple[torch.Tensor, float, int]:
        """(loss to minimise, summed token cross-entropy for the log, token count)."""
        target = _targets(logits, tokens)
        n = int((target != pad).sum())
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=pad)
        return loss, loss.item() * n, n

    def row_losses(self, logits, tokens, pad: int, epoch: int) -> tuple[torch.Tensor, float, int]:
        """(per-row mean token cross-entropy [B], summed token cross-entropy, token count)."""
        target = _targets(logits, tokens)
        mask = (target != pad).to(logits.dtype)
        ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=pad, reduction="none") * mask
        n_row = mask.sum(1).clamp(min=1.0)
        return ce.sum(1) / n_row, float(ce.sum().item()), int(mask.sum().item())


# ------------------------------------------------------------------------------------- updaters
def make_optimizer(params, train: dict) -> torch.optim.Optimizer:
    if train["optimizer"] not in OPTIMIZERS:
        raise M4IError(f"arch.train.optimizer must be one of {list(OPTIMIZERS)}, got {train['optimizer']!r}")
    lr, wd = float(train["lr"]), float(train["weight_decay"])
    if train["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(train["momentum"]), weight_decay=wd)
    if train["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


class OptimizerStep:
    """The default updater: zero the gradients, backpropagate the batch loss, optionally clip the
    gradient norm, take the optimizer's step."""

    per_sample = False

    def __init__(self, model: nn.Module, train: dict):
        self.model = model
        self.clip = train.get("grad_clip")
        self.optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], train)

    def module(self) -> nn.Module:
        """What the loop calls for the forward pass (a per-sample updater may wrap the model)."""
        return self.model

    def step(self, loss: torch.Tensor, images: np.ndarray | None = None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.clip))
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    def summary(self) -> dict:
        """What the checkpoint records about the updates (e.g. a privacy accountant's epsilon)."""
        return {}


# ------------------------------------------------------------------------------------- stoppers
class TrainAllEpochs:
    """The default stopper: never stops early; the last epoch's weights are the model."""

    def after_epoch(self, epoch: int, model: nn.Module) -> tuple[bool, dict]:
        """(stop now?, extra columns for this epoch's row of the loss table)."""
        return False, {}

    def finish(self, model: nn.Module) -> dict:
        """Restore the chosen weights into ``model``; return what the checkpoint records."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# --------------------------------------------------------------------------------------- recipe
@dataclass
class TrainContext:
    """What a recipe's pieces may need to know about the run they are part of."""

    model: nn.Module
    vocab: object          # m4i.text.Vocab
    arch: dict
    train: dict            # train settings with defaults filled in
    seed: int
    pair_rec: np.ndarray   # record row (image) of each training pair
    lengths: np.ndarray    # token count of each training pair
    n_records: int
    device: str
    # teacher-forced mean token cross-entropy of `records` under the model (for validation)
    eval_loss: Callable | None = None


@dataclass
class Recipe:
    """The pieces of one training run (see the module docstring)."""

    sampler: Callable[[int], list[np.ndarray]]
    objective: object = field(default_factory=CrossEntropy)
    updater: object = None   # built by the recipe factory; default OptimizerStep(model, train)
    stopper: object = field(default_factory=TrainAllEpochs)
    # What distinguishes this recipe from the default (a defense's kind and settings): recorded in
    # the checkpoint and in the resume-state hash (a resume state of another recipe is not used).
    info: dict | None = None


def default_recipe(ctx: TrainContext) -> Recipe:
    return Recipe(sampler=GroupedSampler(ctx.pair_rec, ctx.lengths, ctx.train, ctx.seed),
                  updater=OptimizerStep(ctx.model, ctx.train))
