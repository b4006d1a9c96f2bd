"""Sidecars along a fabricated chain (raw -> manifest -> splits -> model -> metrics -> table),
their trace, staleness, and the reviewer CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from m4i import CPU_PINS, cli
from m4i.identity import ScenarioId, attack_identity
from m4i.io import M4IError, write_json
from m4i.provenance import artifact_sha256, format_trace, trace, write_sidecar
from m4i.report.tables import build_tables
CFG = {"splits": {"protocol": "disjoint"}}


def identity_fields(scenario, attack):
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    return {"attack": attack_identity(attack, cfg["attacks"][attack]).fields(),
            "scenario": ScenarioId.parse(scenario).fields()}


def metrics_doc(scenario, attack, seed, asr, auc):
    ci = {"auc": [auc - 0.1, auc + 0.1], "attack_success_rate": [asr - 0.1, asr + 0.1],
          "n_bootstrap": 10, "seed": 0}
    return {"attack": attack, "scenario": scenario, "seed": seed, "uses_references": True,
            "identity": identity_fields(scenario, attack),
            "target_model": "shapes-lstm-target-s0", "shadow_model": "shapes-lstm-shadow0-s0",
            "decision": {"threshold": 0.5},
            "metrics": {"n": 10, "attack_success_rate": asr, "auc": auc, "ci95": ci,
                        "tpr_at_fpr": {"0.01": {"defined": False, "reason": "n too small"}},
                        "roc": {"fpr": [0, 1], "tpr": [0, 1], "thresholds": [1, 0]}}}


@pytest.fixture()
def chain(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "captions.txt").write_text("img1\ta red circle\n")
    (raw / "config.yaml").write_text("study: default\n")
    root = tmp_path / "results" / "default"

    def run(rule, outputs, inputs, seed=None, wildcards=None):
        for o in outputs:  # the rule writes its outputs first, then the sidecars
            if not (root / o).exists():
                (root / o).parent.mkdir(parents=True, exist_ok=True)
                (root / o).write_text(f"{rule} output {o}\n")
        write_sidecar(root, rule, [str(root / o) for o in outputs],
                      [str(p) if str(p).startswith(str(tmp_path)) else str(root / p) for p in inputs],
                      params={"threads": 1}, wildcards=wildcards or {}, config_subset=CFG, seed=seed)

    run("manifest", ["data/shapes/manifest.parquet"], [raw / "captions.txt", raw / "config.yaml"],
        wildcards={"dataset": "shapes"})
    run("splits", ["splits/shapes/disjoint-s0.json"], ["data/shapes/manifest.parquet"], seed=0)
    # the model reads the manifest too: a DAG, the manifest must appear once in the trace
    run("train", ["models/shapes-lstm-target-s0.pt"],
        ["splits/shapes/disjoint-s0.json", "data/shapes/manifest.parquet"], seed=7)
    metrics = root / "attacks/unrestricted/mb-svm/s0/metrics.json"
    write_json(metrics_doc("unrestricted", "mb-svm", 0, 0.7, 0.8), metrics)
    run("attack", ["attacks/unrestricted/mb-svm/s0/metrics.json"],
        ["models/shapes-lstm-target-s0.pt"], seed=0,
        wildcards={"scenario": "unrestricted", "attack": "mb-svm", "seed": "0"})
    build_tables([str(metrics)], [], root, root / "tables", {"study": "default"})
    run("tables", ["tables/attacks.csv"], ["attacks/unrestricted/mb-svm/s0/metrics.json"])
    return root, raw


def test_sidecar_content(chain):
    root, raw = chain
    side = json.loads((root / "provenance/splits/shapes/disjoint-s0.json.json").read_text())
    assert side["rule"] == "splits" and side["seed"] == 0 and side["config"] == CFG
    assert side["sha256"] == artifact_sha256(root / "splits/shapes/disjoint-s0.json")
    (inp,) = side["inputs"]
    assert inp["path"] == "data/shapes/manifest.parquet"
    assert inp["sidecar"] == "provenance/data/shapes/manifest.parquet.json"
    assert {"commit", "dirty"} <= set(side["git"]) and "pandas" in side["packages"]
    assert side["packages"]["pandas"] is not None and side["hardware"]["cpu_count"]
    # the CPU code paths the numbers came from (m4i.CPU_PINS), as this process ran with them
    assert side["hardware"]["cpu_pins"] == {name: os.environ.get(name) for name in CPU_PINS}
    man = json.loads((root / "provenance/data/shapes/manifest.parquet.json").read_text())
    assert all(i["sidecar"] is None for i in man["inputs"])  # raw inputs


def test_trace_reaches_raw_inputs_once(chain):
    root, raw = chain
    tree = trace(root, "tables/attacks.csv")
    assert tree["ok"] and tree["order"][0] == "tables/attacks.csv"
    assert tree["order"].count("data/shapes/manifest.parquet") == 1
    assert tree["nodes"]["models/shapes-lstm-target-s0.pt"]["seed"] == 7
    assert sorted(tree["raw"]) == sorted([str(raw / "captions.txt"), str(raw / "config.yaml")])
    text = format_trace(tree)
    assert "rule train  seed 7  git " in text and "raw inputs:" in text
    assert text.index("data/shapes/manifest.parquet") < text.index("raw inputs:")
    assert "captions.txt" in text.split("raw inputs:")[1]


def test_trace_flags_modified_raw_input_and_artifact(chain):
    root, raw = chain
    (raw / "captions.txt").write_text("img1\ta blue square\n")
    tree = trace(root, "attacks/unrestricted/mb-svm/s0/metrics.json")
    assert not tree["ok"]
    assert [(s["input"], s["consumer"]) for s in tree["stale"]] == [
        (str(raw / "captions.txt"), "data/shapes/manifest.parquet")]
    assert "STALE: " in format_trace(tree) and "[STALE]" in format_trace(tree)
    # an artifact rewritten after its sidecar: its own record and its consumer are flagged
    (root / "splits/shapes/disjoint-s0.json").write_text("changed\n")
    stale = {(s["input"], s["consumer"]) for s in trace(root, "models/shapes-lstm-target-s0.pt")["stale"]}
    assert ("splits/shapes/disjoint-s0.json", None) in stale
    assert ("splits/shapes/disjoint-s0.json", "models/shapes-lstm-target-s0.pt") in stale


def test_write_sidecar_refuses_missing_output_and_hashes_directories(tmp_path):
    root = tmp_path / "res"
    with pytest.raises(M4IError, match="does not exist yet"):
        write_sidecar(root, "r", [str(root / "nope.json")], [], {}, {}, {}, None)
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "a.png").write_bytes(b"a")
    (written,) = write_sidecar(root, "images", str(root / "imgs"), [], {}, {}, {}, 3)
    assert written.endswith("provenance/imgs.json")
    before = json.loads(open(written).read())["sha256"]
    (root / "imgs" / "b.png").write_bytes(b"b")
    assert artifact_sha256(root / "imgs") != before
    with pytest.raises(M4IError, match="not under the results root"):
        write_sidecar(root / "imgs", "r", [str(tmp_path)], [], {}, {}, {}, None)


def test_cli_provenance_prints_chain(chain, capsys):
    root, raw = chain
    rc = cli.main(["provenance", str(root / "tables/attacks.csv"), "attack:unrestricted:mb-svm:s0"])
    out = capsys.readouterr().out
    assert rc == 0
    for needle in ("attacks/unrestricted/mb-svm/s0/metrics.json", "models/shapes-lstm-target-s0.pt",
                   "splits/shapes/disjoint-s0.json", "data/shapes/manifest.parquet", "captions.txt"):
        assert needle in out
    rc = cli.main(["provenance", str(root / "tables/attacks.csv"), "attack:unrestricted:mb-svm:s0", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)[0]["artifact"].endswith("metrics.json")
    (raw / "config.yaml").write_text("study: other\n")
    assert cli.main(["provenance", str(root / "tables/attacks.md"), "attack:unrestricted:mb-svm:s0"]) == 3


def test_cli_unknown_row_id(chain, capsys):
    root, _ = chain
    rc = cli.main(["provenance", str(root / "tables/attacks.csv"), "attack:nope:s9"])
    err = capsys.readouterr().err
    assert rc == 2 and "attack:nope:s9" in err and "attacks.csv" in err and "1 row ids" in err


def test_cli_recompute_roundtrip(tmp_path, capsys):
    evaluation = pytest.importorskip(
        "m4i.evaluation", reason="m4i.evaluation (another engineer's module) not written yet")
    import numpy as np
    import pandas as pd

    from m4i.io import write_table

    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 40)
    scores = rng.normal(labels * 0.8, 1.0)
    d = tmp_path / "attacks/unrestricted/mb-svm/s0"
    write_table(pd.DataFrame({"record_id": [f"r{i}" for i in range(80)], "label": labels,
                              "score": scores, "prediction": (scores >= 0.4).astype(int)}),
                d / "scores.parquet")
    m = evaluation.evaluate(labels, scores, 0.4, fpr_targets=(0.01, 0.001), n_bootstrap=50, seed=3)
    write_json({"attack": "mb-svm", "scenario": "unrestricted", "seed": 0,
                "decision": {"rule": "score >= threshold", "threshold": 0.4}, "metrics": m},
               d / "metrics.json")
    assert cli.main(["recompute", str(d / "metrics.json")]) == 0
    doc = json.loads((d / "metrics.json").read_text())
    doc["metrics"]["auc"] += 1e-12
    write_json(doc, d / "metrics.json")
    assert cli.main(["recompute", str(d / "metrics.json")]) == 1
    assert "metrics.auc" in capsys.readouterr().out
