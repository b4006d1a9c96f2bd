"""Frozen torchvision backbones as image-feature extractors, and the cached feature table.

A spec (config ``features.<name>``) names a backbone, its weights, the stages to tap and how to
pool them. Grid pooling (``grid`` > 1) keeps a coarse spatial layout in the vector, which the
synthetic scenes need ("a red circle on the left"). The same module serves end-to-end encoders.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from m4i.io import M4IError
from m4i.records import positions
from m4i.names import BACKBONES, RESNET_TAPS, VGG_TAPS
from m4i.progress import Progress

log = logging.getLogger("m4i.features")

# Taps in forward order (m4i.names). VGG: output of each max-pool stage, then the two hidden fc layers.
DEFAULT_LAYERS = {"resnet": ["layer4"], "vgg16": ["fc7"]}

# ImageNet statistics: what pretrained weights expect; harmless for random init (BN recalibrated).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

SPEC_DEFAULTS = {"weights": "none", "grid": 1, "input_size": 224, "bn_recalibrate": False, "batch_size": 64,
                 "pretrain": None}


def normalize_spec(spec: dict, what: str = "features spec") -> dict:
    """Spec with defaults filled in and checked; raises M4IError naming the bad key."""
    if not isinstance(spec, dict):
        raise M4IError(f"{what}: expected a mapping, got {type(spec).__name__}")
    out = {**SPEC_DEFAULTS, **spec}
    name = out.get("backbone")
    if name not in BACKBONES:
        raise M4IError(f"{what}: backbone {name!r} unknown; known: {list(BACKBONES)}")
    taps = VGG_TAPS if name == "vgg16" else RESNET_TAPS
    if out.get("layers") is None:
        out["layers"] = list(DEFAULT_LAYERS["vgg16" if name == "vgg16" else "resnet"])
    layers = out["layers"]
    if not isinstance(layers, list) or not layers or any(layer not in taps for layer in layers):
        raise M4IError(f"{what}: layers {layers!r} invalid for {name}; choose from {list(taps)}")
    if len(set(layers)) != len(layers):
        raise M4IError(f"{what}: layers {layers!r} repeat a stage")
    out["layers"] = sorted(layers, key=taps.index)  # forward order, so a tap list is canonical
    for key, lo in (("grid", 1), ("input_size", 16), ("batch_size", 1)):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < lo:
            raise M4IError(f"{what}: {key} must be an integer >= {lo}, got {out[key]!r}")
    if not isinstance(out["weights"], str) or not out["weights"]:
        raise M4IError(f"{what}: weights must be 'none', 'imagenet' or a state_dict path, got {out['weights']!r}")
    return out


def _load_weights(net: nn.Module, name: str, weights: str) -> None:
    if weights == "none":
        return
    if weights == "imagenet":
        import torchvision

        try:  # needs the internet or a filled torch hub cache; a login-node rule downloads it
            enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1
            state = enum.get_state_dict(progress=False)
        except Exception as exc:  # noqa: BLE001 - any download failure is the same user problem
            raise M4IError(
                f"backbone {name}: could not fetch ImageNet weights ({type(exc).__name__}: {exc}); "
                f"offline, download them elsewhere and set weights to the local state_dict path"
            ) from exc
    else:
        path = Path(os.path.expanduser(weights))
        if not path.is_file():
            raise M4IError(f"backbone {name}: weights file {weights!r} not found (use 'none', 'imagenet' or a path)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise M4IError(f"backbone {name}: cannot load weights file {weights!r} ({exc})") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise M4IError(f"backbone {name}: weights {weights!r} do not fit the architecture ({exc})") from exc


def torchvision_net(spec: dict, seed: int) -> nn.Module:
    """The spec's whole torchvision model: seeded random init, then its ``weights`` loaded."""
    import torchvision

    spec = normalize_spec(spec)
    # Random init draws from a forked RNG: the backbone depends on `seed` only, and the
    # caller's global RNG stream is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = getattr(torchvision.models, spec["backbone"])(weights=None)
    _load_weights(net, spec["backbone"], spec["weights"])
    return net


