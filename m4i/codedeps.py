"""Which package sources each rule's script runs, so that a code change reruns exactly its rules.

Snakemake's ``code`` rerun trigger hashes a rule's script file, not the ``m4i`` modules the
script imports; DVC sees only the ``deps`` written into ``dvc.yaml``. Either way an edit to a
package module could leave results that it would have changed reported as current. So:

- ``module_closure(script)`` follows every ``import m4i...`` / ``from m4i... import ...`` in the
  script and, transitively, in the modules it reaches, by reading their source (``ast``), also
  imports inside functions: what the script *can* run, whether or not a given config takes the
  branch. Importing ``m4i.a.b`` also runs ``m4i/__init__.py`` and ``m4i/a/__init__.py``.
- ``code_hash(script)`` hashes the script and that closure; each rule passes it as a ``params``
  value, which Snakemake's ``params`` rerun trigger compares with what the job last ran with.
- ``dvc_yaml()`` writes ``dvc.yaml`` with each stage's dependencies complete by construction:
  its rule files, their scripts and the scripts' closures (``tests/test_codedeps.py`` checks
  the committed file is what this function writes).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "m4i"


def _module_file(name: str, repo: Path) -> Path | None:
    """The source file of module ``name`` (``m4i.x.y``) under ``repo``, or None."""
    base = repo.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports(path: Path, repo: Path) -> set[str]:
    """Names of the ``m4i`` modules one source file imports (anywhere in it)."""
    text = path.read_text()
    if path.suffix == ".smk":  # Snakemake syntax: only its Python import lines matter here
        text = "\n".join(ln.strip() for ln in text.splitlines() if re.match(r"\s*(from|import)\s+m4i", ln))
    current = ".".join(path.relative_to(repo).with_suffix("").parts)
    return _parsed_imports(text, current, str(path))


@functools.lru_cache(maxsize=None)
def _parsed_imports(text: str, current: str, filename: str) -> frozenset[str]:
    """``_imports`` of one source text, cached by its content: every script's closure shares most
    modules, and parsing each again cost ~5 s of every Snakemake start (403 parses, measured)."""
    tree = ast.parse(text, filename=filename)
    if current.endswith(".__init__"):
        package = current[: -len(".__init__")]
    else:
        package = current.rsplit(".", 1)[0] if "." in current else ""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # `from m4i.models import train` imports the submodule m4i.models.train
            found.update(f"{mod}.{a.name}" for a in node.names if a.name != "*")
    return frozenset(m for m in found if m == PACKAGE or m.startswith(PACKAGE + "."))


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def module_closure(source: str | Path, repo: Path = REPO) -> list[Path]:
    """Package source files a script (or module) can run, transitively, sorted; the script excluded."""
    repo = Path(repo)
    seen: dict[str, Path] = {}
    todo = sorted(_imports(Path(source), repo))
    while todo:
        name = todo.pop()
        for mod in _with_parents(name):
            if mod in seen:
                continue
            path = _module_file(mod, repo)
            if path is None:
                continue  # `from m4i.x import function`: the name is not a module
            seen[mod] = path
            todo.extend(sorted(_imports(path, repo) - set(seen)))
    return sorted(set(seen.values()))


@functools.lru_cache(maxsize=None)
def code_hash(script: str | Path, repo: Path = REPO, extra: tuple[str, ...] = ()) -> str:
    """SHA-256 over the script and every package file it can run (path and content of each).

    ``extra``: modules a job imports by name at run time (``importlib``), invisible to the
    script's static closure, e.g. the one defense a defended captioner trains with; their own
    closures count too. Cached per process: the code does not change while a workflow is planned.
    """
    script = Path(script)
    h = hashlib.sha256()
    files = set(module_closure(script, repo))
    for name in extra:
        path = _module_file(name, Path(repo))
        if path is None:
            raise ValueError(f"code_hash: no module {name!r} under {repo}")
        files |= {path, *module_closure(path, repo)}
    for path in [script.resolve(), *sorted(files)]:
        rel = path.relative_to(Path(repo).resolve()).as_posix() if path.is_relative_to(Path(repo).resolve()) else path.name
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------------------- DVC
# DVC's view: one stage per group of rule files; Snakemake stays the scheduler.
DVC_STAGES = {
    # params: the keys a stage's rules read (the confounded control's attack list is the attacks
    # stage's, not the split's: editing it reruns attacks only)
    "data": {"rules": ["rules/data.smk"],
             "params": ["datasets", "splits.protocol", "splits.sizes", "splits.confounded_control.dataset",
                        "splits.confounded_control.nonmember_dataset", "seeds"],
             "outs": ["data", "splits"]},
    "captioners": {"rules": ["rules/captioners.smk"],
                   "params": ["features", "captioners", "scenarios", "defenses", "device"],
                   "outs": ["backbones", "features", "models", "captions", "utility"],
                   "inputs": ["data", "splits"],
                   # imported by name at run time (one defense per job): all of them count here
                   "dynamic": ["m4i/defenses"]},
    "attacks": {"rules": ["rules/attacks.smk", "rules/mfe.smk"],
                "params": ["mfe", "attacks", "evaluation", "splits.confounded_control.attacks", "defense_evaluation"],
                "outs": ["signals", "mfe", "attacks"], "inputs": ["captions", "features", "models"]},
    "results": {"rules": ["rules/results.smk"], "params": ["defenses"],
                # models: the defended checkpoints' DP accounting (recipe) for tables/defenses
                "outs": ["tables", "figures"], "inputs": ["attacks", "utility", "models"],
                "extra_outs": ["provenance/metrics.json.json"], "metrics": ["metrics.json"]},
}
WORKFLOW_FILES = ["Snakefile", "rules/common.smk", "config/schema.yaml"]
_SCRIPT_RE = re.compile(r'^\s*"\.\./(scripts/[A-Za-z0-9_]+\.py)"\s*$', re.M)


def rule_scripts(smk: str | Path) -> list[str]:
    """The ``script:`` files named in one rules file (repository-relative)."""
    return sorted(set(_SCRIPT_RE.findall(Path(smk).read_text())))


def workflow_modules(repo: Path = REPO) -> list[Path]:
    """Package files the Snakefile itself imports while planning (identities, config checks)."""
    return module_closure(Path(repo) / "rules" / "common.smk", repo)


def stage_deps(stage: str, repo: Path = REPO) -> list[str]:
    """Every file a DVC stage's commands read as code: rules, scripts, their package closure."""
    repo = Path(repo)
    spec = DVC_STAGES[stage]
    files = set(WORKFLOW_FILES) | set(spec["rules"])
    paths = set(workflow_modules(repo))
    for smk in spec["rules"]:
        for script in rule_scripts(repo / smk):
            files.add(script)
            paths.update(module_closure(repo / script, repo))
    for folder in spec.get("dynamic", []):
        for path in sorted((repo / folder).glob("*.py")):
            paths.update([path, *module_closure(path, repo)])
    files |= {p.relative_to(repo).as_posix() for p in paths}
    return sorted(files)


