"""RelaxLoss (Chen et al., ICLR 2022) on the token cross-entropy.

The defense keeps the training loss near a target level ``alpha`` instead of driving it to zero,
which narrows the member/non-member loss gap that attacks read. Per batch, with ``L`` the mean
token cross-entropy over non-pad tokens (every token is one classification over the vocabulary):

- even epochs: minimise ``|L - alpha|`` (gradient descent above alpha, ascent below);
- odd epochs: if ``L > alpha`` minimise ``L``; else *posterior flattening*: for every token, a
  soft target keeps the model's own probability of the true token (clamped to ``upper``) and
  spreads the rest uniformly over the other tokens; the loss is the soft cross-entropy on tokens
  the model gets wrong, minus the plain cross-entropy (mean over tokens).

This follows the authors' reference code (source/cifar/defense/relaxloss.py), with tokens as
samples and the vocabulary as classes.
"""
from __future__ import annotations

from m4i.io import M4IError

# torch and the training loop's pieces are imported where they run: Snakemake imports this
# module to check the config (``check``) while it plans, where torch would cost seconds.

TRAINING = True
KEYS = ("alpha", "upper")


def check(name: str, params: dict, arch: dict) -> None:
    if "alpha" not in params or not float(params["alpha"]) > 0:
        raise M4IError(f"config key defenses.{name}.alpha: RelaxLoss needs a target loss level alpha > 0")


def relaxloss(logits: torch.Tensor, target: torch.Tensor, pad: int, epoch: int, alpha: float,
              upper: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to minimise, per-token cross-entropy of the non-pad tokens) for logits [N, V] and
    targets [N] (pad tokens are dropped first)."""
    keep = target != pad
    logits, target = logits[keep], target[keep]
    from torch.nn import functional as F

    ce = F.cross_entropy(logits, target, reduction="none")
    mean_ce = ce.mean()
    if epoch % 2 == 0:
        return (mean_ce - alpha).abs(), ce
    if mean_ce > alpha:
        return mean_ce, ce
    n_classes = logits.shape[-1]
    correct = (logits.argmax(-1) == target).to(logits.dtype)
    conf_target = F.softmax(logits, -1).gather(1, target[:, None])[:, 0].clamp(0.0, upper)
    conf_else = (1.0 - conf_target) / (n_classes - 1)
    onehot = F.one_hot(target, n_classes).to(logits.dtype)
    soft = onehot * conf_target[:, None] + (1 - onehot) * conf_else[:, None]
    soft_ce = -(soft * F.log_softmax(logits, -1)).sum(-1)
    return ((1 - correct) * soft_ce - ce).mean(), ce


class RelaxLoss:
    """Objective for the training loop (``m4i.models.recipe``): batch losses only."""

    def __init__(self, alpha: float, upper: float = 1.0):
        self.alpha, self.upper = float(alpha), float(upper)

    def batch_loss(self, logits, tokens, pad: int, epoch: int):
        from m4i.models.recipe import _targets

        target = _targets(logits, tokens)
        loss, ce = relaxloss(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), pad, epoch, self.alpha,
                             self.upper)
        return loss, float(ce.sum().item()), int(ce.numel())

    def row_losses(self, logits, tokens, pad: int, epoch: int):
        raise M4IError("RelaxLoss has no per-caption form: it cannot be combined with a per-sample updater (DP-SGD)")


def recipe(params: dict, ctx, validation=None, n_images=None):
    from m4i.models.recipe import default_recipe

    out = default_recipe(ctx)
    out.objective = RelaxLoss(params["alpha"], params.get("upper", 1.0))
    return out
