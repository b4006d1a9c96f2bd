"""The paper's MFE: cached image features -> Linear + BN; bag of words -> MLP + BN; MSE alignment.

As in the original code (MFE_model.py / MFE_train.py of the M^4I repository): the image net is a
linear projection of frozen-backbone features followed by BatchNorm1d, the text net a
bag-of-words MLP (hidden 512, ReLU) followed by BatchNorm1d, both trained with Adam on the
mean-squared error between the two embeddings, updating the nets in alternation while the other
one stays fixed. ``alternate: epoch`` (default) is the original schedule: each epoch, one pass
of image-net steps, then one pass of text-net steps; ``alternate: step`` alternates per batch.

Collapse: MSE alone is minimised by mapping everything to one constant. The batch norms forbid
that, but only if their affine scale cannot shrink to zero, which alternating MSE steps drive it
towards (each side chases a damped copy of the other). So the BNs have no affine parameters by
default (``bn_affine: false``; ``true`` is the original, labelled as such). After training the BN
running statistics are recomputed on the whole combination set (exact, not a momentum average
over the early, different nets).

Embeddings (and ``absdiff``) are the raw BN outputs, not L2-normalised: that is the space the
MSE aligned, where each dimension has unit variance over the combination set.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from m4i.io import M4IError
from m4i.mfe.common import COMMON_DEFAULTS, batched, combination_vocab, normalize_settings, training_pairs
from m4i.models.features import lookup_features, recalibrate_batchnorm
from m4i.models.batching import epoch_batches, epoch_pairs
from m4i.progress import Progress
from m4i.seeding import derive_seed
from m4i.text import Vocab

log = logging.getLogger("m4i.mfe")

KIND = "paper"
DEFAULTS = {
    **COMMON_DEFAULTS,
    "features": None,          # name of the feature cache (read by the workflow; recorded here)
    "embed": 256,
    "text_hidden": 512,
    "captions_per_image": None,  # null = every reference caption of every image, each epoch
    "alternate": "epoch",      # epoch (original code) | step
    "bn_affine": False,        # true = the original code's BN (can collapse, see module doc)
}
ABSDIFF_SPACE = "raw"  # |f_img - f_txt| on unnormalised BN outputs


def normalize(mfe: dict) -> dict:
    out = normalize_settings(mfe, DEFAULTS, "mfe (kind paper)")
    for key in ("embed", "text_hidden"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < 1:
            raise M4IError(f"mfe (kind paper): {key} must be a positive integer, got {out[key]!r}")
    if out["alternate"] not in ("epoch", "step"):
        raise M4IError(f"mfe (kind paper): alternate must be 'epoch' or 'step', got {out['alternate']!r}")
    if not isinstance(out["bn_affine"], bool):
        raise M4IError(f"mfe (kind paper): bn_affine must be true or false, got {out['bn_affine']!r}")
    return out


def build_nets(settings: dict, feature_dim: int, vocab_size: int) -> tuple[nn.Module, nn.Module]:
    """(image net, text net), randomly initialised from torch's current RNG."""
    e, affine = settings["embed"], settings["bn_affine"]
    image = nn.Sequential(nn.Linear(feature_dim, e), nn.BatchNorm1d(e, affine=affine))
    text = nn.Sequential(nn.Linear(vocab_size, settings["text_hidden"]), nn.ReLU(),
                         nn.Linear(settings["text_hidden"], e), nn.BatchNorm1d(e, affine=affine))
    return image, text


def bag_of_words(texts: list[str], vocab: Vocab) -> torch.Tensor:
    """Word counts [N, len(vocab)]; out-of-vocabulary words count as <unk>, specials never."""
    out = torch.zeros(len(texts), len(vocab))
    for i, text in enumerate(texts):
        for j in vocab.encode(text)[1:-1]:  # drop <start> ... <end>
            out[i, j] += 1
    return out


def image_inputs(records: pd.DataFrame, features: dict | None) -> torch.Tensor:
    if features is None:
        raise M4IError("the paper MFE reads cached image features, but no feature cache was given "
                       "(set mfe.<name>.features to a features entry)")
    return lookup_features(features, [str(r) for r in records["record_id"]]).float()


