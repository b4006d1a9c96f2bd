"""The benchmark script keeps working as the package changes (it is not run by the test suite
otherwise): three of its benchmarks on tiny inputs. No timing is asserted."""
import importlib.util
import sys
import tempfile
from pathlib import Path

import yaml

from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("run_benchmarks", REPO / "benchmarks" / "run_benchmarks.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_benchmarks"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_metric_and_dp_benchmarks_run_on_tiny_inputs():
    bench = _bench()
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
