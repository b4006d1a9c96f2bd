"""Transformer captioner: a ViT encoder and a GPT-2 decoder with cross-attention
(``transformers.VisionEncoderDecoderModel``), over the study's own word vocabulary.

With ``pretrained: null`` the model is built from small config values offline, randomly
initialised from the seed. With ``pretrained: <model id or local folder>`` its weights come from
``from_pretrained``; the decoder's token embeddings are then resized to our vocabulary, so the
word embeddings start fresh while the transformer weights are reused. The resolved
transformers config travels in the checkpoint (``model_config``), so loading never downloads.
"""
from __future__ import annotations

import json

import torch
from torch import nn

from m4i.io import M4IError

ENCODER_DEFAULTS = {"image_size": 48, "patch_size": 8, "hidden": 128, "layers": 2, "heads": 4}
DECODER_DEFAULTS = {"hidden": 128, "layers": 2, "heads": 4, "max_positions": 64}


def _transformers():
    # Imported lazily: `import transformers` costs seconds, and only this captioner needs it.
    import transformers

    return transformers


def _check_sizes(part: str, cfg: dict) -> None:
    for key, value in cfg.items():
        if key != "intermediate" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise M4IError(f"vit_gpt2 arch.{part}.{key} must be a positive integer, got {value!r}")
    if cfg["hidden"] % cfg["heads"]:
        raise M4IError(f"vit_gpt2 arch.{part}: hidden {cfg['hidden']} is not divisible by heads {cfg['heads']}")


def config_from_arch(arch: dict, vocab_size: int, special_ids: dict) -> dict:
    """A VisionEncoderDecoder config (as a JSON dict) built from the small arch values."""
    tf = _transformers()
    enc = {**ENCODER_DEFAULTS, **(arch.get("encoder") or {})}
    dec = {**DECODER_DEFAULTS, **(arch.get("decoder") or {})}
    if "features" in enc:
        raise M4IError("vit_gpt2 reads images; arch.encoder.features is not supported")
    _check_sizes("encoder", enc)
    _check_sizes("decoder", dec)
    if enc["image_size"] % enc["patch_size"]:
        raise M4IError(f"vit_gpt2 arch.encoder: image_size {enc['image_size']} is not a multiple of patch_size")
    drop = float(arch.get("dropout", 0.0))
    vit = tf.ViTConfig(
        image_size=enc["image_size"], patch_size=enc["patch_size"], hidden_size=enc["hidden"],
        num_hidden_layers=enc["layers"], num_attention_heads=enc["heads"],
        intermediate_size=enc.get("intermediate", 4 * enc["hidden"]),
        hidden_dropout_prob=drop, attention_probs_dropout_prob=drop,
    )
    gpt = tf.GPT2Config(
        vocab_size=vocab_size, n_positions=dec["max_positions"], n_embd=dec["hidden"], n_layer=dec["layers"],
        n_head=dec["heads"], n_inner=dec.get("intermediate"), add_cross_attention=True,
        resid_pdrop=drop, embd_pdrop=drop, attn_pdrop=drop,
        bos_token_id=special_ids["start"], eos_token_id=special_ids["end"], pad_token_id=special_ids["pad"],
    )
    cfg = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit, gpt)
    return json.loads(cfg.to_json_string())


def _from_pretrained(name: str, vocab_size: int):
    tf = _transformers()
    try:
        model = tf.VisionEncoderDecoderModel.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - offline/missing/incompatible: one user-facing error
        raise M4IError(
            f"vit_gpt2 pretrained {name!r}: cannot load it with VisionEncoderDecoderModel.from_pretrained "
            f"({type(exc).__name__}: {exc}). Offline, point `pretrained` at a local folder written by "
            f"save_pretrained, or set it to null for a small randomly initialised model."
        ) from exc
    model.decoder.resize_token_embeddings(vocab_size)
    return model


class VitGpt2(nn.Module):
    """VisionEncoderDecoderModel wrapper with the captioners' training and step interface."""

    def __init__(self, arch: dict, vocab_size: int, special_ids: dict, seed: int, model_config: dict | None = None):
        super().__init__()
        tf = _transformers()
        if model_config is not None:  # rebuilding from a checkpoint: no download
            config = tf.VisionEncoderDecoderConfig.from_dict(model_config)
            self.model = tf.VisionEncoderDecoderModel(config=config)
        elif arch.get("pretrained"):
            self.model = _from_pretrained(str(arch["pretrained"]), vocab_size)
        else:
            config = tf.VisionEncoderDecoderConfig.from_dict(config_from_arch(arch, vocab_size, special_ids))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = tf.VisionEncoderDecoderModel(config=config)
        if self.model.config.decoder.vocab_size != vocab_size:
            raise M4IError(
                f"vit_gpt2: model vocabulary {self.model.config.decoder.vocab_size} != study vocabulary {vocab_size}"
            )
        self.image_size = int(self.model.config.encoder.image_size)
        self.max_positions = int(self.model.config.decoder.n_positions)

    def model_config(self) -> dict:
        return json.loads(self.model.config.to_json_string())

    # Training passes each distinct image once and ``image_index`` maps caption rows to images:
    # with image-grouped batches (5 captions per image) the ViT then runs 5x less.
    shares_images = True

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, image_index: torch.Tensor | None = None):
        """Teacher forcing: logits [B, T-1, V] predicting tokens[:, 1:] (truncated to max_positions)."""
        from transformers.modeling_outputs import BaseModelOutput

        enc = self.model.encoder(pixel_values=images).last_hidden_state
        if image_index is not None:
            enc = enc[image_index]
        inp = tokens[:, : self.max_positions + 1][:, :-1]
        # Right padding: masking pads changes no real position (causal), and says so to transformers.
        mask = (inp != self.model.config.decoder.pad_token_id).long()
        mask[:, 0] = 1
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=enc), decoder_input_ids=inp,
                         decoder_attention_mask=mask, use_cache=False)
        return out.logits

    # --- step interface for m4i.models.decoding ---------------------------------------------
    # The prefix is re-run each step (no KV cache): captions are short, and the state stays two
    # plain tensors that gather cleanly for beam search.
    def start(self, images: torch.Tensor):
        enc = self.model.encoder(pixel_values=images).last_hidden_state
        return enc, torch.zeros(len(images), 0, dtype=torch.long, device=enc.device)

    def step(self, prev: torch.Tensor, state):
        from transformers.modeling_outputs import BaseModelOutput

        enc, prefix = state
        prefix = torch.cat([prefix, prev.to(prefix.device).unsqueeze(1)], dim=1)
        if prefix.shape[1] > self.max_positions:
            raise M4IError(f"vit_gpt2: decode.max_len exceeds the decoder's {self.max_positions} positions")
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=enc), decoder_input_ids=prefix,
                         decoder_attention_mask=torch.ones_like(prefix), use_cache=False)
        # Log-probs go back to the CPU, where the decoders keep their bookkeeping.
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu(), (enc, prefix)

    @staticmethod
    def select(state, index: torch.Tensor):
        enc, prefix = state
        index = index.to(enc.device)
        return enc[index], prefix[index]
