"""What a model, an MFE, an attack and a scenario *are*, and the one place they become paths.

Why: these identities used to live in hyphen-joined strings (``shapes-lstm-target-s0``) that
rules, scripts and the report each split again in their own way. Here each identity is a frozen
dataclass with named fields. ``str(x)`` is its key (used in file names), ``X.parse(key)`` reads a
key back, ``X.PATTERN`` is the regular expression Snakemake constrains the wildcard with, and
``Layout`` maps identities to artifact paths under ``results/<study>/``. No other code builds or
splits a key.

Keys (``[A-Za-z0-9]`` names joined by ``-``; config names cannot contain ``-``):

- model: ``<dataset>-<arch>-<role><index>-s<seed>[-<defense>][-paper-protocol-confounded]``,
  role ``target`` (no index), ``shadow<i>`` or ``ref<i>``; e.g. ``shapes-lstm-shadow0-s0``.
- MFE: ``<mfe>-<dataset>-s<seed>[-paper-protocol-confounded]``; e.g. ``clip-shapes-s0``.
- scenario: ``<name>[-paper-protocol-confounded][@<defense>-<attacker>]``, attacker ``unaware``
  (undefended shadows) or ``adaptive`` (shadows trained with the target's defense).

Nothing here imports anything heavy: the Snakefile imports this module at parse time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from m4i.io import M4IError
from m4i.names import ATTACKERS, CALIBRATED_METHODS, DEFAULT_PROTOCOL, FAMILY_OF_METHOD, FAMILY_OF_SIGNAL, PROTOCOLS, ROLES

NAME = "[A-Za-z0-9]+"
SEED = "[0-9]+"
# The one non-default protocol is spelled out in every key it touches, so that no artifact of the
# original code's confounded split can be mistaken for one of the honest study.
PROTOCOL_SUFFIX = {"disjoint": "", "paper_protocol_confounded": "-paper-protocol-confounded"}
_SUFFIX_RE = "|".join(re.escape(s) for s in PROTOCOL_SUFFIX.values() if s)


def _protocol_of(suffix: str | None) -> str:
    for protocol, s in PROTOCOL_SUFFIX.items():
        if s == (suffix or ""):
            return protocol
    raise M4IError(f"unknown protocol suffix {suffix!r}")  # pragma: no cover - the regex forbids it


def _check_name(value, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(NAME, value):
        raise M4IError(f"{what} must match {NAME} (letters and digits only), got {value!r}")
    return value


def _check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise M4IError(f"unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")
    return protocol


def _parse(cls, key: str, regex: re.Pattern, what: str):
    m = regex.fullmatch(str(key))
    if m is None:
        raise M4IError(f"{key!r} is not a {what} key ({cls.__doc__.splitlines()[0]})")
    return m


# --------------------------------------------------------------------------------------- models
@dataclass(frozen=True, order=True)
class ModelId:
    """<dataset>-<arch>-<role><index>-s<seed>[-<defense>][-paper-protocol-confounded]"""

    dataset: str
    arch: str
    role: str
    index: int | None
    seed: int
    defense: str | None = None
    protocol: str = DEFAULT_PROTOCOL

    PATTERN = (f"{NAME}-{NAME}-(?:target|shadow[0-9]+|ref[0-9]+)-s{SEED}(?:-{NAME})?"
               f"(?:{_SUFFIX_RE})?")
    _RE = re.compile(
        rf"(?P<dataset>{NAME})-(?P<arch>{NAME})-(?P<role>target|shadow|ref)(?P<index>[0-9]*)"
        rf"-s(?P<seed>{SEED})(?:-(?P<defense>{NAME}))?(?P<protocol>{_SUFFIX_RE})?"
    )

    def __post_init__(self):
        _check_name(self.dataset, "model dataset")
        _check_name(self.arch, "model arch")
        if self.role not in ROLES:
            raise M4IError(f"model role must be one of {list(ROLES)}, got {self.role!r}")
        if (self.role == "target") != (self.index is None):
            raise M4IError(f"model role {self.role!r}: the target has no index, shadows and references have one")
        if self.index is not None and (not isinstance(self.index, int) or self.index < 0):
            raise M4IError(f"model index must be an integer >= 0, got {self.index!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise M4IError(f"model seed must be an integer >= 0, got {self.seed!r}")
        if self.defense is not None:
            _check_name(self.defense, "model defense")
        _check_protocol(self.protocol)

    def __str__(self) -> str:
        index = "" if self.index is None else str(self.index)
        defense = f"-{self.defense}" if self.defense else ""
        return f"{self.dataset}-{self.arch}-{self.role}{index}-s{self.seed}{defense}{PROTOCOL_SUFFIX[self.protocol]}"

    @classmethod
    def parse(cls, key: str) -> "ModelId":
        m = _parse(cls, key, cls._RE, "model")
        role, index = m["role"], m["index"]
        if (role == "target") != (index == ""):
            raise M4IError(f"{key!r}: the target has no index, shadows and references have one")
        return cls(m["dataset"], m["arch"], role, int(index) if index else None, int(m["seed"]),
                   m["defense"], _protocol_of(m["protocol"]))

    @property
    def role_index(self) -> str:
        """``target``, ``shadow<i>`` or ``ref<i>``: the model's place in its scenario."""
        return self.role if self.index is None else f"{self.role}{self.index}"

    def undefended(self) -> "ModelId":
        """The same model trained without a defense (its twin: same data, same seed)."""
        return replace(self, defense=None)

    def fields(self) -> dict:
        """The identity as plain JSON fields (for metrics.json and table rows)."""
        return {"model_id": str(self), "dataset": self.dataset, "arch": self.arch, "role": self.role,
                "index": self.index, "seed": self.seed, "defense": self.defense, "protocol": self.protocol}


