"""Code-aware reruns: each rule's params carry a hash of its script and the package modules it can
run; dvc.yaml's dependencies are generated from the same closure; an edit to one function reruns
exactly the rules that depend on it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TEST_CONFIG, copy_study, project_files
from m4i import codedeps
from m4i.plan import Plan


def _write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


@pytest.fixture()
def fake_repo(tmp_path):
    """A tiny package named m4i: a script imports a; a imports b inside a function; b imports c
    relatively; d is imported by nobody; e only by a rules file."""
    _write(tmp_path, "m4i/__init__.py", "")
    _write(tmp_path, "m4i/sub/__init__.py", "")
    _write(tmp_path, "m4i/a.py", "def f():\n    from m4i.sub import b\n    return b.g()\n")
    _write(tmp_path, "m4i/sub/b.py", "from . import c\n\ndef g():\n    return c.h()\n")
    _write(tmp_path, "m4i/sub/c.py", "import os\n\ndef h():\n    return os.sep\n")
    _write(tmp_path, "m4i/d.py", "import m4i.a\n")
    _write(tmp_path, "m4i/e.py", "X = 1\n")
    _write(tmp_path, "rules/common.smk", "import sys\nfrom m4i.e import X\n\nrule x:\n    output: 'x'\n")
    script = _write(tmp_path, "scripts/s.py", "from m4i.a import f\nf()\n")
    return tmp_path, script


def test_closure_follows_lazy_relative_and_package_imports(fake_repo):
    root, script = fake_repo
    got = {p.relative_to(root).as_posix() for p in codedeps.module_closure(script, root)}
    assert got == {"m4i/__init__.py", "m4i/a.py", "m4i/sub/__init__.py", "m4i/sub/b.py", "m4i/sub/c.py"}
    smk = {p.relative_to(root).as_posix() for p in codedeps.module_closure(root / "rules/common.smk", root)}
    assert smk == {"m4i/__init__.py", "m4i/e.py"}


def test_code_hash_changes_with_the_closure_only(fake_repo):
    root, script = fake_repo
    codedeps.code_hash.cache_clear()
    before = codedeps.code_hash(script, root)
    _write(root, "m4i/d.py", "import m4i.a\nY = 2\n")  # not imported by the script
    codedeps.code_hash.cache_clear()
    assert codedeps.code_hash(script, root) == before
    _write(root, "m4i/sub/c.py", "import os\n\ndef h():\n    return os.sep * 2\n")  # reached lazily
    codedeps.code_hash.cache_clear()
    assert codedeps.code_hash(script, root) != before
    codedeps.code_hash.cache_clear()


def test_dvc_yaml_is_generated_and_up_to_date():
    assert (REPO / "dvc.yaml").read_text() == codedeps.dvc_yaml(), "run: python -m m4i.codedeps"


def test_dvc_stage_deps_cover_every_module_their_scripts_import():
    # The modules the issue found missing, among others.
    captioners = codedeps.stage_deps("captioners")
    attacks = codedeps.stage_deps("attacks")
    for dep in ("m4i/signals/caption_metrics.py", "m4i/data/synthetic.py", "m4i/io.py"):
        assert dep in captioners, dep
    # The MFEs batch with m4i/models/batching.py and read inputs through m4i/models/inputs.py.
    assert {"m4i/models/batching.py", "m4i/models/inputs.py"} <= set(attacks)
    assert "m4i/models/generate.py" not in attacks
    scripts = {s for smk in (REPO / "rules").glob("*.smk") for s in codedeps.rule_scripts(smk)}
    assert scripts == {f"scripts/{p.name}" for p in (REPO / "scripts").glob("*.py")}


def _rule_blocks():
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    # `rule name:`, and the rules made in a loop (indented `rule:`, named from the config)
    return re.findall(r"^\s*rule ?(\w*):(.*?)(?=^\s*rule[ :]|\Z)", text, re.M | re.S)


def test_every_rule_with_a_script_passes_its_own_code_hash():
    blocks = _rule_blocks()
    assert len(blocks) >= 10
    for name, body in blocks:
        script = re.search(r'"\.\./scripts/(\w+\.py)"', body)
        if script:
            assert f'code("{script.group(1)}"' in body, f"rule {name}: params code=code(<its script>, ...)"


# --------------------------------------------------------------------------------- integration
def _dry_run_jobs(workdir: Path, project: Path, configfile: Path = TEST_CONFIG) -> list[tuple[str, dict]]:
    env = dict(os.environ, PYTHONPATH=str(project))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(project / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", "-n"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=\s*rule \w+:)", out.stdout):  # a group's jobs are indented
        m = re.match(r"\s*rule (\w+):", block)
        if m:
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            fields = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
            jobs.append((m.group(1), fields))
    return jobs


def _edit_function(path: Path, func: str) -> None:
    text = path.read_text()
    new = re.sub(rf"(def {func}\(.*?\).*?:\n)", r'\1    """edited"""\n', text, count=1, flags=re.S)
    assert new != text, func
    path.write_text(new)


@pytest.mark.integration
def test_a_package_edit_reruns_exactly_the_rules_that_depend_on_it(study, tmp_path):
    project = project_files(tmp_path / "project")
    work = copy_study(study, tmp_path / "work")
    assert _dry_run_jobs(work, project) == [], "a fresh copy of a finished study must be up to date"

    # the confounded control's attack list is no property of its split: dropping an attack from
    # it reruns no split and no model (only the tables that list the attacks); the edited file is
    # written with sorted keys, so this also checks that key order in a config reruns nothing
    import yaml

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["splits"]["confounded_control"]["attacks"] = cfg["splits"]["confounded_control"]["attacks"][:-1]
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(cfg))
    # (and the control's own attack job, one per scenario: its list of attacks is a param of it)
    control = Plan(cfg).attack_rule(next(k for k in Plan(cfg).attack_jobs() if "confounded" in k))
    assert {r for r, _ in _dry_run_jobs(work, project, tmp_path / "edited.yaml")} <= {"all", "tables", "figures", control}

    _edit_function(project / "m4i" / "report" / "figures.py", "roc_figure")
    # tables too: m4i/report/defenses.py (imported by the tables script) draws the privacy-utility
    # figure with m4i.report.figures' helpers; the data, model and attack rules do not import it
    assert sorted({r for r, _ in _dry_run_jobs(work, project)}) == ["all", "figures", "tables"]

    _edit_function(project / "m4i" / "attacks" / "blind.py", "caption_stats")
    jobs = _dry_run_jobs(work, project)
    # the attack jobs of the scenarios that run the blind baseline (its signals changed), no other;
    # one job runs all of a scenario's attacks, so its MB/FB attacks rerun with it (cheap, same bytes)
    plan = Plan(yaml.safe_load(TEST_CONFIG.read_text()))
    blind = {plan.attack_rule(k) for k, attacks in plan.attack_jobs().items() if "blind" in attacks}
    assert blind
    assert {r for r, _ in jobs} == {"all", "figures", "tables", "blind_signals"} | blind

    # train.py is imported by training, generation and (through m4i.models) the MFEs' batching
    # helpers' package; the data stage and the blind baseline do not run it.
    _edit_function(project / "m4i" / "models" / "train.py", "caption_pairs")
    rules = {r for r, _ in _dry_run_jobs(work, project)}
    assert {"train_captioner", "generate_captions", "metric_signals"} <= rules and any(r.startswith("attack_") for r in rules)
    assert not rules & {"synthetic_manifest", "splits", "pretrain_backbone", "features"}
