"""Captioners: features, Show-and-Tell, ViT-GPT2, training/resume, decoding, quality (issue: Captioners)."""
from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from m4i.io import M4IError, load_torch, save_torch, sha256_json
from m4i.models import train as train_mod
from m4i.models.decoding import normalize_decode
from m4i.models.features import build_backbone, extract_features, recalibrate_batchnorm
from m4i.models.generate import generate_captions
from m4i.models import batching
from m4i.models.batching import epoch_batches
from m4i.models.train import load_captioner, rng_state, set_rng_state, train_captioner
from m4i.text import build_vocab

torch.set_num_threads(1)

COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["circle", "square", "star", "cross"]
SMALL_SPEC = {"backbone": "resnet18", "layers": ["layer2", "layer3"], "grid": 2, "input_size": 32,
              "bn_recalibrate": True, "batch_size": 4}


def _dataset(root: Path, n: int = 8) -> pd.DataFrame:
    """n random 16 px PNGs, three captions each, distinct per record."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
        core = f"a {COLOURS[i % 4]} {SHAPES[i // 2 % 4]}"
        rows.append({"record_id": f"t:{i}", "image": f"{i}.png", "sha256": "",
                     "captions": [core + " on the left", core + " here" * (1 + i % 2), "there is " + core],
                     "attributes": json.dumps({"colour": COLOURS[i % 4]})})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    df = _dataset(root)
    vocab = build_vocab([c for caps in df["captions"] for c in caps], 1)
    return root, df, vocab


@pytest.fixture(scope="module")
def feats(data):
    root, df, _ = data
    return extract_features(df, root, SMALL_SPEC, seed=0)


def _lstm_arch(epochs=60, **train):
    return {"kind": "show_tell", "encoder": {"features": "tiny"}, "embed": 32, "hidden": 64, "layers": 1,
            "dropout": 0.0, "bn_momentum": 0.3,
            "train": {"epochs": epochs, "batch_size": 8, "optimizer": "adam", "lr": 0.01, "length_grouped": True,
                      **train}}


@pytest.fixture(scope="module")
def lstm_ckpt(data, feats, tmp_path_factory):
    root, df, vocab = data
    out = tmp_path_factory.mktemp("lstm") / "m.pt"
    loss = train_captioner(_lstm_arch(), df, root, feats, vocab, 0, out, out.with_suffix(".resume.pt"))
    return load_torch(out), loss


# --- features ----------------------------------------------------------------------------------
def test_features_shape_order_and_seeding(data, feats):
    root, df, _ = data
    assert feats["record_ids"] == list(df["record_id"])
    assert feats["features"].shape == (len(df), (128 + 256) * 2 * 2)  # grid 2: position survives
    assert feats["spec"]["weights"] == "none" and torch.isfinite(feats["features"]).all()
    again = extract_features(df, root, SMALL_SPEC, seed=0)
    other = extract_features(df, root, SMALL_SPEC, seed=1)
    assert torch.equal(again["features"], feats["features"])
    assert not torch.allclose(other["features"], feats["features"])


def test_features_local_weights_file_equals_same_init(data, tmp_path):
    import torchvision

    root, df, _ = data
    spec = dict(SMALL_SPEC, bn_recalibrate=False, layers=["layer2"])
    torch.manual_seed(5)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pt")
    from_file = extract_features(df, root, dict(spec, weights=str(tmp_path / "r18.pt")), seed=99)
    from_seed = extract_features(df, root, spec, seed=5)
    assert torch.equal(from_file["features"], from_seed["features"])
    with pytest.raises(M4IError, match="not found"):
        extract_features(df, root, dict(spec, weights=str(tmp_path / "missing.pt")), seed=0)
    with pytest.raises(M4IError, match="layers"):
        extract_features(df, root, dict(spec, layers=["fc7"]), seed=0)
    with pytest.raises(M4IError, match="backbone"):
        extract_features(df, root, dict(spec, backbone="alexnet"), seed=0)


def test_bn_recalibration_matches_data_statistics():
    net = build_backbone({"backbone": "resnet18", "layers": ["layer1"], "input_size": 32}, seed=0)
    x = torch.rand(8, 3, 32, 32) * 3
    assert recalibrate_batchnorm(net, [x[:4], x[4:]]) > 0
    assert not net.training
    with torch.no_grad():
        conv = net.stages["conv1"](x)
    bn = net.stages["bn1"]
    assert torch.allclose(bn.running_mean, conv.mean(dim=(0, 2, 3)), atol=1e-4)


# --- training, decoding, checkpoints ---------------------------------------------------------
def test_overfits_tiny_data(lstm_ckpt, data, feats):
    ckpt, loss = lstm_ckpt
    root, df, _ = data
    assert list(loss.columns) == ["epoch", "train_loss", "seconds"]
    assert loss["train_loss"].iloc[-1] < loss["train_loss"].iloc[0] / 8
    caps = generate_captions(ckpt, df, root, feats, {"method": "greedy", "max_len": 12})
    assert list(caps["record_id"]) == list(df["record_id"])
    reproduced = [c in refs for c, refs in zip(caps["caption"], df["captions"])]
    assert sum(reproduced) >= len(df) - 1, list(caps["caption"])


def test_checkpoint_contract_and_round_trip(lstm_ckpt, data, feats, tmp_path):
    ckpt, _ = lstm_ckpt
    root, df, vocab = data
    assert set(ckpt) == {"state_dict", "arch", "vocab", "vocab_sha256", "epoch", "seed"}
    assert ckpt["vocab"] == vocab and ckpt["vocab_sha256"] == sha256_json(vocab) and ckpt["epoch"] == 60
    save_torch(ckpt, tmp_path / "c.pt")
    again = load_torch(tmp_path / "c.pt")  # weights_only=True
    decode = {"method": "beam", "beam_size": 2, "max_len": 10}
    assert generate_captions(again, df, root, feats, decode).equals(generate_captions(ckpt, df, root, feats, decode))
    model, v = load_captioner(again)
    assert not model.training and v.tokens == vocab
    with pytest.raises(M4IError, match="vocab_sha256"):
        load_captioner(dict(ckpt, vocab=vocab[:-1]))


def _same_up_to_rounding(greedy, beam1):
    """Beam search of width 1 picks greedy's tokens; its log-probs may differ in the last bits
    (greedy drops finished rows from its batch, beam search keeps them)."""
    assert list(greedy.columns) == list(beam1.columns)
    assert greedy.drop(columns="token_logprobs").equals(beam1.drop(columns="token_logprobs"))
    for a, b in zip(greedy["token_logprobs"], beam1["token_logprobs"]):
        assert len(a) == len(b) and np.allclose(a, b, rtol=0, atol=1e-5)


def test_greedy_equals_beam_width_one_and_is_deterministic(lstm_ckpt, data, feats):
    ckpt, _ = lstm_ckpt
    root, df, _ = data
    greedy = generate_captions(ckpt, df, root, feats, {"method": "greedy", "max_len": 12, "batch_size": 3})
    beam1 = generate_captions(ckpt, df, root, feats, {"method": "beam", "beam_size": 1, "max_len": 12, "batch_size": 3})
    _same_up_to_rounding(greedy, beam1)
    assert greedy.equals(generate_captions(ckpt, df, root, feats, {"method": "greedy", "max_len": 12, "batch_size": 3}))
    for toks, lps in zip(greedy["tokens"], greedy["token_logprobs"]):
        assert len(toks) == len(lps) and all(x <= 0 for x in lps)
    short = generate_captions(ckpt, df, root, feats, {"method": "beam", "beam_size": 3, "max_len": 2})
    assert all(len(t) <= 2 for t in short["tokens"])


def test_training_with_cached_features_never_runs_a_backbone(data, feats, tmp_path, monkeypatch):
    import torchvision

    from m4i.models import features as features_mod

    def boom(*a, **k):
        raise AssertionError("backbone used despite the feature cache")

    monkeypatch.setattr(features_mod.FeatureNet, "forward", boom)
    monkeypatch.setattr(features_mod.FeatureNet, "__init__", boom)
    monkeypatch.setattr(torchvision.models, "resnet18", boom)
    monkeypatch.setattr(features_mod, "load_images", boom)
    root, df, vocab = data
    train_captioner(_lstm_arch(epochs=1), df, root, feats, vocab, 0, tmp_path / "m.pt", None)
    generate_captions(load_torch(tmp_path / "m.pt"), df, root, feats, {"max_len": 4})
    with pytest.raises(M4IError, match="feature cache"):
        train_captioner(_lstm_arch(epochs=1), df, root, None, vocab, 0, tmp_path / "n.pt", None)
    with pytest.raises(M4IError, match="feature cache"):
        train_captioner(_lstm_arch(epochs=1), df, root, {**feats, "record_ids": ["x"] * len(df)}, vocab, 0,
                        tmp_path / "n.pt", None)


def test_interrupted_and_resumed_equals_uninterrupted(data, feats, tmp_path, monkeypatch):
    root, df, vocab = data
    arch = _lstm_arch(epochs=4)
    arch["dropout"] = 0.3  # exercises the per-epoch RNG
    full = train_captioner(arch, df, root, feats, vocab, 7, tmp_path / "full.pt", tmp_path / "full.resume.pt")

    def stop(epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_after_epoch", stop)
    with pytest.raises(KeyboardInterrupt):
        train_captioner(arch, df, root, feats, vocab, 7, tmp_path / "cut.pt", tmp_path / "cut.resume.pt")
    assert not (tmp_path / "cut.pt").exists() and load_torch(tmp_path / "cut.resume.pt")["epoch"] == 2
    assert not (tmp_path / "full.resume.pt").exists()  # removed once the final checkpoint is written
    monkeypatch.setattr(train_mod, "_after_epoch", lambda epoch: None)
    # Other settings do not pick up a foreign resume state: a different seed starts afresh.
    shutil.copy(tmp_path / "cut.resume.pt", tmp_path / "foreign.resume.pt")
    other = train_captioner(arch, df, root, feats, vocab, 8, tmp_path / "o.pt", tmp_path / "foreign.resume.pt")
    assert len(other) == 4 and other["train_loss"].iloc[0] != full["train_loss"].iloc[0]
    resumed = train_captioner(arch, df, root, feats, vocab, 7, tmp_path / "cut.pt", tmp_path / "cut.resume.pt")
    a, b = load_torch(tmp_path / "full.pt")["state_dict"], load_torch(tmp_path / "cut.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["train_loss"].tolist() == full["train_loss"].tolist()
    assert not (tmp_path / "cut.resume.pt").exists()


def test_captions_per_image_samples_seeded_per_epoch(data, feats, tmp_path):
    pair_rec = np.repeat(np.arange(4), 5)  # 4 images x 5 captions
    one = batching.epoch_pairs(pair_rec, 2, seed=0, epoch=1)
    assert np.bincount(pair_rec[one]).tolist() == [2, 2, 2, 2]
    assert np.array_equal(one, batching.epoch_pairs(pair_rec, 2, seed=0, epoch=1))
    assert not np.array_equal(one, batching.epoch_pairs(pair_rec, 2, seed=0, epoch=2))
    assert np.array_equal(batching.epoch_pairs(pair_rec, None, 0, 1), np.arange(20))
    assert np.array_equal(batching.epoch_pairs(pair_rec, 9, 0, 1), np.arange(20))
    with pytest.raises(M4IError, match="captions_per_image"):
        train_mod.train_settings({"train": {"captions_per_image": 0}})
    root, df, vocab = data
    loss = train_captioner(_lstm_arch(epochs=2, captions_per_image=1), df, root, feats, vocab, 0, tmp_path / "m.pt", None)
    assert loss["epoch"].tolist() == [1, 2]


def test_end_to_end_encoder_trains(data, tmp_path):
    root, df, vocab = data
    arch = {"kind": "show_tell", "embed": 16, "hidden": 32, "bn_momentum": 0.3,
            "encoder": {"backbone": "resnet18", "weights": "none", "trainable": True, "input_size": 32,
                        "layers": ["layer1"]},
            "train": {"epochs": 3, "batch_size": 8, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9}}
    loss = train_captioner(arch, df, root, None, vocab, 0, tmp_path / "e.pt", None)
    assert loss["train_loss"].iloc[-1] < loss["train_loss"].iloc[0]
    ckpt = load_torch(tmp_path / "e.pt")
    init = build_backbone({"backbone": "resnet18", "layers": ["layer1"], "input_size": 32},
                          train_mod.derive_seed(0, "backbone"))
    assert not torch.equal(ckpt["state_dict"]["backbone.stages.conv1.weight"], init.stages.conv1.weight)
    caps = generate_captions(ckpt, df, root, None, {"max_len": 6})
    assert len(caps) == len(df)
    frozen = dict(arch, encoder=dict(arch["encoder"], trainable=False, bn_recalibrate=True))
    train_captioner(frozen, df, root, None, vocab, 0, tmp_path / "f.pt", None)
    assert torch.equal(load_torch(tmp_path / "f.pt")["state_dict"]["backbone.stages.conv1.weight"],
                       init.stages.conv1.weight)


def test_epoch_batches_grouped_seeded_and_complete():
    lengths = np.array([5, 7, 5, 9, 7, 5, 7, 9, 5, 6, 6])
    b1 = epoch_batches(lengths, 3, True, seed=0, epoch=1)
    assert sorted(np.concatenate(b1).tolist()) == list(range(len(lengths)))
    assert all(len(b) > 1 for b in b1)
    assert sum(len(set(lengths[b])) for b in b1) <= len(b1) + 3  # almost no mixed lengths
    assert [b.tolist() for b in b1] == [b.tolist() for b in epoch_batches(lengths, 3, True, seed=0, epoch=1)]
    assert [b.tolist() for b in b1] != [b.tolist() for b in epoch_batches(lengths, 3, True, seed=0, epoch=2)]
    assert [len(b) for b in epoch_batches(lengths[:7], 3, False, 0, 1)] == [3, 4]  # no lone pair


def test_image_batches_keep_images_whole_seeded_and_complete():
    pair_rec = np.repeat(np.arange(7), 3)  # 7 images x 3 captions
    b1 = batching.image_grouped_batches(pair_rec, 7, seed=0, epoch=1)
    assert sorted(np.concatenate(b1).tolist()) == list(range(len(pair_rec)))
    assert all(len(b) <= 7 and len(b) % 3 == 0 for b in b1)  # whole images, within the size
    assert all(len(set(pair_rec[b])) == len(b) // 3 for b in b1)
    again = batching.image_grouped_batches(pair_rec, 7, seed=0, epoch=1)
    assert [b.tolist() for b in b1] == [b.tolist() for b in again]
    assert [b.tolist() for b in b1] != [b.tolist() for b in batching.image_grouped_batches(pair_rec, 7, 0, 2)]
    lone = batching.image_grouped_batches(np.array([0, 0, 1, 1, 2]), 2, 0, 1)
    assert all(len(b) > 1 for b in lone)  # a lone pair joins a neighbour


def test_rng_state_round_trip(tmp_path):
    import random

    save_torch(rng_state(), tmp_path / "rng.pt")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_torch(tmp_path / "rng.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_bad_settings_raise():
    with pytest.raises(M4IError, match="method"):
        normalize_decode({"method": "nucleus"})
    with pytest.raises(M4IError, match="beam_size"):
        normalize_decode({"method": "beam", "beam_size": 0})
    with pytest.raises(M4IError, match="kind"):
        train_mod.build_captioner({"kind": "rnn"}, train_mod.make_vocab(build_vocab(["a b"], 1)), 4, 0)


# --- transformer captioner ---------------------------------------------------------------------
def _vit_arch(**extra):
    return {"kind": "vit_gpt2", "pretrained": None,
            "encoder": {"image_size": 16, "patch_size": 8, "hidden": 32, "layers": 1, "heads": 2},
            "decoder": {"hidden": 32, "layers": 1, "heads": 2, "max_positions": 24},
            "train": {"epochs": 2, "batch_size": 8, "optimizer": "adam", "lr": 0.003}, **extra}


def test_vit_gpt2_trains_decodes_and_reloads(data, tmp_path):
    root, df, vocab = data
    loss = train_captioner(_vit_arch(), df, root, None, vocab, 0, tmp_path / "v.pt", tmp_path / "v.resume.pt")
    assert loss["train_loss"].iloc[-1] < loss["train_loss"].iloc[0]
    ckpt = load_torch(tmp_path / "v.pt")
    greedy = generate_captions(ckpt, df, root, None, {"method": "greedy", "max_len": 8})
    beam1 = generate_captions(ckpt, df, root, None, {"method": "beam", "beam_size": 1, "max_len": 8})
    _same_up_to_rounding(greedy, beam1)
    assert len(greedy) == len(df)
    assert generate_captions(ckpt, df, root, None, {"method": "beam", "beam_size": 2, "max_len": 8}).shape[0] == len(df)
    with pytest.raises(M4IError, match="max_len"):
        generate_captions(ckpt, df, root, None, {"max_len": 40})
    # Encoding each distinct image once (image_index) gives the logits of repeated images.
    model, _ = load_captioner(ckpt)
    images, tokens = torch.randn(2, 3, 16, 16), torch.randint(4, len(vocab), (5, 6))
    index = torch.tensor([0, 1, 1, 0, 1])
    with torch.no_grad():
        assert torch.allclose(model(images, tokens, index), model(images[index], tokens), atol=1e-5)
    grouped = _vit_arch()
    grouped["train"].update(epochs=1, image_grouped=True, captions_per_image=2)
    loss = train_captioner(grouped, df, root, None, vocab, 0, tmp_path / "g.pt", None)
    assert np.isfinite(loss["train_loss"]).all()


def test_vit_gpt2_pretrained_path(data, tmp_path):
    root, df, vocab = data
    with pytest.raises(M4IError, match="pretrained"):
        train_captioner(_vit_arch(pretrained=str(tmp_path / "no-such-model")), df, root, None, vocab, 0,
                        tmp_path / "x.pt", None)
    # A local folder written by save_pretrained (any vocabulary size) loads, resized to ours.
    small = train_mod.build_captioner(_vit_arch(), train_mod.make_vocab(vocab + ["extra"]), None, 3)
    small.model.save_pretrained(tmp_path / "hf")
    arch = _vit_arch(pretrained=str(tmp_path / "hf"))
    arch["train"]["epochs"] = 1
    train_captioner(arch, df, root, None, vocab, 0, tmp_path / "p.pt", None)
    ckpt = load_torch(tmp_path / "p.pt")
    assert "model_config" in ckpt
    model, _ = load_captioner(ckpt)
    assert model.model.config.decoder.vocab_size == len(vocab)


# --- quality -----------------------------------------------------------------------------------
def test_caption_quality(data, monkeypatch):
    _, df, _ = data
    calls = []

    def corpus_scores(candidates, references, idf=None):
        calls.append(dict(candidates))
        exact = np.mean([candidates[r] in references[r] for r in candidates])
        return {"bleu4": float(exact), "cider": 2 * float(exact)}, pd.DataFrame()

    fake_metrics = types.SimpleNamespace(corpus_scores=corpus_scores, pretokenize=lambda texts: None)
    fake_synth = types.SimpleNamespace(
        content_accuracy=lambda caption, attrs: {"colour": float(attrs["colour"] in caption)})
    monkeypatch.setitem(sys.modules, "m4i.signals.caption_metrics", fake_metrics)
    monkeypatch.setitem(sys.modules, "m4i.data.synthetic", fake_synth)
    from m4i.models.quality import caption_quality

    members, held = df.iloc[:5], df.iloc[5:]
    member_caps = pd.DataFrame({"record_id": members["record_id"], "caption": [c[0] for c in members["captions"]]})
    held_caps = pd.DataFrame({"record_id": held["record_id"], "caption": ["a blue star"] * len(held)})
    q = caption_quality(held_caps, member_caps, df, members)
    assert len(calls) == 3  # one corpus call per table: held-out, members, fixed-caption baseline
    assert q["members"]["bleu4"] == 1.0 and q["heldout"]["bleu4"] == 0.0
    assert q["gap"] == {"bleu4": 1.0, "cider": 2.0}
    base = q["baseline_fixed_caption"]
    assert base["caption"] in {c for caps in members["captions"] for c in caps}
    assert set(base["heldout"]) == {"bleu4", "cider"}
    assert q["content_accuracy"]["members"]["colour"] == 1.0
    assert q["content_accuracy"]["heldout"]["colour"] == pytest.approx(1 / 3)
    # equal-size corpora: 3 of the 5 members (seeded), all 3 held-out records
    assert (q["n_heldout"], q["n_members"], q["n_members_total"]) == (3, 3, 5)
    assert len(calls[1]) == 3 and set(calls[1]) <= set(members["record_id"])
    assert caption_quality(held_caps, member_caps, df, members)["members"] == q["members"]  # seeded
    with pytest.raises(M4IError, match="not in the manifest"):
        caption_quality(held_caps.assign(record_id=["zz:0", "zz:1", "zz:2"]), member_caps, df, members)


def test_fixed_caption_bleu4_is_pycocoevalcaps_bleu(data):
    """The fixed-caption baseline's BLEU-4 (references cooked once for all candidates) against
    pycocoevalcap's Bleu(4).compute_score, one call per candidate (the independent computation)."""
    from pycocoevalcap.bleu.bleu import Bleu

    from m4i.models.quality import best_fixed_caption, fixed_caption_bleu4
    from m4i.text import tokenize

    _, df, _ = data
    refs = {str(r): [str(c) for c in caps] for r, caps in zip(df["record_id"], df["captions"])}
    refs[str(df["record_id"].iloc[0])] = ["A red circle, at the left!", "a red circle"]  # case, punctuation
    pool = sorted({c for caps in refs.values() for c in caps})[:12] + ["a", "red red red red red"]
    norm = lambda c: " ".join(tokenize(c))  # noqa: E731
    want = [Bleu(4).compute_score({r: [norm(c) for c in cs] for r, cs in refs.items()},
                                  {r: [norm(cap)] for r in refs}, verbose=0)[0][3] for cap in pool]
    assert fixed_caption_bleu4(pool, refs) == want
    assert len(set(want)) > 3  # the candidates really differ
    caption, score = best_fixed_caption(df, n_candidates=50, seed=0)
    everything = sorted({str(c) for caps in df["captions"] for c in caps})
    assert len(everything) <= 50 and score == max(fixed_caption_bleu4(everything, {
        str(r): [str(c) for c in caps] for r, caps in zip(df["record_id"], df["captions"])}))