# ----------------------------------------------------------------------------------------- MFEs
@dataclass(frozen=True, order=True)
class MfeId:
    """<mfe>-<dataset>-s<seed>[-paper-protocol-confounded]: an MFE trained on a dataset's `mfe` split"""

    mfe: str
    dataset: str
    seed: int
    protocol: str = DEFAULT_PROTOCOL

    PATTERN = f"{NAME}-{NAME}-s{SEED}(?:{_SUFFIX_RE})?"
    _RE = re.compile(rf"(?P<mfe>{NAME})-(?P<dataset>{NAME})-s(?P<seed>{SEED})(?P<protocol>{_SUFFIX_RE})?")

    def __post_init__(self):
        _check_name(self.mfe, "MFE name")
        _check_name(self.dataset, "MFE dataset")
        _check_protocol(self.protocol)

    def __str__(self) -> str:
        return f"{self.mfe}-{self.dataset}-s{self.seed}{PROTOCOL_SUFFIX[self.protocol]}"

    @classmethod
    def parse(cls, key: str) -> "MfeId":
        m = _parse(cls, key, cls._RE, "MFE")
        return cls(m["mfe"], m["dataset"], int(m["seed"]), _protocol_of(m["protocol"]))


# -------------------------------------------------------------------------------------- attacks
@dataclass(frozen=True)
class AttackId:
    """An attack of the config: its name and what it is (family, signal, method, access)."""

    name: str
    family: str
    signal: str
    method: str
    access: str
    uses_references: bool
    mfe: str | None = None
    queries: int = 1

    PATTERN = "[-A-Za-z0-9]+"

    def __str__(self) -> str:
        return self.name

    @property
    def calibrated(self) -> bool:
        """Per-example calibration against reference models (LiRA, RMIA)."""
        return self.method in CALIBRATED_METHODS

    @property
    def online(self) -> bool:
        """Reference models trained on the candidates (online) rather than without them."""
        return self.method.endswith("_online")

    def fields(self) -> dict:
        return {"attack": self.name, "family": self.family, "signal": self.signal, "method": self.method,
                "access": self.access, "uses_references": self.uses_references, "mfe": self.mfe,
                "queries": self.queries, "calibrated": self.calibrated}


# Signal columns that are computed from the record's reference captions (an FB attack that
# reads them needs references, like every MB attack).
REFERENCE_COLUMNS = {"mfe": ("ref_cos",)}


