"""The Snakemake workflow itself: config validation, dry runs, the data stage and the whole tiny study."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import REPO, TEST_CONFIG, snakemake
from m4i.data.manifest import read_manifest
from m4i.data.splits import check_disjoint
from m4i.names import FIGURE_NAMES, REQUIRED_SPLITS
from m4i.io import load_torch, read_json, read_split, read_table

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["config", "full", "test", "paper"])
def test_dry_run_lists_the_data_rules(tmp_path, name):
    out = snakemake(tmp_path, "-n", config=REPO / "config" / f"{name}.yaml").stdout
    for rule in ("splits", "train_captioner"):
        assert f"rule {rule}:" in out, f"{name}: {rule} missing from the dry run"
    assert re.search(r"^\s*rule attack_\w+:", out, re.M), f"{name}: no attack job in the dry run"
    assert ("rule synthetic_manifest:" in out) or ("rule real_manifest:" in out)


def test_seeds_from_the_command_line(tmp_path):
    # Snakemake reads `--config seeds=[0,2]` as strings; the README's three-seed override must
    # still plan every seed, and a non-number must still fail by key.
    out = snakemake(tmp_path, "-n", "--config", "seeds=[0,2]").stdout
    assert "disjoint-s2.json" in out and "disjoint-s0.json" in out and "disjoint-s1.json" not in out
    proc = snakemake(tmp_path, "-n", "--config", "seeds=[0,x]", check=False)
    assert proc.returncode != 0 and "seeds.1" in proc.stderr + proc.stdout


def test_invalid_config_fails_naming_the_key(tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    del cfg["splits"]["sizes"]["heldout"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", config=bad, check=False)
    assert proc.returncode != 0
    assert "splits.sizes" in proc.stderr + proc.stdout and "heldout" in proc.stderr + proc.stdout

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["scenarios"]["unrestricted"]["shadow"]["dataset"] = "nosuch"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", config=bad, check=False)
    assert proc.returncode != 0 and "scenarios.unrestricted.shadow.dataset" in proc.stderr + proc.stdout


def test_too_small_dataset_fails_with_both_numbers_and_no_output(tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["datasets"]["shapes"]["n_images"] = 50
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "data", config=path, check=False)
    assert proc.returncode != 0
    assert "has 50 records but splits.sizes ask for 176" in proc.stderr + proc.stdout
    # Only the too-small dataset is checked: the other dataset's split job may finish in parallel.
    assert not list((tmp_path / "results" / "test" / "splits" / "shapes").rglob("*"))


def test_data_stage_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        snakemake(d, "data")
    ra, rb = a / "results" / "test", b / "results" / "test"
    splits = sorted(p.relative_to(ra) for p in (ra / "splits").rglob("*.json"))
    assert splits, "no split files written"
    for rel in splits:
        assert (ra / rel).read_bytes() == (rb / rel).read_bytes(), rel
    for png in list((ra / "data" / "shapes" / "images").glob("*.png"))[:20]:
        assert png.read_bytes() == (rb / png.relative_to(ra)).read_bytes()
    manifest, root = read_manifest(ra / "data" / "shapes" / "manifest.parquet")
    split = read_json(ra / "splits" / "shapes" / "disjoint-s0.json")
    check_disjoint(split["splits"])
    assert set(split["splits"]) == set(REQUIRED_SPLITS) | {"val"}  # the test study asks for a val split
    assert set().union(*map(set, split["splits"].values())) <= set(manifest.record_id)
    confounded = read_json(ra / "splits" / "shapes" / "paper_protocol_confounded-s0.json")
    assert confounded["confounded"] and all(r.startswith("doodles:") for r in confounded["splits"]["target_out"])


def test_whole_study_outputs(study):
    """The full tiny study: every attack the plan runs wrote per-record scores and metrics that
    carry its identity."""
    from m4i.config import load_config
    from m4i.plan import Plan

    plan = Plan(load_config(TEST_CONFIG))
    runs = plan.attack_runs()
    assert {(str(p.id), a) for p, a in runs} >= {("unrestricted", "mb-svm"), ("unrestricted", "lira-online-bb"),
                                                 ("unrestricted@dp8-adaptive", "fb-paper-mlp"),
                                                 ("unrestricted@sample-unaware", "mb-logreg-mq")}
    for p, attack in runs:
        d = study / "attacks" / str(p.id) / attack / "s0"
        metrics = json.loads((d / "metrics.json").read_text())
        scores = read_table(d / "scores.parquet")
        assert scores.record_id.is_unique and set(scores.label) == {0, 1}
        assert metrics["metrics"]["n"] == len(scores) == 48
        assert 0.0 <= metrics["metrics"]["auc"] <= 1.0
        scen = metrics["identity"]["scenario"]
        assert scen["defense"] == p.id.defense and scen["attacker"] == p.id.attacker and metrics["scenario"] == str(p.id)
    control = study / "attacks" / "unrestricted-paper-protocol-confounded" / "blind" / "s0" / "metrics.json"
    assert control.exists()


def test_defended_captioners(study):
    """Each defense kind ran as declared: DP-SGD with its guarantee recorded, early stopping on the
    val split only, RelaxLoss, a decoding defense answering from the undefended weights; adaptive
    shadows trained with the defense."""
    split = read_json(study / "splits" / "shapes" / "disjoint-s0.json")["splits"]
    dp = load_torch(study / "models" / "shapes-lstm-target-s0-dp8.pt")
    assert dp["arch"]["dp_compatible"] and dp["recipe"]["privacy_unit"] == "image"
    assert dp["recipe"]["epsilon_achieved"] == pytest.approx(8.0, abs=0.2) and dp["recipe"]["noise_multiplier"] > 0
    assert dp["recipe"]["n_images"] == len(split["target_in"]) == 24
    assert load_torch(study / "models" / "shapes-lstm-shadow0-s0-dp8.pt")["recipe"]["defense"] == "dp_sgd"
    stop = load_torch(study / "models" / "shapes-lstm-target-s0-stop.pt")["recipe"]
    from m4i.io import sha256_json

    assert set(split["val"]).isdisjoint(split["target_out"] + split["heldout"] + split["target_in"])
    assert stop["validation"]["record_ids_sha256"] == sha256_json(sorted(split["val"]))
    loss = pd.read_csv(study / "models" / "shapes-lstm-target-s0-stop.loss.csv")
    assert "val_loss" in loss and stop["best_epoch"] in set(loss.epoch)
    assert load_torch(study / "models" / "shapes-lstm-target-s0-relax.pt")["recipe"]["defense"] == "relaxloss"
    # the decoding defense trains nothing: its captions come from the undefended weights, sampled
    assert not (study / "models" / "shapes-lstm-target-s0-sample.pt").exists()
    caps = read_split(study / "captions" / "shapes-lstm-target-s0-sample.parquet", "target_in")
    assert sorted(caps["query"].unique()) == [0, 1, 2] and len(caps) == 3 * 24
    for name in ("dp8", "stop", "relax", "sample"):
        assert (study / "utility" / f"shapes-lstm-target-s0-{name}.json").exists()


def test_captioner_artifacts(study):
    ckpt = load_torch(study / "models" / "shapes-lstm-target-s0.pt")
    assert {"state_dict", "arch", "vocab", "vocab_sha256"} <= set(ckpt)
    loss = pd.read_csv(study / "models" / "shapes-lstm-target-s0.loss.csv")
    assert list(loss.epoch) == [1, 2, 3]
    members = read_json(study / "models" / "shapes-lstm-target-s0.members.json")
    split = read_json(study / "splits" / "shapes" / "disjoint-s0.json")
    assert members["members"] == split["splits"]["target_in"] and members["role"] == "target"
    assert members["vocab"]["tokens"] == ckpt["vocab"] and members["splits_sha256"]
    caps = read_split(study / "captions" / "shapes-lstm-target-s0.parquet", "target_in")
    # one table per captioner: every split something reads of it, the target's held-out included
    assert set(read_table(study / "captions" / "shapes-lstm-target-s0.parquet")["split"]) >= {
        "target_in", "target_out", "heldout"}
    assert len(caps) == 24 and caps.record_id.is_unique
    assert all(len(t) == len(lp) or len(lp) == len(t) + 1 for t, lp in zip(caps.tokens, caps.token_logprobs))
    utility = read_json(study / "utility" / "shapes-lstm-target-s0.json")
    assert {"heldout", "members", "baseline_fixed_caption"} <= set(utility)
    # both the feature-cache path and the end-to-end path ran
    assert (study / "features" / "tiny" / "shapes.pt").exists()
    # the cache was extracted with the pretrained backbone, not the spec's random init
    cache = load_torch(study / "features" / "tiny" / "shapes.pt")
    assert cache["spec"]["weights"].endswith("backbones/tiny.pt")
    assert list(pd.read_csv(study / "backbones" / "tiny.pretrain.csv").epoch) == [1]
    assert (study / "models" / "doodles-lstme2e-shadow0-s0.pt").exists()


def test_tables_figures_and_report(study, study_workdir):
    attacks = pd.read_csv(study / "tables" / "attacks.csv")
    assert attacks.row_id.is_unique and {"attack:unrestricted:mb-svm:s0", "attack:unrestricted:fb-paper-mlp:s0"} <= set(attacks.row_id)
    paper = pd.read_csv(study / "tables" / "paper_vs_run.csv").set_index("row_id")
    assert paper.loc["paper:mb", "paper_asr_pct"] == 72.5 and paper.loc["paper:fb", "paper_asr_pct"] == 94.83
    # the paper's protocol: the same attacks on the confounded split beside the honest one
    conf = paper.loc["paper:mb:mb-logreg"]
    assert 0 <= conf["run_auc"] <= 1 and 0 <= conf["confounded_auc"] <= 1 and "shadow_out = target_out" in conf["note"]
    # defenses: every defended scenario (defense x attacker model) and the undefended row
    defenses = pd.read_csv(study / "tables" / "defenses.csv").set_index("row_id")
    assert {"defense:unrestricted", "defense:unrestricted@dp8-unaware", "defense:unrestricted@dp8-adaptive"} <= set(defenses.index)
    dp = defenses.loc["defense:unrestricted@dp8-adaptive"]
    assert dp["kind"] == "dp_sgd" and dp["epsilon_target"] == 8.0 and dp["epsilon_achieved"] > 0
    assert 0 <= dp["heldout_cider"] and isinstance(dp["mb_attack"], str)  # chosen on shadows
    for view in ("paper_attacks", "paper_grid", "paper_quality", "defenses", "low_fpr"):
        assert r"\toprule" in (study / "tables" / f"{view}.tex").read_text()
    # low FPR: the calibrated attacks beside the paper's in the unrestricted scenario, each cell
    # with the counts it rests on (24 non-members: 1 % FPR is undefined, and says so)
    low = pd.read_csv(study / "tables" / "low_fpr.csv")
    assert {"lira-offline-gb", "mb-svm", "blind"} <= set(low["attack"]) and set(low["scenario"]) == {"unrestricted"}
    counts = low[low["column"] == "TP / members at FP / non-members"]
    assert set(counts["cell"]) == {"s0:undef."}
    for name in FIGURE_NAMES:
        for ext in ("png", "pdf"):
            assert (study / "figures" / f"{name}.{ext}").stat().st_size > 1000
    report = study_workdir / "report.html"
    snakemake(study_workdir, "--report", str(report))
    html = report.read_text(errors="replace")
    assert "attacks.csv" in html and "roc_linear.png" in html


def test_provenance_of_a_table_row_reaches_the_manifest(study):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "m4i.cli", "provenance", str(study / "tables" / "attacks.csv"), "attack:unrestricted:mb-svm:s0"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "attacks/unrestricted/mb-svm/s0/metrics.json" in out
    assert "models/shapes-lstm-target-s0.pt" in out and "data/shapes/manifest.parquet" in out
    assert "seed 0" in out and "git " in out
    bad = subprocess.run(
        [sys.executable, "-m", "m4i.cli", "provenance", str(study / "tables" / "attacks.csv"), "attack:nope"],
        capture_output=True, text=True,
    )
    assert bad.returncode != 0 and "attack:nope" in bad.stderr + bad.stdout


def test_every_metrics_file_recomputes_exactly(study):
    from m4i.cli import main

    for path in sorted((study / "attacks").rglob("metrics.json")):
        assert main(["recompute", str(path)]) == 0, path
