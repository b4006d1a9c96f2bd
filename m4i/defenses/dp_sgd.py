"""DP-SGD (Abadi et al., 2016) with opacus, with one *image* as the privacy unit.

All captions of one image count as one record, so the guarantee is about a person's photo, not
one sentence of it: each step draws a Poisson sample of images (every training image with
probability ``q``, opacus' ``UniformWithReplacementSampler``), takes all their captions (or the
configured ``captions_per_image``), computes one gradient per *image* with opacus'
``GradSampleModule`` (see :class:`ImageGroups`: the layers whose per-sample gradient is a sum over
positions get an image's captions as more positions of one sample), and lets opacus'
``DPOptimizer`` clip each image's gradient to ``max_grad_norm`` and add Gaussian noise of
``noise_multiplier * max_grad_norm``.

The noise multiplier is the one opacus' RDP accountant says reaches ``epsilon`` at ``delta``
(default ``1 / (10 * n_images)``) after ``epochs * steps_per_epoch`` steps; ``epsilon: null``
trains with clipping only (no noise: epsilon infinite). The achieved epsilon, delta, noise
multiplier, clipping norm and sampling rate go into the checkpoint (``recipe``).

The captioner must be DP-compatible: a ``show_tell`` LSTM reading cached features, whose
``BatchNorm1d`` (which mixes images of a batch) and ``nn.LSTM`` are replaced by a one-group
GroupNorm and opacus' ``DPLSTM`` through the ``dp_compatible`` arch flag stored with the model
(``m4i.models.show_tell``); opacus' ``ModuleValidator`` then checks the result. ViT-GPT-2 (attention with hooks opacus cannot trace) and end-to-end CNN
encoders (BatchNorm in the backbone) are refused with a config error, never silently trained
without privacy.

A Poisson batch can be empty (probability ``(1 - q)^n``, negligible at the default sizes); such a
step is skipped and still counted by the accountant (counting it is conservative).
"""
from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from m4i.io import M4IError
from m4i.seeding import derive_seed

# torch, opacus and the training loop's pieces are imported where they run: Snakemake imports
# this module to check the config (``check``) while it plans, where torch would cost seconds.

TRAINING = True
KEYS = ("epsilon", "delta", "max_grad_norm", "batch_images", "epochs", "lr")
log = logging.getLogger("m4i.defenses.dp_sgd")


def check(name: str, params: dict, arch: dict) -> None:
    if arch.get("kind") != "show_tell" or "features" not in (arch.get("encoder") or {}):
        raise M4IError(
            f"config key defenses.{name}: dp_sgd runs only on a show_tell captioner reading cached features "
            f"(opacus cannot compute per-sample gradients of {arch.get('kind')!r} with this encoder: ViT-GPT-2's "
            "hooked attention and end-to-end CNN BatchNorm are not supported); use another captioner for the "
            "defended scenario")
    if "max_grad_norm" not in params or not float(params["max_grad_norm"]) > 0:
        raise M4IError(f"config key defenses.{name}.max_grad_norm: DP-SGD needs a clipping norm > 0")
    eps = params.get("epsilon")
    if eps is not None and not float(eps) > 0:
        raise M4IError(f"config key defenses.{name}.epsilon must be > 0 or null (clipping only), got {eps!r}")


def arch_for(params: dict, arch: dict) -> dict:
    arch["dp_compatible"] = True  # GroupNorm + DPLSTM (opacus ModuleValidator.fix), stored with the model
    train = arch.setdefault("train", {})
    if "epochs" in params:
        train["epochs"] = int(params["epochs"])
    if "lr" in params:
        train["lr"] = float(params["lr"])
    return arch


