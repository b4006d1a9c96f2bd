"""A CLIP-style MFE with open_clip: ViT image tower + transformer text tower, contrastive loss.

From scratch (``pretrained: null``, the default): a small ``open_clip.CLIP`` is built from the
``model`` settings, captions are tokenised with our own ``m4i.text.Vocab`` (built from the
combination set; no BPE file or download needed), pooled at the ``<end>`` token, and the whole
model is trained with open_clip's ``ClipLoss`` on pixels. By default each epoch pairs every
image with one of its captions, drawn at random: several captions of one image in a batch
would be false negatives for the contrastive loss.

Pretrained (``pretrained``: an open_clip tag such as ``openai``, or a local checkpoint file, plus
``model_name`` such as ``ViT-B-32``): ``open_clip.create_model_and_transforms`` loads it (needs the
internet or a filled cache for tags), its own tokenizer is used, and it is fine-tuned the same
way. The checkpoint then stores only ``model_name`` and the weights, so applying it works offline.

Embeddings (and ``absdiff``) are L2-normalised: the contrastive loss only sees directions.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from m4i.io import M4IError
from m4i.mfe.common import COMMON_DEFAULTS, batched, combination_vocab, normalize_settings, training_pairs
from m4i.models.features import MEAN as IMAGENET_MEAN, STD as IMAGENET_STD
from m4i.models.inputs import InputSource
from m4i.models.batching import epoch_batches, epoch_pairs
from m4i.progress import Progress
from m4i.seeding import derive_seed
from m4i.text import Vocab

log = logging.getLogger("m4i.mfe")

KIND = "open_clip"
MODEL_DEFAULTS = {
    "embed_dim": 64, "image_size": 48, "vision_width": 64, "vision_layers": 2, "vision_patch": 8,
    "vision_heads": 4, "text_width": 64, "text_layers": 2, "text_heads": 4, "context_length": 24,
}
DEFAULTS = {
    **COMMON_DEFAULTS,
    "pretrained": None,       # open_clip pretrained tag or local checkpoint path; null = from scratch
    "model_name": None,       # open_clip architecture name, needed with `pretrained`
    "model": MODEL_DEFAULTS,
    "captions_per_image": 1,  # captions per image per epoch (null = all)
}
# With `pretrained`, `model` is ignored: the architecture is open_clip's `model_name` config.
ABSDIFF_SPACE = "l2_normalized"
MAX_LOGIT_SCALE = math.log(100.0)  # open_clip's training clamps the temperature here too


def _open_clip():
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - a hard dependency of the environment
        raise M4IError("the open_clip MFE needs the open_clip_torch package") from exc
    return open_clip


def normalize(mfe: dict) -> dict:
    out = normalize_settings(mfe, DEFAULTS, "mfe (kind open_clip)")
    model = out["model"]
    if not isinstance(model, dict):
        raise M4IError(f"mfe (kind open_clip): model must be a mapping, got {model!r}")
    unknown = sorted(set(model) - set(MODEL_DEFAULTS))
    if unknown:
        raise M4IError(f"mfe (kind open_clip): unknown model key(s) {unknown}; allowed: {sorted(MODEL_DEFAULTS)}")
    model = {**MODEL_DEFAULTS, **model}
    for key, value in model.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise M4IError(f"mfe (kind open_clip): model.{key} must be a positive integer, got {value!r}")
    for width, heads in (("vision_width", "vision_heads"), ("text_width", "text_heads")):
        if model[width] % model[heads]:
            raise M4IError(f"mfe (kind open_clip): model.{width} ({model[width]}) is not divisible by "
                           f"model.{heads} ({model[heads]})")
    if model["image_size"] % model["vision_patch"]:
        raise M4IError(f"mfe (kind open_clip): model.image_size ({model['image_size']}) is not divisible "
                       f"by model.vision_patch ({model['vision_patch']})")
    if model["context_length"] < 3:
        raise M4IError("mfe (kind open_clip): model.context_length must be >= 3 (<start> word <end>)")
    out["model"] = model
    if out["pretrained"] is not None:
        if not isinstance(out["pretrained"], str) or not out["pretrained"]:
            raise M4IError(f"mfe (kind open_clip): pretrained must be null, a tag or a path, got {out['pretrained']!r}")
        if not isinstance(out["model_name"], str) or not out["model_name"]:
            raise M4IError("mfe (kind open_clip): pretrained needs model_name "
                           "(an open_clip architecture, e.g. ViT-B-32)")
    return out


def model_config(model: dict, vocab: Vocab) -> dict:
    """Arguments of ``open_clip.CLIP`` for the from-scratch model (plain dicts: checkpoint-safe)."""
    return {
        "embed_dim": model["embed_dim"],
        "vision_cfg": {"image_size": model["image_size"], "patch_size": model["vision_patch"],
                       "width": model["vision_width"], "layers": model["vision_layers"],
                       "head_width": model["vision_width"] // model["vision_heads"]},
        # Pool at our <end> token (open_clip's default argmax pooling assumes BPE ids).
        "text_cfg": {"context_length": model["context_length"], "vocab_size": len(vocab),
                     "width": model["text_width"], "heads": model["text_heads"], "layers": model["text_layers"],
                     "pad_id": vocab.pad, "eos_id": vocab.end, "pool_type": "eos"},
    }


def encode_ids(texts: list[str], vocab: Vocab, context_length: int) -> torch.Tensor:
    """[N, context_length] ids: <start> words <end> <pad>...; too long -> cut, <end> kept last."""
    out = torch.full((len(texts), context_length), vocab.pad, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = vocab.encode(text)
        if len(ids) > context_length:
            ids = ids[: context_length - 1] + [vocab.end]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def _is_path(s: str) -> bool:
    return os.sep in s or s.startswith(".") or Path(s).suffix in (".pt", ".pth", ".bin", ".safetensors")


def _load_pretrained(settings: dict):
    """(model, preprocess cfg) for a pretrained tag or local file; any failure -> M4IError."""
    name, pretrained = settings["model_name"], settings["pretrained"]
    if _is_path(pretrained) and not Path(os.path.expanduser(pretrained)).is_file():
        raise M4IError(f"mfe (kind open_clip): pretrained checkpoint file {pretrained!r} not found")
    try:
        model, _, _ = _open_clip().create_model_and_transforms(name, pretrained=os.path.expanduser(pretrained))
    except Exception as exc:  # noqa: BLE001 - download/config failures are all the same user problem
        raise M4IError(f"mfe (kind open_clip): cannot load {name!r} with pretrained={pretrained!r} "
                       f"({type(exc).__name__}: {exc}); offline, point pretrained at a local file") from exc
    return model, dict(model.visual.preprocess_cfg)


def _image_size(size) -> int:
    size = size if isinstance(size, int) else tuple(size)
    if isinstance(size, tuple):
        if len(set(size)) != 1:
            raise M4IError(f"open_clip MFE: non-square image size {size} is not supported")
        size = size[0]
    return int(size)


class _Model:
    """A built open_clip model with its text encoding and pixel normalisation."""

    def __init__(self, net, *, vocab: Vocab | None, tokenizer, context_length: int, image_size: int,
                 mean, std):
        self.net, self.vocab, self.tokenizer = net, vocab, tokenizer
        self.context_length, self.image_size = context_length, image_size
        # InputSource normalises with ImageNet statistics; map them onto the model's own.
        m_in, s_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        m_out, s_out = torch.tensor(mean, dtype=torch.float), torch.tensor(std, dtype=torch.float)
        self.scale = (s_in / s_out).view(1, 3, 1, 1)
        self.shift = ((m_in - m_out) / s_out).view(1, 3, 1, 1)
        self.renormalise = not (torch.equal(m_in, m_out) and torch.equal(s_in, s_out))

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift if self.renormalise else x

    def tokens(self, texts: list[str]) -> torch.Tensor:
        if self.vocab is not None:
            return encode_ids(texts, self.vocab, self.context_length)
        return self.tokenizer(texts)


def _build(settings: dict, vocab_tokens: list[str] | None, *, pretrained_weights: bool, config: dict | None):
    """(_Model, extra checkpoint fields). From scratch: ``config`` (or derived from settings)."""
    open_clip = _open_clip()
    if settings["pretrained"] is None:
        vocab = Vocab(vocab_tokens)
        config = config or model_config(settings["model"], vocab)
        net = open_clip.CLIP(**config)
        wrapped = _Model(net, vocab=vocab, tokenizer=None, context_length=config["text_cfg"]["context_length"],
                         image_size=config["vision_cfg"]["image_size"], mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return wrapped, {"model_config": config}
    if pretrained_weights:
        net, pp = _load_pretrained(settings)
    else:  # applying a fine-tuned checkpoint: the architecture only, weights come from the checkpoint
        net = open_clip.create_model(settings["model_name"], pretrained=None)
        pp = dict(net.visual.preprocess_cfg)
    tokenizer = open_clip.get_tokenizer(settings["model_name"])
    wrapped = _Model(net, vocab=None, tokenizer=tokenizer, context_length=int(net.context_length),
                     image_size=_image_size(pp["size"]), mean=pp["mean"], std=pp["std"])
    return wrapped, {"model_config": None}


def train(mfe: dict, records: pd.DataFrame, root, features: dict | None, seed: int, device="cpu") -> dict:
    settings = normalize(mfe)
    pair_rec, texts = training_pairs(records, "open_clip MFE combination set")
    vocab_tokens = combination_vocab(texts, settings["min_count"]) if settings["pretrained"] is None else []
    device = torch.device(device)
    torch.manual_seed(derive_seed(seed, "mfe", "init"))
    model, extra = _build(settings, vocab_tokens or None, pretrained_weights=True, config=None)
    net = model.net.to(device)
    source = InputSource(records, root, image_size=model.image_size)
    tokens = model.tokens(texts)
    opt = torch.optim.AdamW(net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    loss_fn = _open_clip().ClipLoss()
    losses = []
    progress = Progress("train open_clip MFE", settings["epochs"], logger=log)
    for epoch in range(settings["epochs"]):
        net.train()
        pairs = epoch_pairs(pair_rec, settings["captions_per_image"], seed, epoch)
        epoch_loss = []
        for b in epoch_batches(np.zeros(len(pairs)), settings["batch_size"], False, seed, epoch):
            p = pairs[b]
            images = model.pixels(source.take(pair_rec[p])).to(device)
            img_f, txt_f, logit_scale = net(images, tokens[p].to(device))[:3]
            loss = loss_fn(img_f, txt_f, logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                net.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            epoch_loss.append(float(loss.detach()))
        losses.append(float(np.mean(epoch_loss)))
        progress.update(epoch + 1, loss=losses[-1])
    return {
        "kind": KIND,
        "settings": settings,
        "seed": int(seed),
        "vocab": list(vocab_tokens),
        **extra,
        "embed_dim": _embed_dim(net, tokens[:1].to(device)),
        "absdiff_space": ABSDIFF_SPACE,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "loss": losses,
    }


@torch.no_grad()
def _embed_dim(net, one_text: torch.Tensor) -> int:
    """Output width, from one forward (robust to every open_clip text-tower variant)."""
    was = net.training
    net.eval()
    dim = int(net.encode_text(one_text).shape[-1])
    net.train(was)
    return dim


class Encoder:
    """Eval-mode, L2-normalised image and text embeddings of a trained open_clip MFE checkpoint."""

    absdiff_space = ABSDIFF_SPACE

    def __init__(self, checkpoint: dict, device="cpu"):
        self.device = torch.device(device)
        settings = checkpoint["settings"]
        vocab = list(checkpoint["vocab"]) or None
        self.model, _ = _build(settings, vocab, pretrained_weights=False, config=checkpoint.get("model_config"))
        self.model.net.load_state_dict(checkpoint["state_dict"])
        self.model.net.to(self.device).eval()

    @torch.no_grad()
    def images(self, records: pd.DataFrame, root, features: dict | None) -> torch.Tensor:
        source = InputSource(records, root, image_size=self.model.image_size)  # pixels; features unused

        def enc(s):
            x = self.model.pixels(source.take(list(range(s.start, s.stop)))).to(self.device)
            return self.model.net.encode_image(x, normalize=True).cpu()

        return batched(enc, len(source))

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        ids = self.model.tokens(texts)
        return batched(lambda s: self.model.net.encode_text(ids[s].to(self.device), normalize=True).cpu(), len(ids))
