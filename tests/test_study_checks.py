"""Checks that fail when a study is broken, not only when a function is: a split leak caught by
the blind baseline at a size where chance is not noise, and whole studies on real-image datasets
(a COCO-format dataset made of two caption files; the shared Flickr8k subset when present)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import TEST_CONFIG, snakemake

pytestmark = pytest.mark.integration

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"


def _metrics(study: Path, scenario: str, attack: str) -> dict:
    return json.loads((study / "attacks" / scenario / attack / "s0" / "metrics.json").read_text())["metrics"]


def test_blind_baseline_catches_a_split_leak(tmp_path):
    """The blind classifier (image and reference statistics only, never the captioner) must be at
    chance on the honest split and near-perfect on the confounded one (members from one dataset,
    non-members from another). 200 members and 200 non-members: the null AUC's sd is
    sqrt((n1 + n2 + 1) / (12 n1 n2)) = 0.029, so |AUC - 0.5| < 0.12 is a 4-sd band, and a leak
    that lets AUC reach 0.95 cannot hide in the noise. Only data, splits, blind signals and the
    attack run (no captioner is trained)."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["study"] = "leak"
    cfg["datasets"]["shapes"]["n_images"] = 820
    cfg["datasets"]["doodles"]["n_images"] = 220  # the confounded protocol's non-members only
    cfg["splits"]["sizes"] = {"target_in": 200, "target_out": 200, "shadow_in": 200, "shadow_out": 200,
                              "mfe": 10, "heldout": 10}
    cfg["splits"]["confounded_control"] = {"dataset": "shapes", "nonmember_dataset": "doodles", "attacks": ["blind"]}
    cfg["scenarios"] = {"unrestricted": {"target": {"dataset": "shapes", "arch": "lstm"},
                                         "shadow": {"dataset": "shapes", "arch": "lstm"}, "attacks": ["blind"]}}
    for key in ("defenses", "defense_evaluation"):
        cfg.pop(key, None)
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump(cfg))
    honest, confounded = "unrestricted", "unrestricted-paper-protocol-confounded"
    snakemake(tmp_path, *(f"results/leak/attacks/{s}/blind/s0/metrics.json" for s in (honest, confounded)),
              config=path)
    study = tmp_path / "results" / "leak"
    assert not (study / "models").exists()  # the blind baseline never needs a captioner
    h, c = _metrics(study, honest, "blind"), _metrics(study, confounded, "blind")
    assert (h["n_members"], h["n_nonmembers"]) == (200, 200) == (c["n_members"], c["n_nonmembers"])
    assert abs(h["auc"] - 0.5) < 0.12, f"blind baseline on the honest split: AUC {h['auc']:.3f} (a leak?)"
    assert c["auc"] > 0.95, f"blind baseline on the confounded split: AUC {c['auc']:.3f} (the control lost its leak?)"
    assert h["ci95"]["auc"][0] < 0.5 + 0.12 and c["ci95"]["auc"][0] > 0.9


# --- whole studies on real-image datasets ---------------------------------------------------------
def _coco_fixture(root: Path, n: int = 120) -> dict:
    """A COCO-format dataset from synthetic scenes, in two caption files and two image folders
    (as COCO train + val), JPEG images, five captions per image."""
    from m4i.data.synthetic import generate

    recs = generate(root / "_png", n, 32, "shapes", 5, "tmp")
    files = {"train": {"images": [], "annotations": []}, "val": {"images": [], "annotations": []}}
    for i, rec in enumerate(recs):
        part = "train" if i < int(0.7 * n) else "val"
        name = f"{i:012d}.jpg"
        (root / part).mkdir(parents=True, exist_ok=True)
        Image.open(root / "_png" / rec["image"]).convert("RGB").save(root / part / name, quality=95)
        files[part]["images"].append({"id": i, "file_name": name, "width": 32, "height": 32})
        files[part]["annotations"] += [{"id": 10 * i + k, "image_id": i, "caption": c} for k, c in enumerate(rec["captions"])]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for part, data in files.items():
        (root / "annotations" / f"captions_{part}2017.json").write_text(json.dumps(data))
    return {"kind": "coco", "root": str(root), "images": ["train", "val"],
            "captions": ["annotations/captions_train2017.json", "annotations/captions_val2017.json"]}