def _step(trained: nn.Module, fixed: nn.Module, opt, x_trained, x_fixed) -> float:
    """One optimizer step on ``trained`` towards the (fixed, no-grad) other side's embedding."""
    trained.train()
    fixed.train()  # batch statistics on both sides, as in the original
    with torch.no_grad():
        target = fixed(x_fixed)
    loss = F.mse_loss(trained(x_trained), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def train(mfe: dict, records: pd.DataFrame, root, features: dict | None, seed: int, device="cpu") -> dict:
    settings = normalize(mfe)
    pair_rec, texts = training_pairs(records, "paper MFE combination set")
    if len(records) < 2:
        raise M4IError("paper MFE: the combination set needs at least 2 records (batch norm)")
    device = torch.device(device)
    x = image_inputs(records, features).to(device)
    vocab = Vocab(combination_vocab(texts, settings["min_count"]))
    bow = bag_of_words(texts, vocab).to(device)
    torch.manual_seed(derive_seed(seed, "mfe", "init"))
    image, text = (m.to(device) for m in build_nets(settings, x.shape[1], len(vocab)))
    opts = [torch.optim.Adam(m.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
            for m in (image, text)]
    bs = settings["batch_size"]
    loss_image, loss_text = [], []
    progress = Progress("train paper MFE", settings["epochs"], logger=log)
    for epoch in range(settings["epochs"]):
        pairs = epoch_pairs(pair_rec, settings["captions_per_image"], seed, epoch)

        def batches(tag):  # seeded shuffle of this epoch's pairs; a lone last pair joins its neighbour
            order = epoch_batches(np.zeros(len(pairs)), bs, False, derive_seed(seed, tag), epoch)
            return [torch.as_tensor(pairs[b]) for b in order]

        li, lt = [], []
        if settings["alternate"] == "epoch":
            for p in batches("image"):
                li.append(_step(image, text, opts[0], x[pair_rec[p]], bow[p]))
            for p in batches("text"):
                lt.append(_step(text, image, opts[1], bow[p], x[pair_rec[p]]))
        else:
            for p in batches("image"):
                li.append(_step(image, text, opts[0], x[pair_rec[p]], bow[p]))
                lt.append(_step(text, image, opts[1], bow[p], x[pair_rec[p]]))
        loss_image.append(float(np.mean(li)))
        loss_text.append(float(np.mean(lt)))
        progress.update(epoch + 1, loss_image=loss_image[-1], loss_text=loss_text[-1])
    # Exact BN statistics of the final nets over the whole combination set.
    recalibrate_batchnorm(image, (x[i : i + 256] for i in range(0, len(x), 256)))
    recalibrate_batchnorm(text, (bow[i : i + 256] for i in range(0, len(bow), 256)))
    return {
        "kind": KIND,
        "settings": settings,
        "seed": int(seed),
        "vocab": vocab.tokens,
        "feature_dim": int(x.shape[1]),
        "features_spec": dict(features.get("spec") or {}),
        "embed_dim": settings["embed"],
        "absdiff_space": ABSDIFF_SPACE,
        "state_dict": {"image": _cpu(image.state_dict()), "text": _cpu(text.state_dict())},
        "loss": [(a + b) / 2 for a, b in zip(loss_image, loss_text)],
        "loss_image": loss_image,
        "loss_text": loss_text,
    }


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


class Encoder:
    """Eval-mode image and text embeddings of a trained paper MFE checkpoint."""

    absdiff_space = ABSDIFF_SPACE

    def __init__(self, checkpoint: dict, device="cpu"):
        self.device = torch.device(device)
        self.settings = checkpoint["settings"]
        self.vocab = Vocab(list(checkpoint["vocab"]))
        self.feature_dim = int(checkpoint["feature_dim"])
        self.image, self.text = build_nets(self.settings, self.feature_dim, len(self.vocab))
        self.image.load_state_dict(checkpoint["state_dict"]["image"])
        self.text.load_state_dict(checkpoint["state_dict"]["text"])
        self.image.to(self.device).eval()
        self.text.to(self.device).eval()

    @torch.no_grad()
    def images(self, records: pd.DataFrame, root, features: dict | None) -> torch.Tensor:
        x = image_inputs(records, features)
        if x.shape[1] != self.feature_dim:
            spec = (features or {}).get("spec")
            raise M4IError(f"paper MFE was trained on {self.feature_dim}-dim image features, but the "
                           f"feature cache given has {x.shape[1]} (spec {spec})")
        return batched(lambda s: self.image(x[s].to(self.device)).cpu(), len(x))

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        bow = bag_of_words(texts, self.vocab)
        return batched(lambda s: self.text(bow[s].to(self.device)).cpu(), len(bow))
