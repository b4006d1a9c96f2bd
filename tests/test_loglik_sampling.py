"""Gray-box reference log-likelihoods and multi-query (sampled, truncated) decoding."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from m4i.io import M4IError, load_torch
from m4i.models.decoding import decode_batch, normalize_decode, sample, truncate
from m4i.models.features import extract_features
from m4i.models.generate import COLUMNS, generate_captions
from m4i.models.train import load_captioner, train_captioner
from m4i.signals.loglik import reference_loglik
from m4i.text import build_vocab

torch.set_num_threads(1)

COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["circle", "square", "star", "cross"]
SPEC = {"backbone": "resnet18", "layers": ["layer2"], "grid": 2, "input_size": 32, "bn_recalibrate": True,
        "batch_size": 4}


def _dataset(root: Path, n: int = 10) -> pd.DataFrame:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
        core = f"a {COLOURS[i % 4]} {SHAPES[i // 2 % 4]}"
        rows.append({"record_id": f"t:{i}", "image": f"{i}.png", "sha256": "",
                     "captions": [core + " on the left", core + " here" * (1 + i % 2), "there is " + core,
                                  "one " + core + " zzunknown"],  # an out-of-vocabulary word -> <unk>
                     "attributes": json.dumps({})})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    df = _dataset(root)
    vocab = build_vocab([c for caps in df["captions"] for c in caps[:3]], 1)
    return root, df, vocab


@pytest.fixture(scope="module")
def feats(data):
    root, df, _ = data
    return extract_features(df, root, SPEC, seed=0)


LSTM = {"kind": "show_tell", "encoder": {"features": "tiny"}, "embed": 16, "hidden": 32, "layers": 1, "dropout": 0.0,
        "bn_momentum": 0.3, "train": {"epochs": 40, "batch_size": 8, "optimizer": "adam", "lr": 0.01}}
VIT = {"kind": "vit_gpt2", "pretrained": None,
       "encoder": {"image_size": 16, "patch_size": 8, "hidden": 32, "layers": 1, "heads": 2},
       "decoder": {"hidden": 32, "layers": 1, "heads": 2, "max_positions": 12},
       "train": {"epochs": 3, "batch_size": 8, "optimizer": "adam", "lr": 0.003}}


@pytest.fixture(scope="module")
def lstm(data, feats, tmp_path_factory):
    """Trained on the first half of the records only (members), the rest are non-members."""
    root, df, vocab = data
    out = tmp_path_factory.mktemp("lstm") / "m.pt"
    train_captioner(LSTM, df.iloc[:5], root, feats, vocab, 0, out, None)
    return load_torch(out)


@pytest.fixture(scope="module")
def vit(data, tmp_path_factory):
    root, df, vocab = data
    out = tmp_path_factory.mktemp("vit") / "v.pt"
    train_captioner(VIT, df, root, None, vocab, 0, out, None)
    return load_torch(out)


def stepwise_loglik(checkpoint, inputs: torch.Tensor, caption: str) -> float:
    """Independent computation: feed the caption token by token through start/step and add up
    the log-probability of each next token (words, then <end>)."""
    model, vocab = load_captioner(checkpoint)
    ids = vocab.encode(caption)
    with torch.no_grad():
        state = model.start(inputs[None])
        total = 0.0
        for prev, nxt in zip(ids[:-1], ids[1:]):
            logprobs, state = model.step(torch.tensor([prev]), state)
            total += float(logprobs[0, nxt])
    return total / (len(ids) - 1)


# --- gray-box signal -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "vit"])
def test_reference_loglik_equals_stepwise_sum(kind, data, feats, lstm, vit):
    root, df, _ = data
    ckpt, features = (lstm, feats) if kind == "lstm" else (vit, None)
    table = reference_loglik(ckpt, df, root, features, batch_size=3)
    assert list(table.columns) == ["record_id", "ref_loglik", "ref_loglik_mean"]
    assert list(table["record_id"]) == list(df["record_id"])
    assert all(len(v) == 4 for v in table["ref_loglik"])
    if kind == "lstm":
        inputs = features["features"]
    else:
        from m4i.models.features import load_images

        inputs = load_images(df, root, 16)
    for i in (0, 7):
        for j, caption in enumerate(df.at[i, "captions"]):
            assert table.at[i, "ref_loglik"][j] == pytest.approx(stepwise_loglik(ckpt, inputs[i], caption), abs=2e-5)
    np.testing.assert_allclose(table["ref_loglik_mean"], [np.mean(v) for v in table["ref_loglik"]])
    # deterministic, and the same values whatever the batch size
    assert table.equals(reference_loglik(ckpt, df, root, features, batch_size=3))
    other = reference_loglik(ckpt, df, root, features, batch_size=64)
    np.testing.assert_allclose(np.stack(other["ref_loglik"]), np.stack(table["ref_loglik"]), atol=1e-5)


def test_reference_loglik_is_higher_for_members(data, feats, lstm):
    root, df, _ = data
    table = reference_loglik(lstm, df, root, feats)
    members, others = table["ref_loglik_mean"][:5], table["ref_loglik_mean"][5:]
    assert members.min() > others.max() - 0.5 and members.mean() > others.mean() + 0.3
    assert (np.stack(table["ref_loglik"]) <= 0).all()


def test_reference_loglik_bad_input(data, feats, lstm, vit):
    root, df, _ = data
    with pytest.raises(M4IError, match="feature cache"):
        reference_loglik(lstm, df, root, None)
    with pytest.raises(M4IError, match="non-empty list"):
        reference_loglik(lstm, df.assign(captions=[[]] * len(df)), root, feats)
    with pytest.raises(M4IError, match="batch_size"):
        reference_loglik(lstm, df, root, feats, batch_size=0)
    long = df.copy()
    long.at[2, "captions"] = ["a red " * 10]
    with pytest.raises(M4IError, match="record 't:2'.*12 decoder positions"):
        reference_loglik(vit, long, root, None)


# --- sampled decoding on a model with a known distribution -----------------------------------------------
class FixedModel:
    """A step interface whose next-token distribution is always ``probs`` (whatever the prefix)."""

    def __init__(self, probs):
        self.logprobs = torch.log(torch.tensor(probs, dtype=torch.float32))

    def start(self, inputs):
        return torch.zeros(len(inputs))

    def step(self, prev, state):
        return self.logprobs.expand(len(prev), -1).clone(), state


def test_sample_follows_the_tempered_top_k_distribution():
    probs = [0.0, 0.0, 0.1, 0.2, 0.3, 0.4]  # ids 0, 1 never: one of them acts as <end> (id 1)
    model = FixedModel(probs)
    n = 20000
    inputs = torch.zeros(n, 1)
    first = lambda **kw: np.array([ids[0] for ids, _ in sample(model, inputs, 5, 1, 1, seeds=list(range(n)), **kw)])
    for temperature, top_k in ((1.0, 0), (0.5, 0), (2.0, 0), (1.0, 2)):
        tokens = first(temperature=temperature, top_k=top_k)
        p = np.array(probs[2:]) ** (1 / temperature)
        if top_k:
            p[np.argsort(p)[:-top_k]] = 0
        p /= p.sum()
        freq = np.bincount(tokens, minlength=6)[2:] / n
        np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / n))  # 4 sd of a binomial share
        if top_k:
            assert set(tokens) <= {4, 5}
    out = sample(model, inputs[:3], 5, 1, 4, 1.0, 0, seeds=[1, 2, 3])
    assert all(len(ids) == 4 and lps == pytest.approx([float(model.logprobs[t]) for t in ids]) for ids, lps in out)


def test_truncate_keeps_words_and_a_timely_end():
    assert truncate([5, 6, 7, 2], [-1, -2, -3, -4], 2, end_id=2) == ([5, 6], [-1, -2])
    assert truncate([5, 6, 2], [-1, -2, -3], 2, end_id=2) == ([5, 6, 2], [-1, -2, -3])  # ended on its own
    assert truncate([5, 6, 7], [-1, -2, -3], 5, end_id=2) == ([5, 6, 7], [-1, -2, -3])
    assert truncate([5, 6, 7], [-1, -2, -3], None, end_id=2) == ([5, 6, 7], [-1, -2, -3])


def test_normalize_decode_validates_the_sampling_settings():
    d = normalize_decode({"method": "sample", "temperature": 0.7, "top_k": 5, "truncate": 3, "queries": 4})
    assert (d["temperature"], d["top_k"], d["truncate"], d["queries"]) == (0.7, 5, 3, 4)
    assert normalize_decode(None)["queries"] == 1 and normalize_decode(None)["truncate"] is None
    for bad, match in [({"method": "greedy", "queries": 3}, "needs method 'sample'"),
                       ({"method": "beam", "temperature": 0.5}, "'sample' only"),
                       ({"method": "sample", "temperature": 0}, "temperature"),
                       ({"method": "sample", "top_k": -1}, "top_k"),
                       ({"method": "sample", "truncate": 0}, "truncate"),
                       ({"method": "sample", "queries": 0}, "queries"),
                       ({"method": "sample", "seed": 3}, "unknown setting")]:
        with pytest.raises(M4IError, match=match):
            normalize_decode(bad)


# --- sampled decoding through generate_captions ---------------------------------------------------------
SAMPLE = {"method": "sample", "temperature": 1.5, "top_k": 0, "queries": 3, "max_len": 10}


def test_sampled_captions_are_seeded_per_record_and_query(data, feats, lstm):
    root, df, _ = data
    table = generate_captions(lstm, df, root, feats, {**SAMPLE, "batch_size": 4}, seed=7)
    assert list(table.columns) == ["record_id", "query", *COLUMNS[1:]] and table["query"].dtype == np.int64
    assert list(zip(table["record_id"], table["query"])) == [(r, q) for r in df["record_id"] for q in range(3)]
    assert table.equals(generate_captions(lstm, df, root, feats, {**SAMPLE, "batch_size": 4}, seed=7))
    # independent of the batch size and of which records share the batch
    for bs in (1, 7, 64):
        other = generate_captions(lstm, df, root, feats, {**SAMPLE, "batch_size": bs}, seed=7)
        assert list(other["tokens"]) == list(table["tokens"]), bs
        np.testing.assert_allclose(np.concatenate(other["token_logprobs"]), np.concatenate(table["token_logprobs"]),
                                   atol=1e-5)
    subset = generate_captions(lstm, df.iloc[[6, 2]], root, feats, SAMPLE, seed=7)
    assert list(subset["tokens"]) == list(table.set_index(["record_id", "query"]).loc[
        [("t:6", 0), ("t:6", 1), ("t:6", 2), ("t:2", 0), ("t:2", 1), ("t:2", 2)], "tokens"])
    # queries differ, seeds differ
    assert table.groupby("record_id")["caption"].nunique().max() > 1
    assert list(generate_captions(lstm, df, root, feats, SAMPLE, seed=8)["caption"]) != list(table["caption"])
    with pytest.raises(M4IError, match="seed"):
        generate_captions(lstm, df, root, feats, SAMPLE)


def test_top1_sampling_is_greedy_and_truncation_cuts_it(data, feats, lstm, vit):
    root, df, _ = data
    greedy = generate_captions(lstm, df, root, feats, {"method": "greedy", "max_len": 10})
    top1 = generate_captions(lstm, df, root, feats, {"method": "sample", "top_k": 1, "temperature": 3.0,
                                                     "max_len": 10}, seed=0)
    assert list(top1["tokens"]) == list(greedy["tokens"]) and (top1["query"] == 0).all()
    cut = generate_captions(lstm, df, root, feats, {"method": "greedy", "max_len": 10, "truncate": 2})
    assert list(cut.columns) == COLUMNS  # deterministic methods keep one row per record, no query column
    for full, short in zip(greedy["tokens"], cut["tokens"]):
        words = [t for t in full if t != "<end>"]
        assert short == (full if len(words) <= 2 else full[:2])
    vg = generate_captions(vit, df, root, None, {"method": "greedy", "max_len": 8})
    vs = generate_captions(vit, df, root, None, {"method": "sample", "top_k": 1, "max_len": 8, "queries": 2}, seed=1)
    assert list(vs["tokens"][::2]) == list(vg["tokens"]) and list(vs["tokens"][1::2]) == list(vg["tokens"])


def test_decode_batch_sample_needs_seeds(data, feats, lstm):
    model, vocab = load_captioner(lstm)
    with pytest.raises(M4IError, match="seed"):
        decode_batch(model, feats["features"][:2], vocab, normalize_decode({"method": "sample"}))