class FeatureNet(nn.Module):
    """Backbone trunk up to the last tapped stage -> [B, D] (each tap grid-pooled and flattened)."""

    def __init__(self, spec: dict, seed: int, net: nn.Module | None = None):
        super().__init__()
        spec = normalize_spec(spec)
        self.spec = spec
        self.grid = spec["grid"]
        self.layers = list(spec["layers"])
        # The stages are the modules of `net` itself (shared, not copied), so training this
        # trunk trains `net`, whose full state_dict is then a loadable torchvision checkpoint.
        net = torchvision_net(spec, seed) if net is None else net
        if spec["backbone"] == "vgg16":
            stages = _vgg_stages(net)
        else:
            names = ["conv1", "bn1", "relu", "maxpool", *RESNET_TAPS]
            stages = [(n, getattr(net, n)) for n in names]
        last = max(i for i, (n, _) in enumerate(stages) if n in self.layers)
        # Only the stages up to the deepest tap are kept: less compute, smaller checkpoints.
        self.stages = nn.ModuleDict(stages[: last + 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for name, module in self.stages.items():
            x = module(x)
            if name in self.layers:
                outs.append(x.flatten(1) if x.dim() == 2 else F.adaptive_avg_pool2d(x, self.grid).flatten(1))
        return torch.cat(outs, dim=1)


class _Flatten7(nn.Module):
    """VGG's 7x7 adaptive pool + flatten, the input of its classifier."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        return torch.flatten(self.pool(x), 1)


def _vgg_stages(net) -> list[tuple[str, nn.Module]]:
    stages, start, k = [], 0, 0
    for i, layer in enumerate(net.features):
        if isinstance(layer, nn.MaxPool2d):
            k += 1
            stages.append((f"pool{k}", nn.Sequential(*net.features[start : i + 1])))
            start = i + 1
    c = net.classifier  # Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    stages.append(("fc6", nn.Sequential(_Flatten7(net.avgpool), c[0], c[1], c[2])))
    stages.append(("fc7", nn.Sequential(c[3], c[4], c[5])))
    return stages


def build_backbone(spec: dict, seed: int) -> FeatureNet:
    """The spec's backbone as a module mapping normalised images [B,3,S,S] to features [B,D]."""
    return FeatureNet(spec, seed)


def feature_dim(net: FeatureNet) -> int:
    """Output width D for the net's spec (one dummy forward, no grad, eval mode)."""
    size = net.spec["input_size"]
    was = net.training
    net.eval()
    with torch.no_grad():
        d = net(torch.zeros(1, 3, size, size)).shape[1]
    net.train(was)
    return int(d)


def image_tensor(img, size: int) -> torch.Tensor:
    """PIL RGB image -> normalised FloatTensor [3, size, size] (bilinear resize, ImageNet stats)."""
    from torchvision.transforms import functional as TF

    img = img.resize((size, size), resample=2)  # 2 = PIL bilinear; deterministic
    return TF.normalize(TF.to_tensor(img), MEAN, STD)


def load_images(records: pd.DataFrame, root, size: int) -> torch.Tensor:
    """All record images as one normalised tensor [N, 3, size, size], in record order."""
    from m4i.data.images import load_image

    if len(records) == 0:
        return torch.zeros(0, 3, size, size)
    return torch.stack([image_tensor(load_image(root, rel), size) for rel in records["image"]])


def image_batches(records: pd.DataFrame, root, size: int, batch_size: int):
    """Yield normalised image tensors [<=batch_size, 3, size, size] in record order.

    Streaming keeps memory flat for real datasets (120k COCO images would not fit at once).
    """
    for i in range(0, len(records), batch_size):
        yield load_images(records.iloc[i : i + batch_size], root, size)


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, batches) -> int:
    """Recompute BN running statistics on an iterable of image batches (cumulative average).

    A randomly initialised net has mean 0 / var 1 running statistics that do not describe its
    real activations, which then blow up layer after layer in eval mode. Returns the count of
    recalibrated BN layers; the net is left in eval mode.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    net.eval()
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative moving average: every batch counts equally
        m.train()
    for chunk in batches:
        if len(chunk) > 1:  # train-mode BN cannot normalise a single sample
            net(chunk)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()
    return len(bns)


def extract_features(manifest: pd.DataFrame, root, spec: dict, seed: int) -> dict:
    """Features of every manifest image under a frozen backbone.

    Returns ``{"record_ids": [str], "features": FloatTensor[N, D], "spec": spec}`` (the spec with
    defaults filled in), rows in manifest order. With ``bn_recalibrate`` the BN statistics are
    first recomputed on all manifest images (unlabelled, split-agnostic). Deterministic per seed.
    """
    spec = normalize_spec(spec)
    if len(manifest) == 0:
        raise M4IError("extract_features: the manifest has no records")
    ids = [str(r) for r in manifest["record_id"]]
    if len(set(ids)) != len(ids):
        raise M4IError("extract_features: the manifest repeats record ids")
    device = torch.device(spec.get("device") or "cpu")  # the workflow script adds config `device`
    net = build_backbone(spec, seed).to(device)
    size, bs = spec["input_size"], spec["batch_size"]
    chunks = math.ceil(len(manifest) / bs)
    if spec["bn_recalibrate"]:
        progress = Progress(f"features {spec['backbone']} BN statistics", chunks, unit="chunk", logger=log,
                            min_interval_s=2.0)
        recalibrate_batchnorm(net, _counted((x.to(device) for x in image_batches(manifest, root, size, bs)), progress))
    net.eval()
    progress = Progress(f"features {spec['backbone']}", chunks, unit="chunk", logger=log, min_interval_s=2.0)
    with torch.no_grad():
        feats = torch.cat([net(x.to(device)).cpu()
                           for x in _counted(image_batches(manifest, root, size, bs), progress)])
    return {"record_ids": ids, "features": feats.float().contiguous(), "spec": spec}


def _counted(chunks, progress: Progress):
    """Yield ``chunks``, logging progress after each one has been used."""
    for i, chunk in enumerate(chunks, 1):
        yield chunk
        progress.update(i)


def merge_feature_caches(caches: list[dict]) -> dict | None:
    """One cache over several datasets' caches of the same extractor (None for no caches)."""
    caches = [c for c in caches if c is not None]
    if not caches:
        return None
    if len(caches) == 1:
        return caches[0]
    specs = {repr(sorted((k, v) for k, v in c["spec"].items() if k != "weights")) for c in caches}
    if len(specs) != 1:
        raise M4IError("feature caches to merge come from different extractor settings")
    ids = [r for c in caches for r in c["record_ids"]]
    if len(set(ids)) != len(ids):
        raise M4IError("feature caches to merge share record ids")
    return {"record_ids": ids, "features": torch.cat([c["features"] for c in caches]), "spec": caches[0]["spec"]}


def load_features(paths) -> dict | None:
    """The feature caches at ``paths`` (one per dataset a job's records come from), merged."""
    from m4i.io import load_torch

    return merge_feature_caches([load_torch(p) for p in paths])


def lookup_features(features: dict, record_ids: list[str]) -> torch.Tensor:
    """Rows of a feature cache for ``record_ids``; raises naming the first missing record."""
    if not isinstance(features, dict) or "record_ids" not in features or "features" not in features:
        raise M4IError("feature cache must be a dict with 'record_ids' and 'features'")
    pos = positions(features["record_ids"], record_ids, "feature lookup", "the feature cache (it lacks them)")
    return features["features"][torch.as_tensor(pos, dtype=torch.long)]
