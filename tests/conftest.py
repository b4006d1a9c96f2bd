"""Shared fixtures: the tiny study of config/test.yaml, run once per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def snakemake(workdir: Path, *args: str, config: Path = TEST_CONFIG, check: bool = True, timeout: int = 1800):
    """Run the repository's workflow with ``workdir`` as working directory (results land there)."""
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(config), "--cores", "2", *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """The whole test study, run once: returns results/test/ inside its working directory.

    M4I_TEST_STUDY_DIR=<workdir> reuses a finished run of config/test.yaml (for development)."""
    reuse = os.environ.get("M4I_TEST_STUDY_DIR")
    if reuse:
        return Path(reuse) / "results" / "test"
    workdir = tmp_path_factory.mktemp("study")
    snakemake(workdir)
    return workdir / "results" / "test"


@pytest.fixture(scope="session")
def study_workdir(study) -> Path:
    return study.parents[1]


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def project_files(dst: Path) -> Path:
    """The project's files as git sees them (tracked and new, not ignored), copied under ``dst``."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def copy_study(study: Path, dst: Path) -> Path:
    """A finished study's results and Snakemake metadata (times kept) in a new working directory."""
    shutil.copytree(study, dst / "results" / study.name, copy_function=shutil.copy2)
    shutil.copytree(study.parents[1] / ".snakemake", dst / ".snakemake", copy_function=shutil.copy2,
                    ignore=shutil.ignore_patterns("locks", "incomplete", "log", "conda", "scripts"))
    return dst