def attack_identity(name: str, cfg: dict) -> AttackId:
    """The identity of config entry ``attacks.<name>``: what it needs and what it is."""
    signal = cfg["signal"]
    if signal not in FAMILY_OF_SIGNAL:
        raise M4IError(f"config key attacks.{name}.signal: unknown signal {signal!r}")
    features = cfg.get("features", "all")
    ref_cols = REFERENCE_COLUMNS.get(signal, ())
    if signal in ("metrics", "blind", "loglik"):
        # similarity to / statistics of / likelihood of the record's reference captions
        uses_refs = True
    else:
        uses_refs = features == "all" or any(c in ref_cols for c in features)
    queries = int(cfg.get("queries", 1))
    if signal == "blind":
        access = "none"
    elif signal == "loglik":
        access = "gray-box"
    elif queries > 1:
        access = "multi-query"
    else:
        access = "black-box"
    method = cfg["method"]
    return AttackId(
        name=name, family=FAMILY_OF_METHOD.get(method, FAMILY_OF_SIGNAL[signal]), signal=signal, method=method,
        access=access, uses_references=bool(uses_refs), mfe=cfg.get("mfe"), queries=queries,
    )


# ------------------------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class ScenarioId:
    """<name>[-paper-protocol-confounded][@<defense>-<attacker>]: one attacked target and its attacker"""

    name: str
    protocol: str = DEFAULT_PROTOCOL
    defense: str | None = None
    attacker: str | None = None

    NAME_PATTERN = "(?:unrestricted|data-restricted|model-restricted|fully-restricted)[-_A-Za-z0-9]*"
    PATTERN = (f"{NAME_PATTERN}?(?:{_SUFFIX_RE})?(?:@{NAME}-(?:{'|'.join(ATTACKERS)}))?")
    _RE = re.compile(
        rf"(?P<name>{NAME_PATTERN}?)(?P<protocol>{_SUFFIX_RE})?"
        rf"(?:@(?P<defense>{NAME})-(?P<attacker>{'|'.join(ATTACKERS)}))?"
    )

    def __post_init__(self):
        if not re.fullmatch(self.NAME_PATTERN, self.name) or self.name.endswith(tuple(s for s in PROTOCOL_SUFFIX.values() if s)):
            raise M4IError(f"scenario name {self.name!r} must match {self.NAME_PATTERN} and not end "
                           f"with a protocol suffix")
        _check_protocol(self.protocol)
        if (self.defense is None) != (self.attacker is None):
            raise M4IError("a scenario names a defense and an attacker model together, or neither")
        if self.defense is not None:
            _check_name(self.defense, "scenario defense")
            if self.attacker not in ATTACKERS:
                raise M4IError(f"scenario attacker must be one of {list(ATTACKERS)}, got {self.attacker!r}")

    def __str__(self) -> str:
        defended = f"@{self.defense}-{self.attacker}" if self.defense else ""
        return f"{self.name}{PROTOCOL_SUFFIX[self.protocol]}{defended}"

    @classmethod
    def parse(cls, key: str) -> "ScenarioId":
        m = _parse(cls, key, cls._RE, "scenario")
        return cls(m["name"], _protocol_of(m["protocol"]), m["defense"], m["attacker"])

    def fields(self) -> dict:
        return {"scenario": str(self), "scenario_name": self.name, "protocol": self.protocol,
                "defense": self.defense, "attacker": self.attacker}


