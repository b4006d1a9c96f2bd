"""Defenses against membership inference: one module per kind, each a set of pluggable pieces.

A defense is declared in config (``defenses.<name>: {kind: ..., <params>}``) and becomes part
of a captioner's identity (``ModelId.defense``). It acts on one or more of three places:

- the captioner's architecture (``arch_for``: e.g. DP-compatible modules, dropout) — stored in
  the checkpoint, so loading rebuilds the same modules without this package;
- the training loop's pieces (``recipe``: sampler, objective, updater, stopper of
  ``m4i.models.recipe``) — DP-SGD, RelaxLoss, early stopping;
- the answer to a query (``decode_for``: sampling, truncation) — an *output-side* defense,
  which trains nothing: its captioner answers with the undefended twin's weights.

Kinds (``m4i.names.DEFENSE_KINDS``) are modules of this package, imported by name when a job
needs one, so a job's code hash (``m4i.codedeps``) covers exactly the kind it runs. Each module
defines ``TRAINING`` (bool), ``KEYS`` (its settings; others are refused here), ``check(name, params, arch)``, and where it applies
``arch_for(params, arch)``, ``recipe(params, ctx, validation, n_images)`` and
``decode_for(params, decode)``.
"""
from __future__ import annotations

import copy
import importlib

from m4i.io import M4IError
from m4i.names import DEFENSE_KINDS


def module_name(cfg: dict) -> str:
    """The module implementing the defense's kind (``m4i.defenses.<kind>``)."""
    kind = (cfg or {}).get("kind")
    if kind not in DEFENSE_KINDS:
        raise M4IError(f"defense kind {kind!r} unknown; known: {list(DEFENSE_KINDS)}")
    return f"m4i.defenses.{kind}"


def _kind(cfg: dict):
    return importlib.import_module(module_name(cfg))


def params_of(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "kind"}


def training_side(cfg: dict) -> bool:
    """Whether the defense changes training (else it changes only how the model answers)."""
    return bool(_kind(cfg).TRAINING)


def check(name: str, cfg: dict, arch: dict) -> None:
    """Refuse, with the config key, a defense its captioner cannot run (e.g. DP-SGD on ViT-GPT-2)."""
    mod, params = _kind(cfg), params_of(cfg)
    unknown = sorted(set(params) - set(mod.KEYS))
    if unknown:
        raise M4IError(f"config key defenses.{name}: unknown setting(s) {unknown} for kind {cfg['kind']} "
                       f"(known: {list(mod.KEYS)})")
    mod.check(name, params, arch)


def arch_for(cfg: dict, arch: dict) -> dict:
    """The captioner settings a defended captioner trains with (a copy; the input is unchanged)."""
    mod = _kind(cfg)
    arch = copy.deepcopy(arch)
    return mod.arch_for(params_of(cfg), arch) if hasattr(mod, "arch_for") else arch


def recipe_for(cfg: dict, validation=None, n_images: int | None = None):
    """A recipe factory (``TrainContext -> Recipe``) for a training-side defense."""
    mod = _kind(cfg)
    params = params_of(cfg)

    def factory(ctx):
        recipe = mod.recipe(params, ctx, validation=validation, n_images=n_images)
        recipe.info = {"defense": cfg["kind"], **params, **(recipe.info or {})}
        return recipe

    return factory


def decode_for(cfg: dict, decode: dict) -> dict:
    """The decode settings a defended captioner answers with."""
    mod = _kind(cfg)
    return mod.decode_for(params_of(cfg), dict(decode)) if hasattr(mod, "decode_for") else dict(decode)
