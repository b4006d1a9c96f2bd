"""Offline stand-in for ImageNet pretraining: a backbone learns to see synthetic scenes.

The paper's captioners sit on ImageNet-pretrained encoders. Offline there are none, and a frozen
random backbone gives features from which a captioner memorises its members but cannot describe
unseen images (measured: held-out BLEU-4 no better than always emitting the most frequent
caption). So a features spec may carry ``pretrain``: the backbone is first trained on its own
synthetic pretraining set (its own seed, both styles, held in memory, never part of any split)
to name each grid cell's colour and shape and the background, and is then frozen like an
ImageNet backbone. Like ImageNet for Flickr8k, the pretraining set is public to the attacker and
disjoint from every member and non-member.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from m4i.data import synthetic
from m4i.io import M4IError
from m4i.models.features import FeatureNet, image_tensor, normalize_spec, torchvision_net
from m4i.progress import Progress

log = logging.getLogger("m4i.pretrain")

PRETRAIN_KEYS = {"n_images", "image_size", "epochs", "batch_size", "lr", "seed"}
VAL_FRACTION = 0.1  # held back to report how well the backbone learned the scenes
# Label sets over both styles; index 0 of the cell labels means "empty cell".
COLOURS = sorted({c for style in synthetic.STYLES for c in synthetic.PALETTES[style]})
BACKGROUNDS = sorted({b for style in synthetic.STYLES for b in synthetic.BACKGROUNDS[style]})
CELLS = synthetic.GRID * synthetic.GRID


def check_pretrain(cfg, what: str = "pretrain") -> dict:
    """The pretraining settings, checked; raises M4IError naming the bad key."""
    if not isinstance(cfg, dict):
        raise M4IError(f"{what}: expected a mapping, got {type(cfg).__name__}")
    missing, extra = PRETRAIN_KEYS - set(cfg), set(cfg) - PRETRAIN_KEYS
    if missing or extra:
        raise M4IError(f"{what}: missing keys {sorted(missing)}, unknown keys {sorted(extra)}")
    for key in ("n_images", "image_size", "epochs", "batch_size"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise M4IError(f"{what}.{key} must be a positive integer, got {cfg[key]!r}")
    if cfg["n_images"] < 20:
        raise M4IError(f"{what}.n_images must be >= 20 (a tenth is held back), got {cfg['n_images']}")
    if isinstance(cfg["lr"], bool) or not isinstance(cfg["lr"], (int, float)) or cfg["lr"] <= 0:
        raise M4IError(f"{what}.lr must be a positive number, got {cfg['lr']!r}")
    return dict(cfg)


def scene_targets(scene: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-cell colour and shape labels (0 = empty cell) and the background label of a scene."""
    colour, shape = np.zeros(CELLS, np.int64), np.zeros(CELLS, np.int64)
    for obj in scene["objects"]:
        cell = obj["row"] * synthetic.GRID + obj["col"]
        colour[cell] = 1 + COLOURS.index(obj["colour"])
        shape[cell] = 1 + synthetic.SHAPES.index(obj["shape"])
    return colour, shape, BACKGROUNDS.index(scene["background"])


def pretraining_set(cfg: dict, input_size: int) -> dict[str, torch.Tensor]:
    """The pretraining images (half per style, the remainder to the first) and their labels.

    Held in memory as one tensor: right for the few thousand small scenes a stand-in needs
    (3,000 at 48 px = 83 MB), not for an ImageNet-sized set.
    """
    images, colours, shapes, backgrounds = [], [], [], []
    half = cfg["n_images"] // len(synthetic.STYLES)
    counts = [cfg["n_images"] - half * (len(synthetic.STYLES) - 1)] + [half] * (len(synthetic.STYLES) - 1)
    for style, n in zip(synthetic.STYLES, counts):
        for scene, pixels in synthetic.scene_images(n, cfg["image_size"], style, cfg["seed"]):
            images.append(image_tensor(Image.fromarray(pixels, mode="RGB"), input_size))
            c, s, b = scene_targets(scene)
            colours.append(c)
            shapes.append(s)
            backgrounds.append(b)
    return {"images": torch.stack(images), "colour": torch.from_numpy(np.stack(colours)),
            "shape": torch.from_numpy(np.stack(shapes)), "background": torch.tensor(backgrounds)}


