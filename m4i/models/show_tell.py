"""Show-and-Tell (Vinyals et al.) as in the M^4I code: CNN vector -> linear -> BatchNorm1d is the
first LSTM input, then <start> and the caption words (teacher forcing).

One deliberate difference to that code: it also trains the image step to predict <start>;
here the image step only sets the LSTM state and decoding begins by feeding <start>. The
<start> prediction carries no information, so this changes nothing but the loss's constant.
"""
from __future__ import annotations

import torch
from torch import nn

from m4i.io import M4IError
from m4i.models.features import build_backbone, feature_dim, normalize_spec

ENCODER_SPEC_KEYS = ("backbone", "weights", "layers", "grid", "input_size", "bn_recalibrate", "batch_size")
ARCH_DEFAULTS = {"embed": 256, "hidden": 512, "layers": 1, "dropout": 0.0, "bn_momentum": 0.01}


def encoder_spec(encoder: dict) -> dict:
    """The backbone spec of an end-to-end encoder (config ``arch.encoder`` without ``trainable``)."""
    spec = {k: encoder[k] for k in ENCODER_SPEC_KEYS if k in encoder}
    spec.setdefault("input_size", 224)
    return normalize_spec(spec, what="arch.encoder")


def check_arch(arch: dict) -> dict:
    out = {**ARCH_DEFAULTS, **arch}
    enc = out.get("encoder")
    if not isinstance(enc, dict) or (("features" in enc) == ("backbone" in enc)):
        raise M4IError("show_tell arch.encoder must be {features: <name>} or {backbone: ..., trainable: ...}")
    for key in ("embed", "hidden", "layers"):
        if not isinstance(out[key], int) or out[key] < 1:
            raise M4IError(f"show_tell arch.{key} must be a positive integer, got {out[key]!r}")
    if not 0.0 <= float(out["dropout"]) < 1.0:
        raise M4IError(f"show_tell arch.dropout must be in [0, 1), got {out['dropout']!r}")
    return out


class ShowTell(nn.Module):
    """Encoder (cached feature vector or a backbone on images) + LSTM decoder."""

    def __init__(self, arch: dict, vocab_size: int, feature_dim_in: int | None, seed: int, load_weights: bool = True):
        """``load_weights=False`` skips fetching backbone weights (a checkpoint will overwrite them)."""
        super().__init__()
        arch = check_arch(arch)
        enc = arch["encoder"]
        self.trainable_backbone = bool(enc.get("trainable", True))
        if "features" in enc:
            if not feature_dim_in:
                raise M4IError(f"show_tell encoder reads features {enc['features']!r} but no feature cache was given")
            self.backbone = None
            in_dim = int(feature_dim_in)
        else:
            spec = encoder_spec(enc)
            self.backbone = build_backbone(spec if load_weights else {**spec, "weights": "none"}, seed)
            in_dim = feature_dim(self.backbone)
            if not self.trainable_backbone:
                self.backbone.requires_grad_(False)
        self.proj = nn.Linear(in_dim, arch["embed"])
        self.embed = nn.Embedding(vocab_size, arch["embed"])
        drop = float(arch["dropout"])
        lstm_drop = drop if arch["layers"] > 1 else 0.0
        if arch.get("dp_compatible"):
            # DP-SGD needs per-sample gradients: BatchNorm mixes the images of a batch, and
            # nn.LSTM's fused kernel has no per-sample gradient: FastDPLSTM (same equations and
            # parameters, opacus per-sample gradients ~5x faster than opacus' DPLSTM; see its module)
            # replaces it; the normalisation becomes one group over all channels (a layer norm).
            # Opacus' own fixer would use min(32, C) groups, which on a [B, C] vector with C <= 32
            # normalises every channel alone: a constant output, the image lost.
            from m4i.models.dp_lstm import FastDPLSTM

            self.bn = nn.GroupNorm(1, arch["embed"])
            self.lstm = FastDPLSTM(arch["embed"], arch["hidden"], arch["layers"], dropout=lstm_drop)
        else:
            self.bn = nn.BatchNorm1d(arch["embed"], momentum=float(arch["bn_momentum"]))
            self.lstm = nn.LSTM(arch["embed"], arch["hidden"], arch["layers"], batch_first=True, dropout=lstm_drop)
        self.drop = nn.Dropout(drop)
        self.out = nn.Linear(arch["hidden"], vocab_size)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone is not None and not self.trainable_backbone:
            self.backbone.eval()  # a frozen backbone keeps its BN statistics
        return self

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """[B, D] features or [B, 3, S, S] images -> image embedding [B, embed]."""
        if self.backbone is not None:
            if self.trainable_backbone:
                inputs = self.backbone(inputs)
            else:
                with torch.no_grad():
                    inputs = self.backbone(inputs)
        return self.bn(self.proj(inputs))

    def forward(self, inputs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, T-1, V] predicting tokens[:, 1:] (tokens start with <start>)."""
        img = self.encode(inputs).unsqueeze(1)
        seq = torch.cat([img, self.embed(tokens[:, :-1])], dim=1)
        # Right padding needs no packing: the LSTM is causal and padded targets are ignored.
        hidden, _ = self.lstm(self.drop(seq))
        return self.out(self.drop(hidden[:, 1:]))

    # --- step interface for m4i.models.decoding -------------------------------------------
    def start(self, inputs: torch.Tensor):
        _, state = self.lstm(self.encode(inputs).unsqueeze(1))
        return state

    def step(self, prev: torch.Tensor, state):
        hidden, state = self.lstm(self.embed(prev.to(self.out.weight.device)).unsqueeze(1), state)
        # Log-probs go back to the CPU, where the decoders keep their bookkeeping.
        return torch.log_softmax(self.out(hidden[:, 0]).float(), dim=-1).cpu(), state

    @staticmethod
    def select(state, index: torch.Tensor):
        h, c = state
        index = index.to(h.device)
        return h[:, index], c[:, index]
