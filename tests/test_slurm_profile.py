"""profiles/slurm without a cluster: every key is a real option, every rule is grouped or a named
single job, the paper and tiny studies submit few Slurm jobs, GPU work goes to the GPU partition
with a GPU and CPU work does not; envs/m4i.yaml follows requirements.txt.
The real-Slurm run is .ci/slurm-test.sh (needs root), called by .ci/run."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from m4i.plan import Plan

PROFILE = REPO / "profiles" / "slurm"
# Rules whose jobs are each submitted alone: long, GPU-heavy single jobs (and nothing else).
SINGLE_JOB_RULES = {"pretrain_backbone", "features"}
# At most this many sbatch submissions (issue 14).
MAX_SUBMISSIONS = {"paper": 150, "test": 40}


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _list(flag: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
         str(REPO / "config" / "test.yaml"), flag],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.splitlines()
    # one rule per line: its name, then its docstring in parentheses
    return [m.group(0) for line in out if (m := re.match(r"[A-Za-z_]\w*(?= \(|$)", line))]


def _rules() -> dict[str, bool]:
    """Every rule of the workflow -> whether it is a target rule (input only, run on the host)."""
    targets = set(_list("--list-target-rules"))
    return {r: r in targets for r in _list("--list-rules")}


def test_profile_keys_are_options_snakemake_or_the_plugin_reads():
    from snakemake.cli import get_argument_parser

    parser = get_argument_parser()
    options = {s.lstrip("-") for a in parser._actions for s in a.option_strings}
    unknown = sorted(k for k in _profile() if k not in options)
    assert not unknown, f"profiles/slurm/config.yaml keys that nothing reads: {unknown}"
    # The settings the plugin defines (its --slurm-* options) by their field names.
    from snakemake_executor_plugin_slurm import ExecutorSettings
    import dataclasses

    plugin = {"slurm-" + f.name.replace("_", "-") for f in dataclasses.fields(ExecutorSettings)}
    assert "slurm-no-account" in plugin and "slurm-status-command" in plugin
    for key in _profile():
        if key.startswith("slurm-"):
            assert key in plugin, key
    assert "slurm-no-account" not in _profile(), "not read by plugin 2.8 (it guesses the account)"


def test_every_rule_is_grouped_or_a_named_single_job():
    groups = _profile()["groups"]
    components = _profile()["group-components"]
    rules = _rules()
    # the attack rules, one per scenario of the config, group themselves (rules/attacks.smk):
    # test_grouping_keeps_submissions_few checks that their jobs are submitted in group `attack`
    plan = Plan(yaml.safe_load((REPO / "config" / "test.yaml").read_text()))
    attack_rules = {plan.attack_rule(k) for k in plan.attack_jobs()}
    assert attack_rules <= set(rules)
    missing = sorted(r for r, target in rules.items()
                     if not target and r not in groups and r not in SINGLE_JOB_RULES and r not in attack_rules)
    assert not missing, f"rules with no group in profiles/slurm/config.yaml (add them to `groups:`): {missing}"
    assert not (set(groups) - set(rules)), f"groups for rules that do not exist: {set(groups) - set(rules)}"
    assert not (set(groups) & SINGLE_JOB_RULES)
    assert set(groups.values()) | {"attack"} == set(components), "every group needs a group-components entry"


def _submissions(tmp_path, name) -> list[dict]:
    out = tmp_path / f"{name}.jsonl"
    proc = subprocess.run(
        [sys.executable, str(PROFILE / "submissions.py"), str(out), "--configfile", str(REPO / "config" / f"{name}.yaml"),
         "-d", str(tmp_path / name)],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return _submissions(tmp_path_factory.mktemp("paper"), "paper")


@pytest.mark.integration
@pytest.mark.parametrize("name", ["paper", "test"])
def test_grouping_keeps_submissions_few(tmp_path, paper, name):
    subs = paper if name == "paper" else _submissions(tmp_path, name)
    n_jobs = sum(s["n_jobs"] for s in subs)
    assert len(subs) <= MAX_SUBMISSIONS[name], f"{name}: {len(subs)} Slurm jobs for {n_jobs} Snakemake jobs"
    assert n_jobs > 2 * len(subs), "grouping should merge many jobs"
    for s in subs:
        if s["group"]:
            assert not set(s["rules"]) & SINGLE_JOB_RULES
        if any(r.startswith("attack_") for r in s["rules"]):
            assert s["group"] == "attack" and all(r.startswith("attack_") for r in s["rules"]), s


@pytest.mark.integration
def test_paper_gpu_jobs_ask_for_one_gpu_on_the_gpu_partition(paper):
    by_rule = {}
    for s in paper:
        for r in s["rules"]:
            by_rule.setdefault(r, []).append(s)
    for rule in ("train_captioner", "generate_captions", "train_mfe", "features", "mfe_signals"):
        for s in by_rule[rule]:
            assert s["partition"] == "gpu" and "--gpus=1" in s["sbatch"].split(), (rule, s["sbatch"])
    attack = next(r for r in by_rule if r.startswith("attack_"))
    for rule in (attack, "metric_signals", "splits", "tables"):
        for s in by_rule[rule]:
            assert s["partition"] == "cpu" and "--gpus" not in s["sbatch"] and "gpu" not in s["resources"], (rule, s["sbatch"])
    for s in paper:
        opts = s["sbatch"]
        assert re.search(r"--mem \d+", opts) and re.search(r"-t \d+", opts) and "--cpus-per-task=" in opts, opts
        # a group never asks for more than one Slurm job's worth (cores in the profile)
        assert s["threads"] <= _profile()["cores"]


def test_conda_env_follows_requirements():
    """envs/m4i.yaml installs requirements.txt itself (pip section), with the Python the venv uses;
    no conda channel is reachable here, so --use-conda itself is not run (README)."""
    env = yaml.safe_load((REPO / "envs" / "m4i.yaml").read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["-r ../requirements.txt"], pip
    assert (REPO / "envs" / "../requirements.txt").resolve() == (REPO / "requirements.txt").resolve()
    pinned = [d for d in deps if isinstance(d, str)]
    assert f"python={sys.version_info.major}.{sys.version_info.minor}" in pinned
    assert any(d.startswith("openjdk=") for d in pinned), "pycocoevalcap needs Java"
    # every requirement is pinned (==), so conda's pip step builds what the venv has
    reqs = [l.split("#")[0].strip() for l in (REPO / "requirements.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r]
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+]+", r) for r in reqs), reqs
