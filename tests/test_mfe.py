"""MFEs (m4i.mfe): both kinds learn to retrieve on a tiny synthetic set; signals are keyed,
complete, reproducible from a saved checkpoint; training is seeded; bad input names itself."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from m4i.io import M4IError, load_torch, read_table, save_torch, write_table
from m4i.mfe import SIGNAL_COLUMNS, mfe_signals, retrieval_quality, train_mfe

torch.set_num_threads(1)

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230),
           "yellow": (230, 220, 40), "white": (240, 240, 240), "purple": (150, 50, 200)}
SIDES = ("left", "right")
SIZE = 24
TEMPLATES = ("a {c} square on the {s}", "{c} box at the {s}", "the {s} side has a {c} block")

PAPER = {"kind": "paper", "features": "toy", "embed": 16, "text_hidden": 32, "epochs": 30,
         "batch_size": 16, "lr": 0.01}
CLIP = {"kind": "open_clip", "pretrained": None, "epochs": 30, "batch_size": 16, "lr": 0.003,
        "model": {"embed_dim": 16, "image_size": SIZE, "vision_width": 32, "vision_layers": 1,
                  "vision_patch": 8, "vision_heads": 2, "text_width": 32, "text_layers": 1,
                  "text_heads": 2, "context_length": 10}}


def _scene(i: int, rng: np.random.Generator) -> tuple[str, str, np.ndarray]:
    colour, side = list(COLOURS)[i % len(COLOURS)], SIDES[(i // len(COLOURS)) % 2]
    img = rng.integers(90, 130, size=(SIZE, SIZE, 3)).astype(np.uint8)  # noisy grey background
    x0 = 2 if side == "left" else SIZE - 12
    y0 = int(rng.integers(2, SIZE - 12))
    img[y0 : y0 + 10, x0 : x0 + 10] = COLOURS[colour]
    return colour, side, img


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """72 records (6 colours x 2 sides), images on disk, and a feature cache encoding the content."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    proj = rng.normal(size=(len(COLOURS) + 2, 24))
    rows, feats = [], []
    for i in range(72):
        colour, side, img = _scene(i, rng)
        Image.fromarray(img).save(root / f"im{i:03d}.png")
        rows.append({"record_id": f"toy:im{i:03d}", "image": f"im{i:03d}.png", "sha256": "0" * 64,
                     "captions": [t.format(c=colour, s=side) for t in TEMPLATES], "attributes": "{}"})
        onehot = np.zeros(len(COLOURS) + 2)
        onehot[list(COLOURS).index(colour)] = 1
        onehot[len(COLOURS) + SIDES.index(side)] = 1
        feats.append(onehot @ proj + 0.1 * rng.normal(size=24))
    manifest = pd.DataFrame(rows)
    features = {"record_ids": list(manifest["record_id"]),
                "features": torch.tensor(np.array(feats), dtype=torch.float32), "spec": {"backbone": "toy"}}
    return {"root": root, "manifest": manifest, "train": manifest.iloc[:48], "heldout": manifest.iloc[48:],
            "features": features}


@pytest.fixture(scope="module")
def paper_ckpt(toy):
    return train_mfe(PAPER, toy["train"], toy["root"], toy["features"], seed=3)


@pytest.fixture(scope="module")
def clip_ckpt(toy):
    return train_mfe(CLIP, toy["train"], toy["root"], None, seed=3)


def _generated(toy) -> pd.DataFrame:
    """'Generated' captions for the held-out records: right for half of them, wrong colour otherwise."""
    held = toy["heldout"].reset_index(drop=True)
    caps = [c[0] if i % 2 == 0 else c[0].replace(c[0].split()[1], "green" if "green" not in c[0] else "red")
            for i, c in enumerate(held["captions"])]
    return pd.DataFrame({"record_id": held["record_id"][::-1].tolist(), "caption": caps[::-1]})


@pytest.mark.parametrize("which", ["paper", "clip"])
def test_mfe_learns_to_retrieve(toy, paper_ckpt, clip_ckpt, which):
    ckpt = paper_ckpt if which == "paper" else clip_ckpt
    q = retrieval_quality(ckpt, toy["heldout"], toy["root"], toy["features"])
    assert q["n"] == 24 and q["chance@1"] == pytest.approx(1 / 24)
    # 12 distinct contents among 24 records: recall@1 can reach 0.5 at most (ties split evenly)
    assert q["recall@1"] >= 0.25, q  # 6x chance
    assert q["recall@5"] >= 0.75, q
    assert len(ckpt["loss"]) == ckpt["settings"]["epochs"]
    assert ckpt["loss"][-1] < ckpt["loss"][0]


