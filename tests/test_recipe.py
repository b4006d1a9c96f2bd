"""The training seam: sampler, objective, updater and stopper are pieces a defense replaces."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from m4i.io import load_torch
from m4i.models import recipe as R
from m4i.models.train import train_captioner
from test_models import _lstm_arch, data, feats  # noqa: F401 - shared fixtures

torch.set_num_threads(1)


def _weights(path):
    return load_torch(path)["state_dict"]


def test_the_default_recipe_is_what_runs_without_one(data, feats, tmp_path):
    root, df, vocab = data
    a = train_captioner(_lstm_arch(epochs=2), df, root, feats, vocab, 3, tmp_path / "a.pt", None)
    b = train_captioner(_lstm_arch(epochs=2), df, root, feats, vocab, 3, tmp_path / "b.pt", None,
                        recipe=R.default_recipe)
    assert a.drop(columns="seconds").equals(b.drop(columns="seconds"))  # seconds: timing
    wa, wb = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert "recipe" not in load_torch(tmp_path / "a.pt")  # default checkpoints keep their keys


class StopAfter(R.TrainAllEpochs):
    def __init__(self, ctx, at):
        self.ctx, self.at, self.seen = ctx, at, []

    def after_epoch(self, epoch, model):
        self.seen.append(epoch)
        return epoch >= self.at, {"val_loss": float(epoch)}

    def finish(self, model):
        return {"chosen_epoch": self.at}


def test_a_stopper_ends_training_and_adds_columns(data, feats, tmp_path):
    root, df, vocab = data
    stoppers = []

    def recipe(ctx):
        stoppers.append(StopAfter(ctx, 2))
        return R.Recipe(sampler=R.GroupedSampler(ctx.pair_rec, ctx.lengths, ctx.train, ctx.seed),
                        updater=R.OptimizerStep(ctx.model, ctx.train), stopper=stoppers[-1],
                        info={"kind": "test-stop"})

    loss = train_captioner(_lstm_arch(epochs=5), df, root, feats, vocab, 0, tmp_path / "m.pt",
                           tmp_path / "m.resume.pt", recipe=recipe)
    assert loss["epoch"].tolist() == [1, 2] and loss["val_loss"].tolist() == [1.0, 2.0]
    assert bool(loss["stopped"].iloc[-1]) and stoppers[0].seen == [1, 2]
    ckpt = load_torch(tmp_path / "m.pt")
    assert ckpt["epoch"] == 2 and ckpt["recipe"] == {"kind": "test-stop", "chosen_epoch": 2}


class RecordingRows(R.OptimizerStep):
    """A per-sample updater: gets one loss per caption and the image of each, then steps on
    their token-weighted mean (which must equal the default batch loss)."""

    per_sample = True

    def __init__(self, model, train, calls):
        super().__init__(model, train)
        self.calls = calls

    def step(self, losses, images=None):
        self.calls.append((losses.detach().clone(), np.asarray(images).copy()))
        super().step(losses.mean())


def test_per_sample_updaters_get_row_losses_and_images(data, feats, tmp_path):
    root, df, vocab = data
    calls = []

    def recipe(ctx):
        return R.Recipe(sampler=R.GroupedSampler(ctx.pair_rec, ctx.lengths, ctx.train, ctx.seed),
                        updater=RecordingRows(ctx.model, ctx.train, calls), info={"kind": "rows"})

    train_captioner(_lstm_arch(epochs=1), df, root, feats, vocab, 0, tmp_path / "m.pt", None, recipe=recipe)
    n_pairs = sum(len(c) for c in df["captions"])
    assert sum(len(l) for l, _ in calls) == n_pairs
    for losses, images in calls:
        assert losses.ndim == 1 and len(losses) == len(images) and (losses > 0).all()
        assert set(images) <= set(range(len(df)))


def test_row_losses_agree_with_the_batch_loss():
    """Independent check: per-row mean CE, weighted by each row's token count, is the batch CE."""
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 11)
    tokens = torch.tensor([[1, 5, 6, 7, 2, 0, 0], [1, 3, 2, 0, 0, 0, 0], [1, 4, 4, 4, 4, 4, 2], [1, 9, 2, 0, 0, 0, 0]])
    ce = R.CrossEntropy()
    batch, ce_sum, n = ce.batch_loss(logits, tokens, 0, 1)
    rows, ce_sum_r, n_r = ce.row_losses(logits, tokens, 0, 1)
    lengths = (tokens[:, 1:7] != 0).sum(1).float()
    assert n == n_r == int(lengths.sum())
    assert float((rows * lengths).sum() / lengths.sum()) == pytest.approx(float(batch), rel=1e-6)
    by_hand = [F.cross_entropy(logits[i, : int(lengths[i])], tokens[i, 1 : 1 + int(lengths[i])]) for i in range(4)]
    assert torch.allclose(rows, torch.stack(by_hand), atol=1e-6)
    assert ce_sum == pytest.approx(ce_sum_r, rel=1e-5)


class Zero(R.CrossEntropy):
    def batch_loss(self, logits, tokens, pad, epoch):
        loss, ce_sum, n = super().batch_loss(logits, tokens, pad, epoch)
        return loss * 0.0, ce_sum, n


def test_the_objective_is_what_is_minimised(data, feats, tmp_path):
    root, df, vocab = data

    def recipe(ctx):
        return R.Recipe(sampler=R.GroupedSampler(ctx.pair_rec, ctx.lengths, ctx.train, ctx.seed),
                        objective=Zero(), updater=R.OptimizerStep(ctx.model, ctx.train), info={"kind": "zero"})

    arch = _lstm_arch(epochs=3)
    loss = train_captioner(arch, df, root, feats, vocab, 0, tmp_path / "z.pt", None, recipe=recipe)
    # Zero gradients: Adam leaves every weight where it started (BN running statistics still move).
    train_captioner(_lstm_arch(epochs=0), df, root, feats, vocab, 0, tmp_path / "init.pt", None)
    z, init = _weights(tmp_path / "z.pt"), _weights(tmp_path / "init.pt")
    assert all(torch.equal(z[k], init[k]) for k in z if "running" not in k and "num_batches" not in k)
    trained = train_captioner(arch, df, root, feats, vocab, 0, tmp_path / "t.pt", None)
    assert trained["train_loss"].iloc[-1] < loss["train_loss"].iloc[-1]


def test_a_resume_state_of_another_recipe_is_not_continued(data, feats, tmp_path, monkeypatch):
    from m4i.models import train as train_mod

    root, df, vocab = data
    arch = _lstm_arch(epochs=3)

    def stop(epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_after_epoch", stop)
    with pytest.raises(KeyboardInterrupt):
        train_captioner(arch, df, root, feats, vocab, 0, tmp_path / "m.pt", tmp_path / "m.resume.pt")
    monkeypatch.setattr(train_mod, "_after_epoch", lambda epoch: None)

    def other(ctx):
        return R.Recipe(sampler=R.GroupedSampler(ctx.pair_rec, ctx.lengths, ctx.train, ctx.seed),
                        updater=R.OptimizerStep(ctx.model, ctx.train), info={"kind": "other"})

    seen = []
    monkeypatch.setattr(train_mod, "_after_epoch", seen.append)
    train_captioner(arch, df, root, feats, vocab, 0, tmp_path / "m.pt", tmp_path / "m.resume.pt", recipe=other)
    assert seen == [1, 2, 3]  # started afresh, not from epoch 1 of the default recipe
