# Config validation, and thin wrappers around m4i.plan, which expands the config into targets.
# Identities (models, MFEs, scenarios, attacks) and their paths live in m4i/identity.py; closed
# lists of names in m4i/names.py; which package code each rule runs in m4i/codedeps.py.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))  # the m4i package beside the Snakefile

from m4i.codedeps import code_hash
from m4i.config import canonical, check_config
from m4i.identity import Layout, MfeId, ModelId, ScenarioId
from m4i.io import M4IError, flat_paths
from m4i.names import FIGURE_NAMES, PROTOCOLS, REAL_DATASET_KINDS, SPLIT_NAMES, TABLE_NAMES
from m4i.plan import Plan

try:
    check_config(config)
except M4IError as exc:
    raise WorkflowError(f"invalid config: {exc}")

PLAN = Plan(config)
L = PLAN.layout
R = L.root
GPU = 0 if config["device"] == "cpu" else 1
THREADS = config.get("threads", 2)
ENV = "../envs/m4i.yaml"
SYNTHETIC = [d for d, c in config["datasets"].items() if c["kind"] == "synthetic"]
REAL = [d for d, c in config["datasets"].items() if c["kind"] in REAL_DATASET_KINDS]


def _alternatives(names):
    # A regex that matches none of nothing: keeps a rule unusable when no dataset is of its kind.
    return "|".join(names) if names else "(?!x)x"


wildcard_constraints:
    dataset="[A-Za-z0-9]+",
    seed="[0-9]+",
    split="|".join(SPLIT_NAMES),
    protocol="|".join(PROTOCOLS),
    feat="[A-Za-z0-9]+",
    model=ModelId.PATTERN,
    mfe_id=MfeId.PATTERN,
    scenario=ScenarioId.PATTERN,
    attack="[-A-Za-z0-9]+",


def code(script, *modules):
    """Hash of a rule's script and every package module it can run (params: reruns on code change);
    ``modules``: those a job imports by name at run time (e.g. its defense)."""
    return code_hash(Path(workflow.basedir) / "scripts" / script, extra=tuple(modules))


def model_of(wc):
    return ModelId.parse(wc.model)


def stage_config(*keys):
    """The config values a rule depends on, recorded in its provenance sidecar (key order
    canonical: reordering a config's keys reruns nothing)."""
    out = {}
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        out[key] = canonical(node)
    return out
