"""Defenses: each kind does what its name promises, checked against independent computations."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from m4i import defenses
from m4i.defenses import dp_sgd, regularize, relaxloss
from m4i.io import M4IError, load_torch
from m4i.models.train import build_captioner, load_captioner, train_captioner
from m4i.text import Vocab
from test_models import _lstm_arch, data, feats  # noqa: F401 - shared fixtures

torch.set_num_threads(1)
DP = {"kind": "dp_sgd", "epsilon": 8.0, "max_grad_norm": 0.5, "batch_images": 4}


# ------------------------------------------------------------------------------------------ DP-SGD
def _tiny_model(seed=0):
    vocab = Vocab(["<pad>", "<start>", "<end>", "<unk>", "a", "b", "c", "d"])
    arch = defenses.arch_for(DP, _lstm_arch(epochs=1))
    return build_captioner(arch, vocab, 6, seed), vocab


def _rows(vocab, n_rows, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, len(vocab), (n_rows, 5), generator=g)
    tokens[:, 0] = vocab.start
    return torch.randn(n_rows, 6, generator=g), tokens


def _row_losses(model, x, tokens, pad):
    logits = model(x, tokens)
    target = tokens[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none", ignore_index=pad)
    return ce.mean(1)


def test_dp_step_clips_each_image_and_matches_a_hand_computed_update():
    """With no noise and SGD(lr=1), one DP step moves the weights by exactly the mean over the
    expected batch of per-*image* gradients clipped to the norm: computed here image by image."""
    model, vocab = _tiny_model()
    model.train()
    images = np.array([0, 0, 0, 1, 2, 2])  # image 0 has three captions, image 2 two
    x, tokens = _rows(vocab, len(images), 1)
    clip, expected = 0.05, 4
    ref = copy.deepcopy(model)
    train = {"optimizer": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0}
    step = dp_sgd.DPStep(model, train, noise_multiplier=0.0, max_grad_norm=clip, q=0.5,
                         expected_images=expected, delta=1e-3, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    losses = _row_losses(step.module(), x, tokens, vocab.pad)
    step.step(losses, images)

    # independent: per image, the gradient of the mean loss of its captions, clipped, summed
    params = [p for p in ref.parameters() if p.requires_grad]
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for img in np.unique(images):
        rows = np.flatnonzero(images == img)
        ref.zero_grad()
        _row_losses(ref, x[rows], tokens[rows], vocab.pad).mean().backward()
        grads = [p.grad.detach().clone() for p in params]
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        norms.append(float(norm))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        total = [t + factor * g for t, g in zip(total, grads)]
    assert min(norms) > clip  # the clipping is active for every image in this case
    after = model.state_dict()
    for name, t in zip(names, total):
        moved = before[name] - after[name]
        assert torch.allclose(moved, t / expected, atol=1e-6), name
    # and the update is bounded by the clipping norm: |sum of clipped| / E <= n_images * C / E
    flat = torch.sqrt(sum(((before[n] - after[n]) ** 2).sum() for n in names))
    assert float(flat) <= len(np.unique(images)) * clip / expected + 1e-6


def test_dp_noise_is_real_seeded_and_scaled():
    def moved(noise, seed):
        model, vocab = _tiny_model()
        x, tokens = _rows(vocab, 4, 2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        step = dp_sgd.DPStep(model, {"optimizer": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0},
                             noise_multiplier=noise, max_grad_norm=1.0, q=0.5, expected_images=2, delta=1e-3,
                             seed=seed)
        step.step(_row_losses(step.module(), x, tokens, vocab.pad), np.array([0, 1, 2, 3]))
        return torch.cat([(before[k] - v).flatten() for k, v in model.state_dict().items()
                          if k in dict(model.named_parameters())])

    assert torch.equal(moved(1.0, 0), moved(1.0, 0))      # seeded: the same noise twice
    assert not torch.equal(moved(1.0, 0), moved(1.0, 1))  # another seed, other noise
    quiet, loud = moved(0.0, 0), moved(10.0, 0)
    # noise of std sigma*C/E per coordinate dominates the clipped signal at sigma = 10
    assert float((loud - quiet).std()) == pytest.approx(10.0 * 1.0 / 2, rel=0.2)


def test_epsilon_is_monotone_in_the_noise_and_reached_by_the_accountant():
    q, steps, delta = 0.1, 100, 1e-4
    sigmas = [dp_sgd.noise_for(eps, delta, q, steps) for eps in (0.5, 1.0, 8.0)]
    assert sigmas[0] > sigmas[1] > sigmas[2] > 0
    assert dp_sgd.noise_for(None, delta, q, steps) == 0.0
    from opacus.accountants import RDPAccountant

    eps = []
    for s in sigmas:
        acc = RDPAccountant()
        acc.history = [(s, q, steps)]
        eps.append(acc.get_epsilon(delta))
    assert eps[0] < eps[1] < eps[2]
    assert eps[1] == pytest.approx(1.0, abs=0.02) and eps[2] == pytest.approx(8.0, abs=0.1)


def test_dp_training_records_its_guarantee_and_loads_without_the_defense(data, feats, tmp_path):
    root, df, vocab = data
    arch = defenses.arch_for(DP, _lstm_arch(epochs=2))
    loss = train_captioner(arch, df, root, feats, vocab, 0, tmp_path / "m.pt", tmp_path / "m.resume.pt",
                           recipe=defenses.recipe_for(DP, n_images=len(df)))
    assert len(loss) == 2
    ckpt = load_torch(tmp_path / "m.pt")
    r = ckpt["recipe"]
    assert r["defense"] == "dp_sgd" and r["privacy_unit"] == "image" and r["n_images"] == len(df)
    assert r["delta"] == pytest.approx(1 / (10 * len(df)))
    assert r["sample_rate"] == pytest.approx(4 / len(df)) and r["steps"] == 2 * int(len(df) / 4)
    assert r["noise_multiplier"] > 0 and r["epsilon_achieved"] == pytest.approx(8.0, abs=0.1)
    model, _ = load_captioner(ckpt)  # the arch flag alone rebuilds the DP-compatible modules
    from m4i.models.dp_lstm import FastDPLSTM

    assert isinstance(model.lstm, FastDPLSTM) and isinstance(model.bn, torch.nn.GroupNorm)
    clip_only = {**DP, "epsilon": None}
    train_captioner(defenses.arch_for(clip_only, _lstm_arch(epochs=1)), df, root, feats, vocab, 0,
                    tmp_path / "c.pt", None, recipe=defenses.recipe_for(clip_only, n_images=len(df)))
    c = load_torch(tmp_path / "c.pt")["recipe"]
    assert c["noise_multiplier"] == 0.0 and c["epsilon_achieved"] is None  # epsilon infinite


def test_poisson_sampler_draws_images_with_all_their_captions():
    pair_rec = np.repeat(np.arange(50), 3)
    s = dp_sgd.PoissonImages(pair_rec, 50, 0.2, 5, seed=3, captions_per_image=None)
    batches = s(1)
    assert len(batches) == 5 and all(np.array_equal(a, b) for a, b in zip(batches, s(1)))  # seeded by epoch
    for b in batches:
        imgs, counts = np.unique(pair_rec[b], return_counts=True)
        assert (counts == 3).all()  # an image comes with all of its captions
    sizes = [len(np.unique(pair_rec[b])) for e in range(1, 40) for b in s(e)]
    assert np.mean(sizes) == pytest.approx(10, rel=0.1) and np.std(sizes) > 1  # Poisson, not fixed


def test_dp_sgd_refuses_captioners_opacus_cannot_run():
    with pytest.raises(M4IError, match="defenses.dp1.*show_tell"):
        defenses.check("dp1", DP, {"kind": "vit_gpt2"})
    with pytest.raises(M4IError, match="defenses.dp1"):
        defenses.check("dp1", DP, {"kind": "show_tell", "encoder": {"backbone": "resnet18"}})
    defenses.check("dp1", DP, _lstm_arch())


# --------------------------------------------------------------------------------------- RelaxLoss
def test_relaxloss_matches_a_hand_computed_case():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    target = torch.tensor([0, 0, 2, 0])  # the last row is padding (pad = 0 is not used as class here)
    keep = torch.tensor([True, True, True, False])
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    ce = -np.log(p[np.arange(4), target.numpy()])[:3]
    alpha = 5.0  # above the loss: even epochs ascend |L - alpha|, odd epochs flatten
    pad = 99
    t = target.clone()
    t[~keep] = pad
    loss, token_ce = relaxloss.relaxloss(logits, t, pad, epoch=2, alpha=alpha)
    assert float(loss) == pytest.approx(abs(ce.mean() - alpha), rel=1e-5)
    assert np.allclose(token_ce.numpy(), ce, rtol=1e-5)
    loss, _ = relaxloss.relaxloss(logits, t, pad, epoch=1, alpha=alpha)
    # by hand: soft target keeps p_true (clamped to 1), spreads 1 - p_true over the 2 others;
    # loss = mean((1 - correct) * softCE - CE); row 1 is wrong (argmax 1 != 0), rows 0, 2 right
    expected = []
    for i in range(3):
        pt = p[i, target[i]]
        soft = np.full(3, (1 - pt) / 2)
        soft[target[i]] = pt
        soft_ce = -(soft * np.log(p[i])).sum()
        correct = float(np.argmax(p[i]) == target[i])
        expected.append((1 - correct) * soft_ce - ce[i])
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-5)
    loss, _ = relaxloss.relaxloss(logits, t, pad, epoch=1, alpha=0.01)  # loss above alpha: plain CE
    assert float(loss) == pytest.approx(ce.mean(), rel=1e-5)


def test_relaxloss_keeps_the_training_loss_near_alpha(data, feats, tmp_path):
    root, df, vocab = data
    cfg = {"kind": "relaxloss", "alpha": 1.5}
    plain = train_captioner(_lstm_arch(epochs=30), df, root, feats, vocab, 0, tmp_path / "p.pt", None)
    relaxed = train_captioner(_lstm_arch(epochs=30), df, root, feats, vocab, 0, tmp_path / "r.pt", None,
                              recipe=defenses.recipe_for(cfg))
    assert plain["train_loss"].iloc[-1] < 1.0  # undefended, it memorises the tiny set
    assert relaxed["train_loss"].iloc[-5:].mean() == pytest.approx(1.5, abs=0.5)


# --------------------------------------------------------------------------------- early stopping
def test_early_stopping_reads_only_the_validation_records_and_keeps_the_best(data, feats, tmp_path):
    root, df, vocab = data
    val = df.iloc[:3].reset_index(drop=True)
    train = df.iloc[3:].reset_index(drop=True)
    seen = []
    cfg = {"kind": "regularize", "early_stopping": True, "patience": 2, "dropout": 0.1}
    factory = defenses.recipe_for(cfg, validation=val)

    def spy(ctx):
        inner = ctx.eval_loss

        def eval_loss(records):
            seen.append(sorted(records["record_id"]))
            return inner(records)

        ctx.eval_loss = eval_loss
        return factory(ctx)

    arch = defenses.arch_for(cfg, _lstm_arch(epochs=40))
    assert arch["dropout"] == 0.1
    loss = train_captioner(arch, train, root, feats, vocab, 0, tmp_path / "m.pt", None, recipe=spy)
    assert seen and all(s == sorted(val["record_id"]) for s in seen)  # nothing but the val records
    best = int(loss["val_loss"].idxmin())
    assert bool(loss["stopped"].iloc[-1]) and len(loss) == best + 1 + 2  # patience 2 after the best
    r = load_torch(tmp_path / "m.pt")["recipe"]
    assert r["best_epoch"] == int(loss["epoch"].iloc[best]) and r["validation"]["n"] == 3
    with pytest.raises(M4IError, match="splits.sizes.val"):
        train_captioner(arch, train, root, feats, vocab, 0, tmp_path / "x.pt", None,
                        recipe=defenses.recipe_for(cfg, validation=None))


# ---------------------------------------------------------------------------------------- decoding
def test_decode_defense_changes_only_how_the_model_answers():
    base = {"method": "greedy", "beam_size": 1, "max_len": 12}
    out = defenses.decode_for({"kind": "decode", "temperature": 0.7, "top_k": 5, "truncate": 4}, base)
    assert out == {"method": "sample", "beam_size": 1, "max_len": 12, "temperature": 0.7, "top_k": 5, "truncate": 4}
    assert base == {"method": "greedy", "beam_size": 1, "max_len": 12}
    assert not defenses.training_side({"kind": "decode"}) and defenses.training_side(DP)
    with pytest.raises(M4IError, match="defenses.d.*samples, truncates"):
        defenses.check("d", {"kind": "decode", "method": "greedy"}, {})


# --------------------------------------------------------------------------- multi-query attacker
def test_a_multi_query_attacker_beats_a_sampling_defense_that_fools_one_query():
    """Toy: a sampling target returns a member's memorised caption (high signal) in one of its 5
    answers at a random position, otherwise an answer like a non-member's. One query sees the
    memorised answer 1 time in 5; the best of 5 sees it always."""
    from sklearn.metrics import roc_auc_score

    from m4i.attacks import run_attack
    from m4i.attacks.queries import attacker_view

    rng = np.random.default_rng(0)

    def table(prefix, n, member):
        rows = []
        for i in range(n):
            hit = rng.integers(5)
            for q in range(5):
                s = rng.normal(0, 1) + (4.0 if member and q == hit else 0.0)
                rows.append({"record_id": f"{prefix}{i}", "query": q, "meteor": s})
        import pandas as pd

        return pd.DataFrame(rows)

    tabs = {k: table(k, 200, k.endswith("in")) for k in ("shadow_in", "shadow_out", "target_in", "target_out")}
    attack = {"signal": "metrics", "method": "threshold", "features": "all"}
    auc = {}
    for queries in (1, 5):
        views = {k: attacker_view(t, queries) for k, t in tabs.items()}
        scores, _ = run_attack(attack | ({"features": ["meteor_qmax"]} if queries > 1 else {}),
                               views["shadow_in"], views["shadow_out"], views["target_in"], views["target_out"], 0)
        auc[queries] = roc_auc_score(scores["label"], scores["score"])
    assert 0.55 < auc[1] < 0.75 and auc[5] > 0.95
