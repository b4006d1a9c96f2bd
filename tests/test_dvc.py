"""DVC round trip: dvc.lock records every artifact group of a finished study, a stage rerun by
`dvc repro` reproduces its recorded hashes, `dvc repro` then has nothing to do, dvc push to a local
folder remote and dvc pull into a fresh clone restore the results, and Snakemake has nothing to do.

Why `dvc commit` and not a full `dvc repro`: DVC deletes a stage's outputs before running it, so a
first `dvc repro` over a finished study reruns all of it (the tiny study twice in one CI run). The
finished study is recorded as it is, and one real stage (data) is rerun through DVC instead."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TEST_CONFIG, copy_study, project_files

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def sh(cwd: Path, *cmd: str, timeout: int = 900) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout + proc.stderr


def _project_copy(dst: Path) -> Path:
    """The project's files as git sees them, as a fresh repository."""
    project_files(dst)
    # DVC's view follows config/config.yaml: make it the tiny test study.
    shutil.copy2(TEST_CONFIG, dst / "config" / "config.yaml")
    sh(dst, "git", "init", "-q")
    sh(dst, "git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    sh(dst, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project")
    return dst


def test_dvc_repro_push_pull_leaves_snakemake_nothing_to_do(study, tmp_path):
    src = _project_copy(tmp_path / "src")
    study_name = yaml.safe_load(TEST_CONFIG.read_text())["study"]
    # Reuse the session's finished study (times preserved) so that dvc repro only records it.
    copy_study(study, src)
    sh(src, "dvc", "commit", "--force")  # record the finished study: hashes of every stage's deps and outs
    lock = yaml.safe_load((src / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"data", "captioners", "attacks", "results"}
    for stage in lock["stages"].values():
        assert all("md5" in out for out in stage["outs"]), stage
        assert all("md5" in dep for dep in stage["deps"]), stage
    manifest = src / "results" / study_name / "data" / "shapes" / "manifest.parquet"
    before = manifest.stat().st_mtime_ns
    # One stage really run by DVC (its command is Snakemake): its outputs deleted and rebuilt, and
    # byte-identical to what was recorded, except the provenance records, which name the commit
    # they were made at (this copy's own repository, not the one the study ran from).
    out = sh(src, "dvc", "repro", "--force", "--single-item", "data", timeout=1200)
    assert "Running stage 'data'" in out, out[-3000:]
    assert manifest.stat().st_mtime_ns != before, "dvc repro did not rebuild the data stage"
    after = yaml.safe_load((src / "dvc.lock").read_text())

    def data_outs(lk):
        return {o["path"]: o["md5"] for o in lk["stages"]["data"]["outs"] if "/provenance/" not in o["path"]}

    assert data_outs(after) == data_outs(lock) and len(data_outs(lock)) == 2
    assert {k: v for k, v in after["stages"].items() if k != "data"} == \
        {k: v for k, v in lock["stages"].items() if k != "data"}
    # Now everything is as recorded: nothing to reproduce.
    out = sh(src, "dvc", "repro", timeout=600)
    assert "Running stage" not in out, out[-3000:]
    assert "up to date" in sh(src, "dvc", "status")
    remote = tmp_path / "remote"
    sh(src, "dvc", "remote", "add", "-d", "local", str(remote))
    sh(src, "dvc", "push")
    sh(src, "git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    sh(src, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results")

    dst = tmp_path / "dst"
    sh(tmp_path, "git", "clone", "-q", str(src), str(dst))
    assert not (dst / "results").exists()
    # What `make pull` runs (make itself would reinstall the venv from this clone).
    sh(dst, str(BIN / "dvc"), "pull")
    sh(dst, str(BIN / "snakemake"), "--cores", "1", "--touch", "--quiet")
    metrics = dst / "results" / study_name / "attacks" / "unrestricted" / "mb-svm" / "s0" / "metrics.json"
    assert metrics.read_bytes() == (study / "attacks" / "unrestricted" / "mb-svm" / "s0" / "metrics.json").read_bytes()
    dry = sh(dst, str(BIN / "snakemake"), "-n", "--cores", "1")
    assert "Nothing to be done" in dry, dry[-3000:]