class PoissonImages:
    """Sampler: each step a Poisson sample of images (rate q), all their training pairs."""

    def __init__(self, pair_rec: np.ndarray, n_images: int, q: float, steps: int, seed: int, captions_per_image):
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        self.sampler_cls = UniformWithReplacementSampler
        self.pair_rec, self.n, self.q, self.steps, self.seed = pair_rec, n_images, q, steps, seed
        self.cpi = captions_per_image
        self.rows_of = [np.flatnonzero(pair_rec == i) for i in range(n_images)]

    def __call__(self, epoch: int) -> list[np.ndarray]:
        import torch

        g = torch.Generator().manual_seed(derive_seed(self.seed, "poisson", epoch))
        rng = np.random.default_rng(derive_seed(self.seed, "poisson-captions", epoch))
        out = []
        for images in self.sampler_cls(num_samples=self.n, sample_rate=self.q, generator=g, steps=self.steps):
            rows = [self.rows_of[i] if not self.cpi or len(self.rows_of[i]) <= self.cpi
                    else np.sort(rng.choice(self.rows_of[i], self.cpi, replace=False)) for i in images]
            out.append(np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64))
        return out


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory instead of unmapping it (``M_MMAP_MAX=0``, a 2 GiB trim
    threshold). Each DP-SGD step allocates and frees tens of MB of per-sample gradients; with
    glibc's defaults every such tensor is a fresh ``mmap`` whose pages fault in again. Measured on
    the default captioner's step (32 images, 5 captions each, idle, 1 thread): 0.29 s -> 0.18-0.19 s
    a step with this, for ~60 MB more peak RSS (with per-caption gradients, before ``ImageGroups``:
    0.70 s -> 0.36 s, and 2.5 -> 3.6 GB on the default study). No-op off glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


class ImageGroups:
    """The rows (captions) of one step grouped by image, and a row tensor regrouped to match.

    The per-sample gradient of a linear layer, an embedding or the LSTM recurrence is a sum over
    the positions of a sample (``sum_t b_t a_t^T``); the gradient of an image's loss is the sum
    over its captions. So ``[rows, ...]`` activations and backprops regrouped as ``[images,
    captions, ...]`` (zero rows where an image has fewer captions: they add nothing) give opacus'
    own grad samplers each image's gradient directly, instead of one gradient per caption summed
    per image afterwards: the same sums in another order, with the per-sample tensors (hundreds of
    MB a step at the default sizes) as many times smaller as an image has captions.
    """

    def __init__(self, inverse: np.ndarray, n_images: int):
        import torch

        counts = np.bincount(inverse, minlength=n_images)
        order = np.argsort(inverse, kind="stable")
        rank = np.empty_like(inverse)
        rank[order] = np.arange(len(inverse)) - (np.cumsum(counts) - counts)[inverse[order]]
        self.n, self.k = int(n_images), int(counts.max())
        self.slot = torch.as_tensor(inverse * self.k + rank)

    def __call__(self, x, flatten: bool):
        """``[rows, *rest]`` -> ``[images, captions, *rest]``, or with ``flatten`` the captions
        merged into the next axis (``[images, captions * rest[0], *rest[1:]]``)."""
        out = x.new_zeros((self.n * self.k, *x.shape[1:]))
        out[self.slot] = x
        out = out.view(self.n, self.k, *x.shape[1:])
        return out.flatten(1, 2) if flatten else out


def _image_grad_sample_module(model):
    """Opacus' ``GradSampleModule`` whose linear, embedding and recurrence layers compute one
    gradient per image of the current step's :class:`ImageGroups` (``gsm.groups``; None: per row).
    Other layers (the GroupNorm) keep one per row, summed per image by :meth:`DPStep.step`.
    Returns the module and the parameters it groups."""
    from opacus import GradSampleModule
    from torch import nn

    from m4i.models.dp_lstm import Recurrence

    flatten = {nn.Linear: False, nn.Embedding: True, Recurrence: True}

    class ImageGradSampleModule(GradSampleModule):
        groups: ImageGroups | None = None

        def rearrange_grad_samples(self, *, module, backprops, loss_reduction, batch_first):
            activations, backprops = super().rearrange_grad_samples(
                module=module, backprops=backprops, loss_reduction=loss_reduction, batch_first=batch_first)
            g, kind = self.groups, type(module)
            if g is None or kind not in flatten:
                return activations, backprops
            module.max_batch_len = g.n
            if kind is Recurrence:  # its sampler reads its own tape: hand it the grouping
                module.row_groups = g
                return activations, backprops
            return [g(a, flatten[kind]) for a in activations], g(backprops, flatten[kind])

    gsm = ImageGradSampleModule(model, loss_reduction="sum")
    grouped = {id(p) for m in model.modules() if type(m) in flatten for p in m.parameters(recurse=False)}
    return gsm, grouped


