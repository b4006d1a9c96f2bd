"""Two runs of one study agree: same tables (minus timing columns), headline metrics and per-record
attack scores. Used by .ci/slurm-test.sh to compare the Slurm run with the local one.

    python .ci/compare_runs.py A/results/<study> B/results/<study> [FILE...]

With FILEs (paths relative to results/<study>/), only those are compared, byte for byte (.pt files by content) (a
partial run, e.g. M4I_SLURM_TARGET in .ci/slurm-test.sh).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

# Columns/keys that measure the run rather than the study (none today; kept so one added later
# does not make two equal studies differ).
TIMING = re.compile(r"(^|_)(time|seconds|s_wall|duration|elapsed|runtime|date|created|host)(_|$)", re.I)


def _drop_timing(obj):
    if isinstance(obj, dict):
        return {k: _drop_timing(v) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [_drop_timing(v) for v in obj]
    return obj


def compare(a: Path, b: Path) -> list[str]:
    problems = []
    tables_a = sorted(p.relative_to(a) for p in (a / "tables").glob("*.csv"))
    tables_b = sorted(p.relative_to(b) for p in (b / "tables").glob("*.csv"))
    if not tables_a:
        problems.append(f"no tables in {a / 'tables'}")
    if tables_a != tables_b:
        problems.append(f"different table files: {tables_a} vs {tables_b}")
    for rel in set(tables_a) & set(tables_b):
        ta, tb = (pd.read_csv(root / rel) for root in (a, b))
        ta, tb = (t[[c for c in t.columns if not TIMING.search(c)]] for t in (ta, tb))
        try:
            pd.testing.assert_frame_equal(ta, tb, check_exact=True)
        except AssertionError as exc:
            problems.append(f"{rel}: {exc}")
    ha, hb = (a / "metrics.json", b / "metrics.json")
    if ha.exists() or hb.exists():
        if _drop_timing(json.loads(ha.read_text())) != _drop_timing(json.loads(hb.read_text())):
            problems.append("metrics.json differs")
    scores = sorted(p.relative_to(a) for p in (a / "attacks").rglob("scores.parquet"))
    for rel in scores:
        if not (b / rel).exists():
            problems.append(f"{rel} missing in {b}")
        elif not pd.read_parquet(a / rel).equals(pd.read_parquet(b / rel)):
            problems.append(f"{rel}: per-record scores differ")
    print(f"compared {len(tables_a)} tables, metrics.json and {len(scores)} per-record score files")
    return problems


def _same_torch(pa: Path, pb: Path) -> bool:
    """torch.save(obj, path) writes the temporary file's name into the archive, so equal tensors
    can have different bytes: compare the loaded content."""
    import torch

    def eq(x, y):
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return len(x) == len(y) and all(map(eq, x, y))
        return torch.equal(x, y) if torch.is_tensor(x) else x == y

    return eq(torch.load(pa, weights_only=True), torch.load(pb, weights_only=True))


def compare_files(a: Path, b: Path, files: list[str]) -> list[str]:
    problems = [f"{rel}: missing" for rel in files if not ((a / rel).is_file() and (b / rel).is_file())]
    for rel in files:
        pa, pb = a / rel, b / rel
        if pa.is_file() and pb.is_file() and pa.read_bytes() != pb.read_bytes():
            if not (pa.suffix == ".pt" and _same_torch(pa, pb)):
                problems.append(f"{rel}: content differs")
    print(f"compared {len(files)} files (bytes; tensors for .pt)")
    return problems


if __name__ == "__main__":
    a, b, files = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    problems = compare_files(a, b, files) if files else compare(a, b)
    for p in problems:
        print("DIFFERENT:", p, file=sys.stderr)
    sys.exit(1 if problems else 0)