@pytest.mark.parametrize("which", ["paper", "clip"])
def test_signals_keyed_complete_and_roundtrip(toy, paper_ckpt, clip_ckpt, which, tmp_path):
    ckpt = paper_ckpt if which == "paper" else clip_ckpt
    gen = _generated(toy)
    sig = mfe_signals(ckpt, gen, toy["manifest"], toy["root"], toy["features"])
    assert list(sig.columns) == SIGNAL_COLUMNS
    assert sig["record_id"].tolist() == gen["record_id"].tolist()
    assert np.isfinite(sig[["cos", "ref_cos"]].to_numpy()).all()
    assert {len(a) for a in sig["absdiff"]} == {ckpt["embed_dim"]}
    assert ckpt["embed_dim"] == (PAPER["embed"] if which == "paper" else CLIP["model"]["embed_dim"])
    # right captions sit closer to their image (and to the references) than wrong-colour ones
    right = sig["record_id"].isin(toy["heldout"]["record_id"].iloc[::2])
    assert sig.loc[right, "cos"].mean() > sig.loc[~right, "cos"].mean()
    assert sig.loc[right, "ref_cos"].mean() > sig.loc[~right, "ref_cos"].mean()
    save_torch(ckpt, tmp_path / "mfe.pt")
    again = mfe_signals(load_torch(tmp_path / "mfe.pt"), gen, toy["manifest"], toy["root"], toy["features"])
    pd.testing.assert_frame_equal(sig, again, check_exact=True)
    write_table(sig, tmp_path / "sig.parquet")  # the workflow's artifact: list column survives
    back = read_table(tmp_path / "sig.parquet")
    assert back["record_id"].tolist() == sig["record_id"].tolist()
    assert np.allclose(np.stack(back["absdiff"]), np.array(sig["absdiff"].tolist()))


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_seeded(toy, paper_ckpt):
    again = train_mfe(PAPER, toy["train"], toy["root"], toy["features"], seed=3)
    assert again["loss"] == paper_ckpt["loss"] and again["vocab"] == paper_ckpt["vocab"]
    assert all(_same_state(again["state_dict"][k], paper_ckpt["state_dict"][k]) for k in ("image", "text"))
    other = train_mfe(PAPER, toy["train"], toy["root"], toy["features"], seed=4)
    assert not _same_state(other["state_dict"]["image"], paper_ckpt["state_dict"]["image"])
    short = {**CLIP, "epochs": 1}
    a, b = (train_mfe(short, toy["train"], toy["root"], None, seed=5) for _ in range(2))
    assert a["loss"] == b["loss"] and _same_state(a["state_dict"], b["state_dict"])


def test_vocab_from_combination_set_only(toy, paper_ckpt, clip_ckpt):
    train_words = {w for caps in toy["train"]["captions"] for c in caps for w in c.split()}
    for ckpt in (paper_ckpt, clip_ckpt):
        assert ckpt["vocab"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
        assert set(ckpt["vocab"][4:]) == train_words


def test_bad_input_names_the_culprit(toy, paper_ckpt):
    with pytest.raises(M4IError, match="unknown MFE kind 'hashing'"):
        train_mfe({**PAPER, "kind": "hashing"}, toy["train"], toy["root"], toy["features"], seed=0)
    with pytest.raises(M4IError, match="unknown key.*'embedd'"):
        train_mfe({**PAPER, "embedd": 3}, toy["train"], toy["root"], toy["features"], seed=0)
    with pytest.raises(M4IError, match="no feature cache"):
        train_mfe(PAPER, toy["train"], toy["root"], None, seed=0)
    partial = {**toy["features"], "record_ids": toy["features"]["record_ids"][:-1],
               "features": toy["features"]["features"][:-1]}
    gen = _generated(toy)
    with pytest.raises(M4IError, match="toy:im071"):
        mfe_signals(paper_ckpt, gen, toy["manifest"], toy["root"], partial)
    with pytest.raises(M4IError, match="toy:nowhere"):
        mfe_signals(paper_ckpt, pd.concat([gen, pd.DataFrame({"record_id": ["toy:nowhere"], "caption": ["x"]})]),
                    toy["manifest"], toy["root"], toy["features"])
    wide = {**toy["features"], "features": torch.zeros(72, 30)}
    with pytest.raises(M4IError, match="24-dim"):
        mfe_signals(paper_ckpt, gen, toy["manifest"], toy["root"], wide)
    with pytest.raises(M4IError, match="model_name"):
        train_mfe({**CLIP, "pretrained": "openai"}, toy["train"], toy["root"], None, seed=0)
    with pytest.raises(M4IError, match="not found"):
        train_mfe({**CLIP, "pretrained": "/nonexistent/clip.pt", "model_name": "RN50"},
                  toy["train"], toy["root"], None, seed=0)
    with pytest.raises(M4IError, match="vision_width"):
        train_mfe({**CLIP, "model": {**CLIP["model"], "vision_heads": 3}}, toy["train"], toy["root"], None, seed=0)