def dvc_yaml(repo: Path = REPO) -> str:
    """The text of dvc.yaml (see DVC_STAGES); deps generated from the import closures."""
    lines = [
        "# GENERATED by `python -m m4i.codedeps` from the rules' scripts and the package modules they",
        "# import (m4i/codedeps.py); tests/test_codedeps.py fails when it is out of date. Do not edit.",
        "# DVC's view of the study: Snakemake stays the scheduler; each DVC stage asks it for one group of",
        "# artifacts, and dvc.lock records the hash of every group (the ledger of what produced what).",
        "#   dvc repro          # = make run, recorded",
        "#   dvc push / pull    # results to / from a remote (see README)",
        "# Paths follow `study:` of config/config.yaml.",
        "vars:",
        "  - config/config.yaml:study",
        "",
        "stages:",
    ]
    for stage, spec in DVC_STAGES.items():
        lines += [f"  {stage}:", f"    cmd: snakemake {stage} --cores 2 --configfile config/config.yaml", "    deps:"]
        lines += [f"      - {d}" for d in stage_deps(stage, repo)]
        lines += [f"      - results/${{study}}/{d}" for d in spec.get("inputs", [])]
        if spec["params"]:
            lines += ["    params:", "      - config/config.yaml:"]
            lines += [f"          - {p}" for p in spec["params"]]
        lines += ["    outs:"]
        lines += [f"      - results/${{study}}/{o}" for o in spec["outs"]]
        lines += [f"      - results/${{study}}/provenance/{o}" for o in spec["outs"]]
        lines += [f"      - results/${{study}}/{o}" for o in spec.get("extra_outs", [])]
        if spec.get("metrics"):
            lines += ["    metrics:"]
            lines += [f"      - results/${{study}}/{m}" for m in spec["metrics"]]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="write dvc.yaml with generated code dependencies")
    ap.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is out of date")
    args = ap.parse_args(argv)
    text = dvc_yaml()
    path = REPO / "dvc.yaml"
    if args.check:
        if path.read_text() != text:
            print("dvc.yaml is out of date: run `python -m m4i.codedeps`")
            return 1
        return 0
    path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
