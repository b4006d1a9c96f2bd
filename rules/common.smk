# Config validation and the functions that expand the config into targets.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))  # the m4i package beside the Snakefile

from m4i.config import check_config
from m4i.io import M4IError

try:
    check_config(config)
except M4IError as exc:
    raise WorkflowError(f"invalid config: {exc}")

STUDY = config["study"]
R = f"results/{STUDY}"
SEEDS = config["seeds"]
PROTOCOL = config["splits"]["protocol"]
CONTROL = config["splits"].get("confounded_control")
GPU = 0 if config["device"] == "cpu" else 1
THREADS = config.get("threads", 2)
ENV = "../envs/m4i.yaml"
SPLIT_NAMES = ["target_in", "target_out", "shadow_in", "shadow_out", "mfe", "heldout"]
MEMBER_SPLIT = {"target": "target_in", "shadow": "shadow_in"}
NONMEMBER_SPLIT = {"target": "target_out", "shadow": "shadow_out"}
SYNTHETIC = [d for d, c in config["datasets"].items() if c["kind"] == "synthetic"]
REAL = [d for d, c in config["datasets"].items() if c["kind"] != "synthetic"]


def _alternatives(names):
    # A regex that matches none of nothing: keeps a rule unusable when no dataset is of its kind.
    return "|".join(names) if names else "(?!x)x"


wildcard_constraints:
    dataset="[A-Za-z0-9]+",
    arch="[A-Za-z0-9]+",
    role="target|shadow[0-9]+",
    seed="[0-9]+",
    split="|".join(SPLIT_NAMES),
    protocol="disjoint|paper_protocol_confounded",
    feat="[A-Za-z0-9]+",
    mfe="[A-Za-z0-9]+",
    scenario="[-_A-Za-z0-9]+",
    attack="[-A-Za-z0-9]+",
    model="[A-Za-z0-9]+-[A-Za-z0-9]+-(target|shadow[0-9]+)-s[0-9]+",


# ---------------------------------------------------------------- scenarios and models
def scenarios():
    """Configured scenarios, plus the blind-only confounded control when requested."""
    out = {}
    for name, scn in config["scenarios"].items():
        out[name] = dict(scn, protocol=PROTOCOL, attacks=scn.get("attacks") or list(config["attacks"]))
    if CONTROL and PROTOCOL == "disjoint":
        side = {"dataset": CONTROL["dataset"], "arch": None}
        blind = [a for a, c in config["attacks"].items() if c["signal"] == "blind"]
        out["unrestricted-paper-protocol-confounded"] = dict(
            target=side, shadow=side, protocol="paper_protocol_confounded", attacks=blind
        )
    return out


def model_id(side, role, seed):
    return f"{side['dataset']}-{side['arch']}-{role}-s{seed}"


def scenario_models(scn, seed):
    return model_id(scn["target"], "target", seed), model_id(scn["shadow"], "shadow0", seed)


def parse_model_id(mid):
    dataset, arch, role, seed = mid.split("-")
    return dict(dataset=dataset, arch=arch, role=role.rstrip("0123456789"), seed=int(seed[1:]))


def arch_features(arch):
    """Name of the cached feature extractor a captioner reads, or None for end-to-end encoders."""
    return (config["captioners"][arch].get("encoder") or {}).get("features")


def splits_file(dataset, seed, protocol=PROTOCOL):
    return f"{R}/splits/{dataset}/{protocol}-s{seed}.json"


def manifest(dataset):
    return f"{R}/data/{dataset}/manifest.parquet"


def nonmember_dataset(dataset, protocol):
    if protocol == "disjoint":
        return None
    if CONTROL and CONTROL["dataset"] == dataset:
        return CONTROL["nonmember_dataset"]
    raise WorkflowError(f"splits.confounded_control: no non-member dataset configured for {dataset}")


def model_files(mid):
    return {"model": f"{R}/models/{mid}.pt"}


def pretrained_backbone(feat):
    """The pretrain_backbone output a features spec starts from, if it asks for pretraining."""
    return [f"{R}/backbones/{feat}.pt"] if config["features"][feat].get("pretrain") else []


def features_for(dataset, feat):
    return [f"{R}/features/{feat}/{dataset}.pt"] if feat else []


def captions(mid, split):
    return f"{R}/captions/{mid}/{split}.parquet"


def attacked_splits(role):
    return [MEMBER_SPLIT[role], NONMEMBER_SPLIT[role]]


# ---------------------------------------------------------------- attacks
def signal_tables(attack, scn, seed):
    """The four signal tables an attack trains on (shadow) and scores (target)."""
    cfg = config["attacks"][attack]
    tmid, smid = scenario_models(scn, seed) if scn["target"]["arch"] else (None, None)
    out = {}
    for role, mid, side in (("shadow", smid, scn["shadow"]), ("target", tmid, scn["target"])):
        for kind, split in (("in", MEMBER_SPLIT[role]), ("out", NONMEMBER_SPLIT[role])):
            if cfg["signal"] == "metrics":
                path = f"{R}/signals/metrics/{mid}/{split}.parquet"
            elif cfg["signal"] == "mfe":
                path = f"{R}/signals/mfe/{mfe_id(cfg['mfe'], scn, seed)}/{mid}/{split}.parquet"
            else:
                path = f"{R}/signals/blind/{side['dataset']}/{scn['protocol']}-s{seed}/{split}.parquet"
            out[f"{role}_{kind}"] = path
    return out


def mfe_id(mfe, scn, seed):
    """The attacker trains its MFE on the combination set of the shadow's dataset."""
    return f"{mfe}-{scn['shadow']['dataset']}-s{seed}"


def attack_dir(scenario, attack, seed):
    return f"{R}/attacks/{scenario}/{attack}/s{seed}"


def all_attack_metrics():
    return [
        f"{attack_dir(name, attack, seed)}/metrics.json"
        for seed in SEEDS
        for name, scn in scenarios().items()
        for attack in scn["attacks"]
    ]


def all_attack_scores():
    return [p.replace("metrics.json", "scores.parquet") for p in all_attack_metrics()]


def all_models():
    mids = []
    for seed in SEEDS:
        for scn in scenarios().values():
            if scn["target"]["arch"]:
                mids.extend(scenario_models(scn, seed))
    return sorted(set(mids))


def all_utility():
    return [f"{R}/utility/{mid}.json" for mid in all_models()]


def all_mfe_quality():
    ids = set()
    for seed in SEEDS:
        for name, scn in scenarios().items():
            for attack in scn["attacks"]:
                cfg = config["attacks"][attack]
                if cfg["signal"] == "mfe":
                    ids.add(mfe_id(cfg["mfe"], scn, seed))
    return sorted(f"{R}/mfe/{i}.quality.json" for i in ids)


def all_splits():
    out = {splits_file(d, s) for d in config["datasets"] for s in SEEDS}
    if CONTROL:
        out |= {splits_file(CONTROL["dataset"], s, "paper_protocol_confounded") for s in SEEDS}
    return sorted(out)


def data_targets():
    """The data part of the study: manifests, splits and the vocabularies of every training set."""
    vocabs = [
        f"{R}/vocab/{d}/{PROTOCOL}-s{s}-{split}.json"
        for d in config["datasets"]
        for s in SEEDS
        for split in ("target_in", "shadow_in")
    ]
    return [manifest(d) for d in config["datasets"]] + all_splits() + vocabs


def stage_config(*keys):
    """The config values a rule depends on, recorded in its provenance sidecar."""
    out = {}
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out
