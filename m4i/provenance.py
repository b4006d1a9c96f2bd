"""Provenance sidecars, written by each rule as it runs, and the trace that walks them back.

A sidecar lives at ``<results_root>/provenance/<artifact path relative to results_root>.json``
and records what produced the artifact: rule, hashes of the output and of every input (with a
pointer to the input's own sidecar when the input is itself a results artifact), params,
wildcards, the config values used, seed, code version (git commit + dirty flag), package
versions, hardware and time. Nothing is reconstructed afterwards: ``trace`` only reads sidecars
and re-hashes files to detect inputs that changed since they were consumed (stale).
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from m4i import CPU_PINS, cpu_flags, cpuinfo
from m4i.io import M4IError, read_json, sha256_file, sha256_json, write_json

SIDECAR_VERSION = 1
PROVENANCE_DIR = "provenance"
PACKAGES = (
    "torch", "torchvision", "transformers", "open_clip_torch", "pycocoevalcap", "scikit-learn",
    "pandas", "numpy", "snakemake", "dvc", "rouge_score",
)


# --------------------------------------------------------------------------- paths and hashes
def _rel_to_root(results_root: str | os.PathLike, path: str | os.PathLike) -> str | None:
    """``path`` relative to the results root (posix), or None when it lies outside it."""
    root = Path(results_root).resolve()
    full = Path(path).resolve()
    try:
        return full.relative_to(root).as_posix()
    except ValueError:
        return None


def sidecar_relpath(artifact_rel: str) -> str:
    """Sidecar path (relative to the results root) of an artifact given relative to the root."""
    return f"{PROVENANCE_DIR}/{artifact_rel}.json"


def artifact_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (streamed) or of a directory: hash of its sorted (relpath, sha256) list."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        entries = sorted(
            (f.relative_to(p).as_posix(), sha256_file(f)) for f in p.rglob("*") if f.is_file()
        )
        return sha256_json([list(e) for e in entries])
    raise M4IError(f"cannot hash {path}: no such file or directory")


# --------------------------------------------------------------------------- environment
@functools.lru_cache(maxsize=None)
def git_state() -> dict:
    """Commit and dirty flag of the git checkout holding the m4i package; nulls if unknown.

    Cached per process: the code does not change while a rule runs.
    """
    import m4i

    pkg_dir = Path(m4i.__file__).resolve().parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: no index refresh, no locks

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(pkg_dir), *args], capture_output=True, text=True,
                timeout=20, env=env, check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    # An installed (non-editable) copy may sit inside some unrelated repository: only trust a
    # checkout whose m4i/ is the package actually imported.
    if top is None or (Path(top.strip()) / "m4i").resolve() != pkg_dir:
        return {"commit": None, "dirty": None, "dirty_files": None}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    dirty_files = None if status is None else [ln[3:] for ln in status.splitlines() if ln.strip()]
    return {
        "commit": commit.strip() if commit else None,
        "dirty": None if dirty_files is None else bool(dirty_files),
        "dirty_files": None if dirty_files is None else dirty_files[:50],
    }


@functools.lru_cache(maxsize=None)
def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# The instruction-set extensions that decide which code paths numerical libraries pick.
ISA_FLAGS = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8"}


def hardware() -> dict:
    """Platform, CPU (model, and the instruction-set pins of ``m4i.CPU_PINS`` in effect: the CPU
    code paths the numbers came from), CPU count and CUDA device.

    CUDA is probed only when torch is already imported: a rule that used the GPU has imported
    torch, and importing it (seconds) just to describe a CPU-only rule's machine is not worth it.
    """
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpuinfo("model name"),
        "cpu_isa": sorted(cpu_flags() & ISA_FLAGS),
        "cpu_pins": {name: os.environ.get(name) for name in CPU_PINS},
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": None,  # the vectorised kernels torch runs (when the rule loaded it)
        "cuda_probed": "torch" in sys.modules,
        "cuda_device": None,
        "cuda_version": None,
    }
    if info["cuda_probed"]:
        torch = sys.modules["torch"]
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        try:
            if torch.cuda.is_available():
                info["cuda_device"] = torch.cuda.get_device_name(torch.cuda.current_device())
                info["cuda_version"] = torch.version.cuda
        except Exception:  # a broken driver must not fail the rule that just succeeded
            pass
    return info


# --------------------------------------------------------------------------- writing
def _as_dict(obj: Any, what: str) -> dict:
    """Snakemake's params/wildcards are Namedlists: accept anything with ``items()``."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "items"):
        return dict(obj.items())
    raise M4IError(f"write_sidecar: {what} must be a mapping, got {type(obj).__name__}")