class SceneHead(nn.Module):
    """Linear read-out of backbone features: colour and shape per cell, and the background."""

    def __init__(self, dim: int):
        super().__init__()
        self.sizes = (CELLS * (len(COLOURS) + 1), CELLS * (len(synthetic.SHAPES) + 1), len(BACKGROUNDS))
        self.linear = nn.Linear(dim, sum(self.sizes))

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        colour, shape, background = self.linear(feats).split(self.sizes, dim=1)
        # [B, classes, cells]: the layout cross_entropy expects for per-cell targets
        return {"colour": colour.reshape(len(feats), CELLS, -1).transpose(1, 2),
                "shape": shape.reshape(len(feats), CELLS, -1).transpose(1, 2),
                "background": background}


def _loss(logits: dict, batch: dict) -> torch.Tensor:
    return sum(F.cross_entropy(logits[k], batch[k]) for k in ("colour", "shape", "background"))


def _batches(order: torch.Tensor, size: int):
    """Consecutive index batches of ``order``; a last batch of one is dropped (train-mode batch
    norm cannot normalise a single sample)."""
    return [b for b in order.split(size) if len(b) >= 2]


def pretrain_backbone(spec: dict, cfg: dict, device: str = "cpu") -> tuple[dict, pd.DataFrame]:
    """Train the spec's backbone trunk on the scene task from its ``weights``.

    Returns the whole torchvision model's state_dict (a checkpoint ``weights`` can name, stages
    past the deepest tap left at their seeded init) and a per-epoch table of training loss and
    held-out accuracies. Deterministic per ``cfg['seed']`` on CPU; the caller's RNG is untouched.
    """
    spec = normalize_spec(spec)
    cfg = check_pretrain(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        return _pretrain(spec, cfg, device)


def _pretrain(spec: dict, cfg: dict, device: str) -> tuple[dict, pd.DataFrame]:
    data = pretraining_set(cfg, spec["input_size"])
    n_val = max(1, int(round(VAL_FRACTION * len(data["images"]))))
    order = torch.randperm(len(data["images"]))
    val, train = order[:n_val], order[n_val:]
    net = torchvision_net(spec, cfg["seed"])
    trunk = FeatureNet(spec, cfg["seed"], net=net).to(device)
    with torch.no_grad():
        dim = trunk.eval()(data["images"][:2].to(device)).shape[1]
    head = SceneHead(dim).to(device)
    opt = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=cfg["lr"])
    # Cosine decay to zero: a from-scratch trunk at a fixed Adam lr keeps oscillating (measured).
    steps = cfg["epochs"] * len(_batches(train, cfg["batch_size"]))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    rows = []
    progress = Progress(f"pretrain {spec['backbone']}", cfg["epochs"], logger=log)
    log.info("pretraining %s on %d scenes (%d held out), %d epochs of %d batches", spec["backbone"],
             len(data["images"]), n_val, cfg["epochs"], len(_batches(train, cfg["batch_size"])))
    for epoch in range(cfg["epochs"]):
        trunk.train()
        head.train()
        total, seen = 0.0, 0
        for idx in _batches(train[torch.randperm(len(train))], cfg["batch_size"]):
            batch = {k: v[idx].to(device) for k, v in data.items()}
            loss = _loss(head(trunk(batch["images"])), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        if not np.isfinite(total):
            raise M4IError(f"pretraining diverged in epoch {epoch + 1} (train loss {total}); lower pretrain.lr")
        rows.append({"epoch": epoch + 1, "train_loss": total / seen, **_accuracy(trunk, head, data, val, device)})
        progress.update(epoch + 1, loss=rows[-1]["train_loss"],
                        **{k: v for k, v in rows[-1].items() if k.startswith("val_")})
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return state, pd.DataFrame(rows)


@torch.no_grad()
def _accuracy(trunk, head, data, idx, device) -> dict:
    trunk.eval()
    head.eval()
    logits = head(trunk(data["images"][idx].to(device)))
    return {f"val_{k}_acc": (logits[k].argmax(1).cpu() == data[k][idx]).float().mean().item()
            for k in ("colour", "shape", "background")}