def _real_study_config(datasets: dict, scenarios: dict) -> dict:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["study"] = "real"
    cfg["datasets"] = datasets
    cfg["splits"] = {"protocol": "disjoint",
                     "sizes": {"target_in": 20, "target_out": 20, "shadow_in": 20, "shadow_out": 20, "mfe": 20, "heldout": 12}}
    cfg["features"]["tiny"].pop("pretrain")  # real photos: a random backbone, batch norm recalibrated
    cfg["captioners"] = {"lstm": cfg["captioners"]["lstm"]}
    cfg["mfe"] = {"paper": cfg["mfe"]["paper"]}
    cfg["attacks"] = {k: cfg["attacks"][k] for k in ("mb-threshold", "mb-logreg", "fb-paper-mlp", "blind")}
    cfg["scenarios"] = scenarios
    for key in ("defenses", "defense_evaluation"):
        cfg.pop(key, None)
    return cfg


def test_whole_study_on_real_image_datasets(tmp_path):
    """COCO (two caption files = one dataset) end to end; with the shared Flickr8k subset present,
    a Flickr8k target attacked from COCO shadows in the same run."""
    coco = _coco_fixture(tmp_path / "coco")
    datasets = {"coco": coco}
    scenarios = {"unrestricted": {"target": {"dataset": "coco", "arch": "lstm"}, "shadow": {"dataset": "coco", "arch": "lstm"}}}
    if FLICKR.is_dir():
        datasets["flickr8k"] = {"kind": "flickr8k", "root": str(FLICKR), "captions": "captions.txt", "images": "images"}
        scenarios["data-restricted"] = {"target": {"dataset": "flickr8k", "arch": "lstm"},
                                        "shadow": {"dataset": "coco", "arch": "lstm"}}
    cfg = _real_study_config(datasets, scenarios)
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    snakemake(work, config=path)
    study = work / "results" / "real"

    from m4i.data.manifest import read_manifest

    manifest, root = read_manifest(study / "data" / "coco" / "manifest.parquet")
    assert len(manifest) == 120 and root == Path(coco["root"]).resolve()  # read in place
    assert {im.split("/")[0] for im in manifest["image"]} == {"train", "val"}  # one dataset, both files
    assert not list((study / "data" / "coco").glob("**/*.jpg"))  # nothing copied
    for scenario in scenarios:
        for attack in cfg["attacks"]:
            m = _metrics(study, scenario, attack)
            assert (m["n_members"], m["n_nonmembers"]) == (20, 20) and 0.0 <= m["auc"] <= 1.0
    tables = pd.read_csv(study / "tables" / "attacks.csv")
    assert {f"attack:{s}:mb-logreg:s0" for s in scenarios} <= set(tables.row_id)
    assert (study / "figures" / "roc_linear.png").stat().st_size > 1000
    if FLICKR.is_dir():
        f8k, _ = read_manifest(study / "data" / "flickr8k" / "manifest.parquet")
        assert len(f8k) == 1000 and f8k["captions"].map(len).eq(5).all()


@pytest.mark.skipif(not FLICKR.is_dir(), reason="shared Flickr8k subset not present")
def test_flickr8k_config_plans_the_whole_study(tmp_path):
    """config/flickr8k.yaml (run from the repository root, where its relative root resolves) asks
    for every stage: splits, features, captioners, MB and FB attacks, blind baseline, tables, figures."""
    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "flickr8k.yaml").read_text())
    assert (REPO / cfg["datasets"]["flickr8k"]["root"]).resolve() == FLICKR.resolve()
    assert sum(cfg["splits"]["sizes"].values()) <= 1000
    cfg["datasets"]["flickr8k"]["root"] = str(FLICKR)
    path = tmp_path / "f8k.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", config=path).stdout
    for rule in ("real_manifest", "splits", "features", "train_captioner", "generate_captions", "metric_signals",
                 "train_mfe", "mfe_signals", "blind_signals", "attack_unrestricted", "caption_quality", "tables", "figures"):
        assert f"rule {rule}:" in out, rule
    families = {a["signal"] for a in cfg["attacks"].values()}
    assert {"metrics", "mfe", "blind"} <= families
