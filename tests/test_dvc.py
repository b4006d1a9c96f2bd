"""DVC round trip: dvc repro records every artifact group in dvc.lock, dvc push to a local folder
remote, dvc pull into a fresh clone restores the results, and Snakemake then has nothing to do."""
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
    sh(src, "dvc", "repro", timeout=2400)  # DVC clears stage outputs it has no lock for: a full rerun
    lock = yaml.safe_load((src / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"data", "captioners", "attacks", "results"}
    for stage in lock["stages"].values():
        assert all("md5" in out for out in stage["outs"]), stage
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