class DPStep:
    """Updater: per-image clipped, noised gradient step (opacus GradSampleModule + DPOptimizer)."""

    per_sample = True

    def __init__(self, model, train: dict, *, noise_multiplier: float, max_grad_norm: float, q: float,
                 expected_images: float, delta: float, seed: int):
        import torch
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        from m4i.models.recipe import make_optimizer

        _keep_freed_memory()
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise M4IError(f"dp_sgd: the captioner is not DP-compatible: {[str(e) for e in errors]}")
        self.model = model
        self.gsm, grouped = _image_grad_sample_module(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.per_row = [p for p in self.params if id(p) not in grouped]
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "dp-noise"))
        self.optimizer = DPOptimizer(make_optimizer(self.params, train), noise_multiplier=float(noise_multiplier),
                                     max_grad_norm=float(max_grad_norm), expected_batch_size=max(1, round(expected_images)),
                                     loss_reduction="mean", generator=self.generator)
        self.accountant = RDPAccountant()
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=q))
        self.noise_multiplier, self.max_grad_norm, self.q, self.delta = float(noise_multiplier), float(max_grad_norm), q, delta
        self.skipped = 0

    def module(self):
        return self.gsm

    def step(self, losses: torch.Tensor, images: np.ndarray) -> None:
        """``losses``: mean token cross-entropy per caption row; ``images``: each row's image."""
        import torch

        if len(images) == 0:  # an empty Poisson batch: count the step, change nothing
            self.skipped += 1
            self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.q)
            return
        uniq, inverse = np.unique(images, return_inverse=True)
        counts = np.bincount(inverse)
        weights = torch.as_tensor(1.0 / counts[inverse], dtype=losses.dtype, device=losses.device)
        self.optimizer.zero_grad(set_to_none=True)
        self.gsm.groups = ImageGroups(inverse, len(uniq))
        try:
            with warnings.catch_warnings():  # opacus' hooks fire on outputs: the inputs are features
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                (losses * weights).sum().backward()  # grads of each image's mean caption loss
        finally:
            self.gsm.groups = None
        index = torch.as_tensor(inverse, device=losses.device)
        for p in self.per_row:
            gs = p.grad_sample
            per_image = torch.zeros((len(uniq), *gs.shape[1:]), dtype=gs.dtype, device=gs.device)
            p.grad_sample = per_image.index_add_(0, index, gs)  # one gradient per image: the privacy unit
        self.optimizer.step()

    def epsilon(self) -> float:
        if self.noise_multiplier == 0:
            return math.inf
        return float(self.accountant.get_epsilon(delta=self.delta)) if self.accountant.history else 0.0

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.original_optimizer.state_dict(), "noise": self.generator.get_state(),
                "history": [list(h) for h in self.accountant.history], "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.original_optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["noise"])
        self.accountant.history = [tuple(h) for h in state["history"]]
        self.skipped = int(state["skipped"])

    def summary(self) -> dict:
        eps = self.epsilon()
        return {"epsilon_achieved": None if math.isinf(eps) else eps, "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
                "sample_rate": self.q, "steps": int(sum(h[2] for h in self.accountant.history)),
                "empty_batches": self.skipped}


def noise_for(epsilon, delta: float, q: float, steps: int) -> float:
    """The noise multiplier opacus' RDP accountant says reaches (epsilon, delta); 0 = clip only."""
    if epsilon is None:
        return 0.0
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=float(epsilon), target_delta=delta, sample_rate=q,
                                      steps=steps, accountant="rdp"))


def recipe(params: dict, ctx, validation=None, n_images=None):
    from m4i.models.recipe import Recipe

    n = int(ctx.n_records)
    batch = int(params.get("batch_images", ctx.train["batch_size"]))
    q = min(1.0, batch / n)
    steps_per_epoch = max(1, int(1 / q))
    steps = steps_per_epoch * int(ctx.train["epochs"])
    delta = float(params["delta"]) if params.get("delta") is not None else 1.0 / (10 * n)
    sigma = noise_for(params.get("epsilon"), delta, q, steps)
    log.info("dp_sgd: n_images=%d q=%.4f steps=%d delta=%.2e noise_multiplier=%.4f clip=%s",
             n, q, steps, delta, sigma, params["max_grad_norm"])
    updater = DPStep(ctx.model, ctx.train, noise_multiplier=sigma, max_grad_norm=params["max_grad_norm"], q=q,
                     expected_images=q * n, delta=delta, seed=ctx.seed)
    sampler = PoissonImages(ctx.pair_rec, n, q, steps_per_epoch, ctx.seed, ctx.train.get("captions_per_image"))
    return Recipe(sampler=sampler, updater=updater,
                  info={"privacy_unit": "image", "n_images": n, "target_delta": delta})
