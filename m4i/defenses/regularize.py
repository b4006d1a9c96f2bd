"""Regularisation: weight decay, dropout and early stopping on the validation split.

Early stopping reads only the ``val`` split — records no captioner trains on and no attack
scores (never ``target_out`` or ``heldout``, which would let the defense tune itself on the
attacker's evaluation data). After each epoch the teacher-forced validation loss is computed;
training stops once it has not improved for ``patience`` epochs, and the weights of the best
epoch are the model.
"""
from __future__ import annotations

import copy

from m4i.io import M4IError, sha256_json

# The training loop's pieces (torch) are imported where they run: Snakemake imports this module
# to check the config (``check``) while it plans, where torch would cost seconds.

TRAINING = True
KEYS = ("weight_decay", "dropout", "early_stopping", "patience", "max_epochs")


def check(name: str, params: dict, arch: dict) -> None:
    if "dropout" in params and arch.get("kind") != "show_tell":
        raise M4IError(f"config key defenses.{name}: dropout is a show_tell setting; captioner kind {arch.get('kind')!r}")


def arch_for(params: dict, arch: dict) -> dict:
    train = arch.setdefault("train", {})
    if "weight_decay" in params:
        train["weight_decay"] = float(params["weight_decay"])
    if "max_epochs" in params:
        train["epochs"] = int(params["max_epochs"])
    if "dropout" in params:
        arch["dropout"] = float(params["dropout"])
    return arch


class EarlyStopping:
    """Stop once the validation loss has not improved for ``patience`` epochs; keep the best."""

    def __init__(self, eval_loss, validation, patience: int):
        self.eval_loss, self.validation, self.patience = eval_loss, validation, int(patience)
        self.best, self.best_epoch, self.best_state, self.bad = float("inf"), 0, None, 0

    def after_epoch(self, epoch: int, model) -> tuple[bool, dict]:
        loss = float(self.eval_loss(self.validation))
        if loss < self.best:
            self.best, self.best_epoch, self.bad = loss, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            self.bad += 1
        return self.bad >= self.patience, {"val_loss": loss}

    def finish(self, model) -> dict:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return {"best_epoch": int(self.best_epoch), "best_val_loss": float(self.best)}

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
            self.best_state, self.bad = state["best_state"], int(state["bad"])


def recipe(params: dict, ctx, validation=None, n_images=None):
    from m4i.models.recipe import default_recipe

    out = default_recipe(ctx)
    if params.get("early_stopping", True):
        if validation is None or len(validation) == 0:
            raise M4IError("defense regularize with early_stopping needs the validation split: "
                           "set config key splits.sizes.val > 0")
        out.stopper = EarlyStopping(ctx.eval_loss, validation, params.get("patience", 2))
        ids = [str(r) for r in validation["record_id"]]
        out.info = {"validation": {"split": "val", "n": len(ids), "record_ids_sha256": sha256_json(sorted(ids))}}
    return out