def _jsonable(obj: Any, where: str) -> Any:
    """Plain JSON types only; Paths/tuples/numpy scalars converted, anything else refused."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v, where) for v in obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    raise M4IError(f"write_sidecar: {where} is a {type(obj).__name__}, not JSON-serialisable")


def _paths(obj: Any, what: str) -> list[str]:
    if isinstance(obj, (str, os.PathLike)):  # one path, not an iterable of characters
        return [os.fspath(obj)]
    if obj is None:
        return []
    if not isinstance(obj, Iterable):
        raise M4IError(f"write_sidecar: {what} must be a list of paths")
    return [os.fspath(p) for p in obj]


def _input_record(results_root: str | os.PathLike, path: str) -> dict:
    if not os.path.exists(path):
        raise M4IError(f"write_sidecar: input {path} does not exist")
    rel = _rel_to_root(results_root, path)
    return {
        # Results artifacts are stored relative to the root so that the results folder can move.
        "path": rel if rel is not None else Path(path).as_posix(),
        "abspath": str(Path(path).resolve()),
        "sha256": artifact_sha256(path),
        "sidecar": sidecar_relpath(rel) if rel is not None else None,
    }


def write_sidecar(
    results_root: str | os.PathLike,
    rule: str,
    outputs: list[str],
    inputs: list[str],
    params: dict,
    wildcards: dict,
    config_subset: dict,
    seed: int | None,
    log: str | None = None,
) -> list[str]:
    """Write one sidecar per output (after the outputs exist); return the sidecar paths."""
    outputs, inputs = _paths(outputs, "outputs"), _paths(inputs, "inputs")
    if not outputs:
        raise M4IError(f"write_sidecar (rule {rule}): no outputs given")
    for out in outputs:
        if not os.path.exists(out):
            raise M4IError(f"write_sidecar (rule {rule}): output {out} does not exist yet; "
                           "call it after the outputs are written")
        if _rel_to_root(results_root, out) is None:
            raise M4IError(f"write_sidecar (rule {rule}): output {out} is not under the results "
                           f"root {results_root}")
    # Hash each input once, even if several outputs share it.
    input_records = [_input_record(results_root, p) for p in inputs]
    common = {
        "sidecar_version": SIDECAR_VERSION,
        "rule": rule,
        "inputs": input_records,
        "params": _jsonable(_as_dict(params, "params"), "params"),
        "wildcards": _jsonable(_as_dict(wildcards, "wildcards"), "wildcards"),
        "config": _jsonable(_as_dict(config_subset, "config_subset"), "config_subset"),
        "seed": None if seed is None else int(seed),
        "log": None if log is None else Path(os.fspath(log)).as_posix(),
        "git": git_state(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "hardware": hardware(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    written = []
    for out in outputs:
        rel = _rel_to_root(results_root, out)
        doc = {
            "artifact": rel,
            "kind": "directory" if os.path.isdir(out) else "file",
            "sha256": artifact_sha256(out),
            "outputs_of_job": [_rel_to_root(results_root, o) for o in outputs],
            **common,
        }
        side = Path(results_root) / sidecar_relpath(rel)
        write_json(doc, side)
        written.append(str(side))
    return written


# --------------------------------------------------------------------------- reading / tracing
def read_sidecar(results_root: str | os.PathLike, artifact_rel: str) -> dict | None:
    side = Path(results_root) / sidecar_relpath(artifact_rel)
    return read_json(side) if side.is_file() else None


def _artifact_rel(results_root: str | os.PathLike, artifact: str) -> str:
    """Accept a path relative to the root, or a (cwd-relative / absolute) path under it."""
    if not os.path.isabs(artifact) and (Path(results_root) / artifact).exists():
        return Path(artifact).as_posix()
    rel = _rel_to_root(results_root, artifact)
    if rel is None or not (Path(results_root) / rel).exists():
        raise M4IError(f"artifact {artifact} not found under the results root {results_root}")
    return rel


def _raw_location(rec: dict) -> Path | None:
    """A raw input recorded at rule time: its absolute path, else the path from the cwd."""
    for cand in (rec.get("abspath"), rec.get("path")):
        if cand and os.path.exists(cand):
            return Path(cand)
    return None


def trace(results_root: str | os.PathLike, artifact: str) -> dict:
    """Walk sidecars from ``artifact`` down to raw inputs; a DAG, each node hashed once.

    Returns {"artifact", "results_root", "nodes": {id: node}, "order": [ids, consumers before
    their inputs], "raw": [ids], "stale": [{"input", "consumer", "recorded", "current"}],
    "unrecorded": [ids of results artifacts without a sidecar], "ok": bool}. Artifact ids are
    paths relative to the results root; raw ids are the recorded path.
    """
    root = Path(results_root)
    start = _artifact_rel(root, artifact)
    nodes: dict[str, dict] = {}
    order: list[str] = []
    stale: list[dict] = []
    current: dict[str, str | None] = {}

    def current_sha(node_id: str, location: Path | None) -> str | None:
        if node_id not in current:
            current[node_id] = artifact_sha256(location) if location and location.exists() else None
        return current[node_id]

    def visit_artifact(rel: str) -> None:
        if rel in nodes:
            return
        side = read_sidecar(root, rel)
        node: dict[str, Any] = {"id": rel, "path": rel, "sidecar": sidecar_relpath(rel)}
        nodes[rel] = node
        order.append(rel)
        node["current_sha256"] = current_sha(rel, root / rel)
        if side is None:
            node.update(kind="unrecorded", sidecar=None, inputs=[])
            return
        node.update(
            kind="artifact", recorded_sha256=side.get("sha256"), rule=side.get("rule"),
            seed=side.get("seed"), config=side.get("config"), params=side.get("params"),
            wildcards=side.get("wildcards"), git=side.get("git"), time_utc=side.get("time_utc"),
            python=side.get("python"), packages=side.get("packages"),
            hardware=side.get("hardware"), log=side.get("log"),
        )
        # The artifact itself changed after its sidecar was written: its record is stale.
        if node["current_sha256"] != node["recorded_sha256"]:
            stale.append({"input": rel, "consumer": None, "recorded": node["recorded_sha256"],
                          "current": node["current_sha256"]})
        node["inputs"] = []
        for rec in side.get("inputs", []):
            if rec.get("sidecar") is not None:
                child = rec["path"]
                visit_artifact(child)
            else:
                child = rec["path"]
                if child not in nodes:
                    loc = _raw_location(rec)
                    nodes[child] = {"id": child, "path": child, "kind": "raw",
                                    "abspath": rec.get("abspath"), "sidecar": None,
                                    "recorded_sha256": rec.get("sha256"),
                                    "current_sha256": current_sha(child, loc), "inputs": []}
                    order.append(child)
            node["inputs"].append(child)
            cur = nodes[child]["current_sha256"]
            if cur != rec.get("sha256"):
                stale.append({"input": child, "consumer": rel, "recorded": rec.get("sha256"),
                              "current": cur})

    visit_artifact(start)
    stale_ids = {s["input"] for s in stale}
    for nid, node in nodes.items():
        node["stale"] = nid in stale_ids
        node["missing"] = node["current_sha256"] is None
    unrecorded = [n for n in order if nodes[n]["kind"] == "unrecorded"]
    return {
        "artifact": start,
        "results_root": str(root.resolve()),
        "nodes": nodes,
        "order": order,
        "raw": [n for n in order if nodes[n]["kind"] == "raw"],
        "stale": stale,
        "unrecorded": unrecorded,
        "ok": not stale and not unrecorded,
    }


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "MISSING"


def _compact(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def format_trace(tree: dict) -> str:
    """Human-readable trace: artifacts (consumers first), then raw inputs, then problems."""
    nodes = tree["nodes"]
    lines = [f"provenance of {tree['artifact']}  (results root: {tree['results_root']})"]
    for nid in tree["order"]:
        n = nodes[nid]
        if n["kind"] == "raw":
            continue
        flag = "  [STALE]" if n["stale"] else ""
        if n["kind"] == "unrecorded":
            lines.append(f"* {nid}  sha256 {_short(n['current_sha256'])}  [NO SIDECAR]")
            continue
        git = n.get("git") or {}
        commit = (git.get("commit") or "unknown")[:12]
        dirty = {True: " (dirty)", False: "", None: " (dirty: unknown)"}[git.get("dirty")]
        lines.append(f"* {nid}  sha256 {_short(n['recorded_sha256'])}{flag}")
        lines.append(f"    rule {n['rule']}  seed {n['seed']}  git {commit}{dirty}  at {n['time_utc']}")
        if n.get("wildcards"):
            lines.append(f"    wildcards {_compact(n['wildcards'])}")
        lines.append(f"    config {_compact(n.get('config') or {})}")
        if n.get("params"):
            lines.append(f"    params {_compact(n['params'])}")
        if n["inputs"]:
            lines.append(f"    inputs {', '.join(n['inputs'])}")
    if tree["raw"]:
        lines.append("raw inputs:")
        for nid in tree["raw"]:
            n = nodes[nid]
            state = "MISSING" if n["missing"] else ("STALE" if n["stale"] else "ok")
            lines.append(f"  {nid}  sha256 {_short(n['recorded_sha256'])}  [{state}]")
    for s in tree["stale"]:
        who = f"consumed by {s['consumer']}" if s["consumer"] else "its own sidecar"
        lines.append(f"STALE: {s['input']} ({who}) recorded {_short(s['recorded'])}, "
                     f"now {_short(s['current'])}")
    for nid in tree["unrecorded"]:
        lines.append(f"NO SIDECAR: {nid} (no provenance recorded for this results artifact)")
    return "\n".join(lines)
