"""Two clean runs of the test study give byte-identical artifacts, except declared timing fields.

The second run is reduced to a few targets that cover every artifact kind (a pretrained backbone,
a feature cache, LSTM and ViT-GPT-2 captioners, an MFE, generated captions, metric and
log-likelihood signals: .pt, .parquet, .json, .csv) and is compared file by file with the same
files of the session's whole-study run (``study`` fixture).

What may differ, and why (``TIMING``):
- ``logs/**``: timestamps and elapsed times on every line.
- ``benchmarks/**``: Snakemake's per-job wall/CPU time and memory.
- ``models/*.loss.csv``: the column ``seconds`` (time per epoch); every other column equal.
- ``provenance/**`` sidecars: ``time_utc`` (when the job ran), each input's ``abspath`` (where
  the run's folder is: the two runs live in different folders) and the ``sha256`` of a file with
  a timing column (the loss tables, whether artifact or input); every other field (hashes of
  every other output and input, params, code hashes, versions, git state) must be equal.
- ``.snakemake_timestamp`` files (Snakemake's directory-output markers).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import snakemake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TARGETS = [
    "signals/metrics/shapes-lstm-target-s0.parquet",
    "signals/loglik/shapes-lstm-target-s0.parquet",
    "mfe/paper-shapes-s0.pt",
    "models/shapes-tfm-shadow0-s0.pt",
]
TIMING_DIRS = ("logs", "benchmarks")
TIMING_COLUMNS = {"loss.csv": ["seconds"]}


def _timing_free(rel: Path, data: bytes):
    """The content of a file with its declared timing fields removed (bytes when it has none)."""
    if rel.parts[0] == "provenance" and rel.suffix == ".json":
        doc = json.loads(data)
        doc.pop("time_utc", None)
        if _has_timing_columns(str(doc.get("artifact", ""))):
            doc.pop("sha256", None)
        for inp in doc.get("inputs") or []:
            if isinstance(inp, dict):
                inp.pop("abspath", None)
                if _has_timing_columns(str(inp.get("path", ""))):
                    inp.pop("sha256", None)
        return doc
    for suffix, cols in TIMING_COLUMNS.items():
        if rel.name.endswith(suffix):
            return pd.read_csv(io.BytesIO(data)).drop(columns=cols).to_csv(index=False)
    return data


def _has_timing_columns(path: str) -> bool:
    return any(path.endswith(suffix) for suffix in TIMING_COLUMNS)


def _artifacts(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()
                  and p.relative_to(root).parts[0] not in TIMING_DIRS and p.name != ".snakemake_timestamp")


def test_two_clean_runs_are_byte_identical_except_timing(study, tmp_path):
    snakemake(tmp_path, *[f"results/test/{t}" for t in TARGETS])
    rerun = tmp_path / "results" / "test"
    files = _artifacts(rerun)
    kinds = {p.suffix for p in files}
    assert {".pt", ".parquet", ".json", ".csv"} <= kinds, kinds
    assert any(p.parts[0] == "provenance" for p in files)
    differ, missing = [], []
    for rel in files:
        other = study / rel
        if not other.is_file():
            missing.append(str(rel))
            continue
        a, b = rerun.joinpath(rel).read_bytes(), other.read_bytes()
        if a != b and _timing_free(rel, a) != _timing_free(rel, b):
            differ.append(str(rel))
    assert not missing, f"the whole-study run lacks {missing[:5]}"
    assert not differ, f"{len(differ)} of {len(files)} artifacts differ between two clean runs: {differ[:10]}"
