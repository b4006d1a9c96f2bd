"""The benchmark script keeps working as the package changes (it is not run by the test suite
otherwise): three of its benchmarks on tiny inputs. No timing is asserted."""
import importlib.util
import sys
import tempfile
from pathlib import Path

import yaml

from conftest import REPO


def _load(name):
    """A script of benchmarks/ as a module, registered in sys.modules under its name."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_metric_and_dp_benchmarks_run_on_tiny_inputs():
    bench = _load("run_benchmarks")
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    with tempfile.TemporaryDirectory() as d:
        manifest, _ = bench._dataset(Path(d), 8, 16)
        m = bench.bench_metrics(manifest, n=6, sample=1)
        manifest, root = bench._dataset(Path(d) / "dp", 40, 48)
        img = bench.bench_dp_images(default, manifest, root, Path(d), repeats=1)
    # one DP-SGD step's per-image gradients: grouped by image = per caption, summed (independently)
    assert img["max_abs_diff"] < 1e-5 and img["images"] == 32 and img["rows"] == 5 * img["images"]
    assert m["records"] == 6 and m["corpus_s"] > 0 and m["per_record_each_s"] > 0
    dp = bench.bench_dp_lstm(default, repeats=1, length=4)
    assert dp["max_abs_diff"] < 1e-4 and dp["rows"] == 5 * next(
        c["batch_images"] for c in default["defenses"].values() if c["kind"] == "dp_sgd")


def test_study_summary_splits_job_time_by_rule_and_by_part_of_the_study(tmp_path):
    """Benchmark files in a study's layout: each job lands in its rule and in the part of the
    study its id names (sums checked against the seconds written here, not recomputed)."""
    summary = _load("study_summary")
    jobs = {  # path under benchmarks/ -> (seconds, rule, part)
        "models/shapes-lstm-target-s0.tsv": (10.0, "train_captioner", "four scenarios (shared)"),
        "models/shapes-lstm-ref2-s0.tsv": (20.0, "train_captioner", "reference captioners"),
        "models/shapes-lstm-shadow0-s0-dp1.tsv": (40.0, "train_captioner", "defenses"),
        "models/shapes-lstm-target-s0-paper-protocol-confounded.tsv": (80.0, "train_captioner", "confounded control"),
        "signals/mfe/shapes-lstm-ref0-s0.tsv": (1.0, "mfe_signals", "reference captioners"),
        "mfe/clip-shapes-s0-paper-protocol-confounded.tsv": (2.0, "train_mfe", "confounded control"),
        "attacks/unrestricted@stop-adaptive/s0.tsv": (4.0, "attack_<scenario>", "defenses"),
        "attacks/fully-restricted/s0.tsv": (8.0, "attack_<scenario>", "four scenarios (shared)"),
        "signals/blind/shapes/paper_protocol_confounded-s0/target_in.tsv":
            (16.0, "blind_signals", "confounded control"),
        "signals/blind/shapes/disjoint-s0/target_in.tsv": (32.0, "blind_signals", "four scenarios (shared)"),
        "backbones/rn18grid.tsv": (64.0, "pretrain_backbone", "four scenarios (shared)"),
    }
    for rel, (s, _, _) in jobs.items():
        p = tmp_path / "benchmarks" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{s}\t0:00:00\t100\t{s / 2}\n")
    read = {j["file"]: j for j in summary.read_jobs(tmp_path)}
    assert {f: (j["s"], j["rule"], j["part"]) for f, j in read.items()} == jobs
    table = summary.summary_table(list(read.values()))
    for part in summary.PARTS:
        total = sum(s for s, _, p in jobs.values() if p == part)
        n = sum(p == part for _, _, p in jobs.values())
        assert f"| {part} | {n} | {total:.1f} | {100 * total / 277.0:.0f} % |" in table
    assert "| `train_captioner` | 4 | 150.0 | 80.0 |" in table