# --------------------------------------------------------------------------------------- layout
class Layout:
    """Every artifact path of one study, relative to the working directory.

    Each method takes identities (or Snakemake wildcard strings such as ``"{model}"``) and
    returns a path string under ``results/<study>``; rules use it with wildcards, scripts and
    the report with concrete identities.
    """

    def __init__(self, study: str, base: str = "results"):
        self.study = study
        self.root = f"{base}/{study}"

    @classmethod
    def of(cls, config: dict) -> "Layout":
        return cls(config["study"])

    def _p(self, *parts) -> str:
        return "/".join([self.root, *map(str, parts)])

    # data
    def manifest(self, dataset) -> str:
        return self._p("data", dataset, "manifest.parquet")

    def images(self, dataset) -> str:
        return self._p("data", dataset, "images")

    def splits(self, dataset, protocol, seed) -> str:
        return self._p("splits", dataset, f"{protocol}-s{seed}.json")

    # captioners
    def backbone(self, feat) -> str:
        return self._p("backbones", f"{feat}.pt")

    def backbone_history(self, feat) -> str:
        return self._p("backbones", f"{feat}.pretrain.csv")

    def features(self, feat, dataset) -> str:
        return self._p("features", feat, f"{dataset}.pt")

    def model(self, model) -> str:
        return self._p("models", f"{model}.pt")

    def model_loss(self, model) -> str:
        return self._p("models", f"{model}.loss.csv")

    def model_members(self, model) -> str:
        return self._p("models", f"{model}.members.json")

    def model_resume(self, model) -> str:
        return self._p("models", f"{model}.resume.pt")

    def captions(self, model) -> str:
        """Every split of a model that something reads (``Plan.caption_splits``) in one table (a
        ``split`` column): one generation job per captioner, not one per split."""
        return self._p("captions", f"{model}.parquet")

    def utility(self, model) -> str:
        return self._p("utility", f"{model}.json")

    # signals and attacks
    def metric_signals(self, model) -> str:
        """All of a model's scored splits in one table (a ``split`` column): one METEOR JVM start
        (~15-20 CPU-s of loading its paraphrase table) per captioner, not per split."""
        return self._p("signals", "metrics", f"{model}.parquet")

    def meteor_table(self) -> str:
        """METEOR's paraphrase table cut to the study's reference vocabulary (rule
        ``meteor_paraphrase``): a METEOR start loads it in under a second, not ~14 CPU-s."""
        return self._p("data", "meteor-paraphrase-en.gz")  # beside the datasets' folders (no "-" in theirs)

    def meteor_vocab(self) -> str:
        return self._p("data", "meteor-paraphrase-en.json")

    def loglik_signals(self, model) -> str:
        """Every split of a model a gray-box attack reads in one table (a ``split`` column)."""
        return self._p("signals", "loglik", f"{model}.parquet")

    def blind_signals(self, dataset, protocol, seed, split) -> str:
        return self._p("signals", "blind", dataset, f"{protocol}-s{seed}", f"{split}.parquet")

    def mfe(self, mfe_id) -> str:
        return self._p("mfe", f"{mfe_id}.pt")

    def mfe_quality(self, mfe_id) -> str:
        return self._p("mfe", f"{mfe_id}.quality.json")

    def mfe_signals(self, model) -> str:
        """Every (MFE, split) of a model some FB attack reads in one table (``mfe`` and ``split``
        columns): one job per captioner, not one per part (each paid ~8 s of imports, measured)."""
        return self._p("signals", "mfe", f"{model}.parquet")

    def attack_dir(self, scenario, attack, seed) -> str:
        return self._p("attacks", scenario, attack, f"s{seed}")

    def attack_scores(self, scenario, attack, seed) -> str:
        return f"{self.attack_dir(scenario, attack, seed)}/scores.parquet"

    def attack_metrics(self, scenario, attack, seed) -> str:
        return f"{self.attack_dir(scenario, attack, seed)}/metrics.json"

    # results
    def table(self, name, ext) -> str:
        return self._p("tables", f"{name}.{ext}")

    def figure(self, name, ext) -> str:
        return self._p("figures", f"{name}.{ext}")

    def headline(self) -> str:
        return self._p("metrics.json")

    def log(self, *parts) -> str:
        return self._p("logs", *parts)

    def benchmark(self, *parts) -> str:
        return self._p("benchmarks", *parts)

    @staticmethod
    def root_of(path: str | Path) -> Path:
        """The results root (``results/<study>``) above an artifact path, e.g. a table."""
        p = Path(path).resolve()
        for parent in p.parents:
            if parent.parent.name == "results":
                return parent
        raise M4IError(f"{path} is not under a results/<study>/ folder; pass the results root explicitly")
