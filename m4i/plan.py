"""The study a config describes, expanded into identities: scenarios, models, MFEs, attacks.

The Snakemake rules ask this module what to build (``rules/common.smk`` holds only thin
wrappers); it is plain Python, so the expansion is unit-tested without Snakemake. Paths come
from ``m4i.identity.Layout``.

A scenario (config ``scenarios.<name>``) names a target side and a shadow side (dataset and
captioner each); ``n_shadows: K`` gives the attacker K shadow captioners of the shadow side
(default 1), ``references: K`` K reference captioners (the shadow side's captioner trained on
random halves of the target's candidates: LiRA's online reference models). With
``splits.confounded_control`` the first ``unrestricted`` scenario of that dataset also runs on the
original code's confounded split. With ``defenses`` and ``defense_evaluation``, the listed
scenarios also run against each defended target, once per attacker model (``unaware``: the
undefended shadows; ``adaptive``: shadows trained with the same defense).

Which attacks run where: a scenario's ``attacks`` (default all), minus those it cannot run:
calibrated attacks need K >= 4 reference captioners (online) or K >= 2 shadows of the target's
dataset (offline) and are not run against defended targets (K defended reference captioners per
defense would multiply the study's cost); multi-query attacks (``queries`` > 1) run only where
the target answers with sampled captions. An attack a scenario names in its own ``attacks`` list
that cannot run there is a config error, not a silent skip.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from m4i.identity import AttackId, Layout, MfeId, ModelId, ScenarioId, attack_identity
from m4i.io import M4IError
from m4i.names import ATTACKERS, DEFAULT_PROTOCOL, SPLIT_NAMES

# Signals kept in one table per captioner (every part of it some attack reads; m4i.io.read_split).
SIGNAL_TABLES = ("metrics", "mfe", "loglik")

# The records a calibrated attack reads of every model: the candidates and the population
# (held-out records no captioner trains on; RMIA's z).
CALIBRATION_SPLITS = ("target_in", "target_out", "heldout")


@dataclass(frozen=True)
class ScenarioPlan:
    """One scenario at one seed: who is attacked, by which shadows, with which attacks."""

    id: ScenarioId
    seed: int
    target: ModelId
    shadows: tuple[ModelId, ...]
    attacks: tuple[str, ...]
    refs: tuple[ModelId, ...] = ()
    target_side: dict = field(compare=False, hash=False, default=None)
    shadow_side: dict = field(compare=False, hash=False, default=None)


class Plan:
    """Everything the config asks for, as identities and paths."""

    def __init__(self, config: dict):
        self.config = config
        self.layout = Layout.of(config)
        self.seeds = list(config["seeds"])
        self.protocol = config["splits"]["protocol"]
        self.control = config["splits"].get("confounded_control")
        self.attack_ids = {name: attack_identity(name, cfg) for name, cfg in config["attacks"].items()}
        self._scenarios: dict[int, tuple[ScenarioPlan, ...]] = {}  # per seed: the config is fixed
        # signal -> model -> the (table key, split) parts attacks read (``signal_parts``)
        self._signal_reads: dict[str, dict[ModelId, set[tuple[str | None, str]]]] | None = None
        self._check_defenses()

    def _check_defenses(self) -> None:
        """Refuse, naming the config key, a defended scenario its captioners cannot run."""
        evaluation = self.config.get("defense_evaluation") or {}
        defenses = self.config.get("defenses") or {}
        if evaluation and not defenses:
            raise M4IError("config key defense_evaluation: no defenses configured (config key defenses)")
        if not evaluation:
            return
        from m4i.defenses import check, training_side

        for name in evaluation["scenarios"]:
            if name not in self.config["scenarios"]:
                raise M4IError(f"config key defense_evaluation.scenarios: unknown scenario {name!r}")
            scn = self.config["scenarios"][name]
            for defense, cfg in defenses.items():
                check(defense, cfg, self.config["captioners"][scn["target"]["arch"]])
                if "adaptive" in evaluation.get("attackers", ATTACKERS):
                    check(defense, cfg, self.config["captioners"][scn["shadow"]["arch"]])
                if (training_side(cfg) and cfg["kind"] == "regularize" and cfg.get("early_stopping", True)
                        and not self.config["splits"]["sizes"].get("val")):
                    raise M4IError(f"config key defenses.{defense}: early stopping needs a validation split "
                                   "(config key splits.sizes.val > 0)")

    # ---------------------------------------------------------------------- attacks and scenarios
    def attack(self, name: str) -> AttackId:
        if name not in self.attack_ids:
            raise M4IError(f"unknown attack {name!r}; configured: {sorted(self.attack_ids)}")
        return self.attack_ids[name]

    def attacks_with(self, signal: str) -> list[str]:
        return [n for n, a in self.attack_ids.items() if a.signal == signal]

    def _scenario(self, sid: ScenarioId, scn: dict, seed: int, attacks, n_shadows: int | None = None,
                  n_refs: int | None = None, explicit: str | None = None) -> ScenarioPlan:
        t, s = scn["target"], scn["shadow"]
        target = ModelId(t["dataset"], t["arch"], "target", None, seed, sid.defense, sid.protocol)
        shadow_defense = sid.defense if sid.attacker == "adaptive" else None
        k = int(scn.get("n_shadows", 1) if n_shadows is None else n_shadows)
        shadows = tuple(ModelId(s["dataset"], s["arch"], "shadow", i, seed, shadow_defense, sid.protocol)
                        for i in range(k))
        r = int(scn.get("references", 0) if n_refs is None else n_refs)
        refs = tuple(ModelId(t["dataset"], s["arch"], "ref", i, seed, None, sid.protocol) for i in range(r))
        plan = ScenarioPlan(sid, seed, target, shadows, (), refs, t, s)
        if explicit:  # asked for by name: an attack that cannot run here is a config error
            for a in attacks:
                reason = self.why_not(plan, a)
                if reason:
                    raise M4IError(f"config key {explicit}: attack {a!r} cannot run in scenario {sid}: {reason}")
        runnable = tuple(a for a in attacks if self.runnable(plan, a))
        return ScenarioPlan(sid, seed, target, shadows, runnable, refs, t, s)

    def runnable(self, plan: ScenarioPlan, attack: str) -> bool:
        """Whether the scenario has what ``attack`` needs (see the module docstring)."""
        return self.why_not(plan, attack) is None

    def why_not(self, plan: ScenarioPlan, attack: str) -> str | None:
        """Why ``attack`` cannot run in the scenario, or None if it can."""
        a = self.attack(attack)
        if a.calibrated and plan.id.defense is not None:
            return "calibrated attacks are not run against defended targets"
        if a.calibrated and a.online and len(plan.refs) < 4:
            # every candidate is IN for about K/2 references: K >= 4 leaves each of its two
            # Gaussians at least one degree of freedom for the variance
            return "an online calibrated attack needs `references: K` with K >= 4"
        if a.calibrated and not a.online:  # offline: the shadows are the OUT reference models
            if plan.shadow_side["dataset"] != plan.target_side["dataset"]:
                # they must be queried on the target's candidates, which are records of the
                # target's dataset: shadows of another dataset cannot serve
                return "an offline calibrated attack needs shadows of the target's dataset"
            if plan.id.protocol != DEFAULT_PROTOCOL:
                # the original code's split lets shadow members overlap the target's: a candidate
                # can be IN every shadow, leaving it no OUT reference model (found on the default study)
                return "an offline calibrated attack needs OUT reference models, and the confounded split's shadows train on target members"
            if len(plan.shadows) < 2:
                # one OUT value per candidate leaves no degrees of freedom for its Gaussian's variance
                return "an offline calibrated attack needs `n_shadows: K` with K >= 2"
        if a.queries > 1 and self.decode_of(plan.target)["method"] != "sample":
            return "a multi-query attack needs a target that samples its captions"
        return None

    def scenarios(self, seed: int) -> list[ScenarioPlan]:
        """Configured scenarios (in config order), the confounded control, then the defended ones.

        Built once per seed: Snakemake asks for them from every job's input and params functions
        (building them each time was ~2 s of every Snakemake start on the default study)."""
        if seed not in self._scenarios:
            self._scenarios[seed] = tuple(self._build_scenarios(seed))
        return list(self._scenarios[seed])

    def _build_scenarios(self, seed: int) -> list[ScenarioPlan]:
        out = []
        for name, scn in self.config["scenarios"].items():
            attacks = scn.get("attacks") or list(self.attack_ids)
            out.append(self._scenario(ScenarioId(name, self.protocol), scn, seed, attacks,
                                      explicit=f"scenarios.{name}.attacks" if scn.get("attacks") else None))
        if self.control and self.protocol == DEFAULT_PROTOCOL:
            base = self._control_base()
            scn = self.config["scenarios"][base]
            attacks = self.control.get("attacks") or scn.get("attacks") or list(self.attack_ids)
            out.append(self._scenario(ScenarioId(base, "paper_protocol_confounded"), scn, seed, attacks,
                                      explicit="splits.confounded_control.attacks" if self.control.get("attacks") else None))
        evaluation = self.config.get("defense_evaluation") or {}
        for name in evaluation.get("scenarios", []):
            scn = self.config["scenarios"][name]
            attacks = evaluation.get("attacks") or scn.get("attacks") or list(self.attack_ids)
            for defense in self.config.get("defenses") or {}:
                for attacker in evaluation.get("attackers", ATTACKERS):
                    sid = ScenarioId(name, self.protocol, defense, attacker)
                    out.append(self._scenario(sid, scn, seed, attacks, n_shadows=evaluation.get("n_shadows", 1),
                                              n_refs=0))
        return out

    def _control_base(self) -> str:
        """The scenario the confounded control copies: the first unrestricted one on its dataset."""
        ds = self.control["dataset"]
        for name, scn in self.config["scenarios"].items():
            if name.startswith("unrestricted") and scn["target"]["dataset"] == ds:
                return name
        raise M4IError(f"config key splits.confounded_control.dataset: no unrestricted scenario targets {ds!r}")

    def n_refs(self, model: ModelId) -> int | None:
        """K of a reference captioner's scenario (its members are row i of a K-model matrix)."""
        if model.role != "ref":
            return None
        ks = {len(p.refs) for seed in self.seeds for p in self.scenarios(seed) if model in p.refs}
        if len(ks) != 1:
            raise M4IError(f"{model}: reference captioner of scenarios with different K {sorted(ks)}")
        return ks.pop()

    def scenario(self, key: str, seed: int) -> ScenarioPlan:
        for plan in self.scenarios(seed):
            if str(plan.id) == key:
                return plan
        raise M4IError(f"unknown scenario {key!r}")

    def attack_runs(self) -> list[tuple[ScenarioPlan, str]]:
        return [(p, a) for seed in self.seeds for p in self.scenarios(seed) for a in p.attacks]

    def attack_jobs(self) -> dict[str, tuple[str, ...]]:
        """Scenario key -> its attacks, which one job per scenario and seed runs together (the
        attacks share the job's start, ~2 s of imports each, and its signal tables: measured, 106
        one-attack jobs were ~330 s of the default study's job time, the attacks ~65 s of it).
        A scenario's attacks come from the config alone, so they are the same at every seed."""
        out: dict[str, tuple[str, ...]] = {}
        for plan in (p for seed in self.seeds for p in self.scenarios(seed)):
            if out.setdefault(str(plan.id), plan.attacks) != plan.attacks:
                raise M4IError(f"scenario {plan.id}: its attacks differ between seeds")
        return out

    @staticmethod
    def attack_rule(key: str) -> str:
        """The Snakemake rule of scenario ``key``'s attack jobs (a rule name is an identifier)."""
        return "attack_" + key.replace("-", "_").replace("@", "__")

    # ------------------------------------------------------------------------------------ models
    def queried(self, plan: ScenarioPlan, attack: str) -> bool:
        """Whether ``attack`` queries the scenario's captioners (the blind baseline never does)."""
        return self.attack(attack).access != "none"

    def queried_models(self, plan: ScenarioPlan, attack: str) -> list[ModelId]:
        """The captioners ``attack`` reads signals of in ``plan``."""
        a = self.attack(attack)
        if a.access == "none":
            return []
        if a.calibrated:
            return [plan.target, *(plan.refs if a.online else plan.shadows)]
        return [plan.target, *plan.shadows]

    def models(self) -> list[ModelId]:
        """Every captioner some attack queries, sorted by key (a defended key may share its
        weights with the undefended twin: see ``weights_of``)."""
        out = set()
        for plan, attack in self.attack_runs():
            out.update(self.queried_models(plan, attack))
        return sorted(out, key=str)

    def trained_models(self) -> list[ModelId]:
        """Every captioner whose weights a job trains."""
        return sorted({self.weights_of(m) for m in self.models()}, key=str)

    # --------------------------------------------------------------------------------- defenses
    def defense(self, name: str | None) -> dict | None:
        if name is None:
            return None
        try:
            return self.config["defenses"][name]
        except (KeyError, TypeError):
            raise M4IError(f"unknown defense {name!r}; configured: {sorted(self.config.get('defenses') or {})}") from None

    def training_side(self, model: ModelId) -> bool:
        """Whether the model's defense changes its training (else it reuses the twin's weights)."""
        cfg = self.defense(model.defense)
        if cfg is None:
            return False
        from m4i.defenses import training_side

        return training_side(cfg)

    def weights_of(self, model: ModelId) -> ModelId:
        """The model whose trained weights ``model`` answers with: itself, or for an output-side
        defense (a decoding change) its undefended twin."""
        return model if model.defense is None or self.training_side(model) else model.undefended()

    def decode_of(self, model: ModelId) -> dict:
        """The decode settings the model answers queries with (an output-side defense's own), and
        for a sampling model as many queries as the most demanding multi-query attack asks."""
        decode = dict(self.config["captioners"][model.arch]["decode"])
        cfg = self.defense(model.defense)
        if cfg is not None:
            from m4i.defenses import decode_for

            decode = decode_for(cfg, decode)
        if decode.get("method") == "sample":
            decode["queries"] = max([1] + [a.queries for a in self.attack_ids.values()])
        return decode

    def mfe_id(self, plan: ScenarioPlan, attack: str) -> MfeId:
        """The attacker trains its MFE on the combination set of the shadow's dataset."""
        return MfeId(self.attack(attack).mfe, plan.shadow_side["dataset"], plan.seed, plan.id.protocol)

    def mfe_ids(self) -> list[MfeId]:
        return sorted({self.mfe_id(p, a) for p, a in self.attack_runs() if self.attack(a).signal == "mfe"}, key=str)

    def arch_features(self, arch: str) -> str | None:
        """Name of the cached feature extractor a captioner reads, or None for end-to-end encoders."""
        return (self.config["captioners"][arch].get("encoder") or {}).get("features")

    def mfe_features(self, mfe: str) -> str | None:
        cfg = self.config["mfe"][mfe]
        return cfg.get("features") if cfg["kind"] == "paper" else None

    def nonmember_dataset(self, dataset: str, protocol: str) -> str | None:
        if protocol == DEFAULT_PROTOCOL:
            return None
        if self.control and self.control["dataset"] == dataset:
            return self.control["nonmember_dataset"]
        raise M4IError(f"config key splits.confounded_control: no non-member dataset configured for {dataset}")

    # ------------------------------------------------------------------------------------- paths
    @staticmethod
    def pool_splits(model: ModelId) -> tuple[str, str]:
        from m4i.data.membership import pool_splits

        return pool_splits(model)

    def datasets_of(self, model: ModelId) -> list[str]:
        """The datasets a model's records come from: its own, and under the confounded protocol
        the non-member dataset too."""
        other = self.nonmember_dataset(model.dataset, model.protocol)
        return [model.dataset] + ([other] if other else [])

    def manifests_of(self, model: ModelId) -> list[str]:
        return [self.layout.manifest(d) for d in self.datasets_of(model)]

    def features_of(self, model: ModelId, feat: str | None) -> list[str]:
        """The feature caches ``feat`` a job on the model's records reads (none without ``feat``)."""
        return [self.layout.features(feat, d) for d in self.datasets_of(model)] if feat else []

    def splits_of(self, model: ModelId) -> str:
        return self.layout.splits(model.dataset, model.protocol, model.seed)

    def signal_table(self, attack: str, plan: ScenarioPlan, model: ModelId, split: str) -> str:
        """The signal table ``attack`` reads ``model``'s records of ``split`` from (a metric- or
        MFE-signal table holds all of a model's parts: select one with ``m4i.io.read_split`` and
        the keys of ``input_rows``)."""
        a = self.attack(attack)
        L = self.layout
        if a.signal == "metrics":
            return L.metric_signals(model)
        if a.signal == "mfe":
            return L.mfe_signals(model)
        if a.signal == "loglik":
            return L.loglik_signals(model)
        return L.blind_signals(model.dataset, model.protocol, model.seed, split)

    def attack_reads(self, key: str, attack: str, seed: int) -> dict[str, tuple[ModelId, str]]:
        """The per-record signals an attack reads, by input name: (model, split).

        Paper attacks: every shadow on its pool (members and non-members) and the target's
        candidates. Calibrated attacks: the target and every reference model (online: the reference
        captioners; offline: the shadows) on the candidates (``target_in``, ``target_out``) and on
        the population records no captioner trained on (``heldout``).
        """
        plan = self.scenario(key, seed)
        a = self.attack(attack)
        if a.calibrated:
            refs = plan.refs if a.online else plan.shadows
            return {f"{name}_{split}": (model, split)
                    for name, model in [("target", plan.target), *((f"ref{i}", m) for i, m in enumerate(refs))]
                    for split in CALIBRATION_SPLITS}
        out = {f"shadow{i}_{split}": (shadow, split)
               for i, shadow in enumerate(plan.shadows) for split in ("shadow_in", "shadow_out")}
        out.update({split: (plan.target, split) for split in ("target_in", "target_out")})
        return out

    def attack_inputs(self, key: str, attack: str, seed: int) -> dict[str, str]:
        """What an attack reads: the signal tables of ``attack_reads`` and the split file its
        labels come from (paper attacks: the shadows' membership; calibrated attacks: the
        candidates', from which each reference model's membership is derived)."""
        plan = self.scenario(key, seed)
        a = self.attack(attack)
        out = {name: self.signal_table(attack, plan, model, split)
               for name, (model, split) in self.attack_reads(key, attack, seed).items()}
        if a.calibrated:
            refs = plan.refs if a.online else plan.shadows
            out["candidate_splits"] = self.splits_of(plan.target)
            out["reference_splits"] = [self.splits_of(m) for m in refs[:1]]
        else:
            out["shadow_splits"] = self.splits_of(plan.shadows[0])
        return out

    def input_rows(self, key: str, attack: str, seed: int) -> dict[str, dict[str, str]]:
        """Which rows of its table each signal input of an attack stands for (input name ->
        ``m4i.io.read_split`` keys): its ``split``, and for an FB attack the ``mfe`` that scored it."""
        mfe = self._part_key(self.scenario(key, seed), attack)
        extra = {"mfe": mfe} if mfe else {}
        return {name: {"split": split, **extra} for name, (_, split) in self.attack_reads(key, attack, seed).items()}

    def _part_key(self, plan: ScenarioPlan, attack: str) -> str | None:
        """The key beside ``split`` that names an attack's rows in its signal tables (the MFE id)."""
        return str(self.mfe_id(plan, attack)) if self.attack(attack).signal == "mfe" else None

    def signal_parts(self, signal: str, model: ModelId) -> list[tuple[str | None, str]]:
        """What the one ``metric_signals`` (signal ``metrics``), ``mfe_signals`` (``mfe``) or
        ``loglik_signals`` (``loglik``) job of ``model`` scores: every (MFE id or None, split) some
        attack reads, ordered by MFE id, then SPLIT_NAMES. One job per captioner, not per part: each job start costs seconds of imports
        (and a METEOR JVM, ~15-20 CPU-s) that the parts would otherwise pay again."""
        if self._signal_reads is None:
            reads: dict[str, dict[ModelId, set[tuple[str | None, str]]]] = {}
            for plan, attack in self.attack_runs():
                sig = self.attack(attack).signal
                if sig in SIGNAL_TABLES:
                    part = self._part_key(plan, attack)
                    for m, split in self.attack_reads(str(plan.id), attack, plan.seed).values():
                        reads.setdefault(sig, {}).setdefault(m, set()).add((part, split))
            self._signal_reads = reads
        need = self._signal_reads.get(signal, {}).get(model, set())
        return sorted(need, key=lambda p: (p[0] or "", SPLIT_NAMES.index(p[1])))

    def metric_splits(self, model: ModelId) -> list[str]:
        """The splits of ``model`` some attack reads caption-metric signals of, in SPLIT_NAMES order."""
        return [split for _, split in self.signal_parts("metrics", model)]

    def caption_splits(self, model: ModelId) -> list[str]:
        """The splits the one ``generate_captions`` job of ``model`` decodes, in SPLIT_NAMES order:
        what its metric and MFE signals score, and for a captioner whose quality the study
        reports (``utility_models``) the held-out records and its own pool (members)."""
        need = {split for sig in ("metrics", "mfe") for _, split in self.signal_parts(sig, model)}
        if model in self.utility_models():
            need |= {"heldout", *self.pool_splits(model)}
        return [s for s in SPLIT_NAMES if s in need]

    def signal_models(self, signal: str) -> list[ModelId]:
        """Captioners some attack reads ``signal`` (one of SIGNAL_TABLES) of."""
        return [m for m in self.models() if self.signal_parts(signal, m)]

    def attack_metrics(self) -> list[str]:
        return [self.layout.attack_metrics(p.id, a, p.seed) for p, a in self.attack_runs()]

    def utility_models(self) -> list[ModelId]:
        """Captioners whose caption quality the study reports: targets and each scenario's first
        shadow (reference captioners and further shadows share their recipes)."""
        return [m for m in self.models() if m.role == "target" or (m.role == "shadow" and m.index == 0)]

    def utility(self) -> list[str]:
        return [self.layout.utility(m) for m in self.utility_models()]

    def mfe_quality(self) -> list[str]:
        return [self.layout.mfe_quality(m) for m in self.mfe_ids()]

    def all_splits(self) -> list[str]:
        out = {self.layout.splits(d, self.protocol, s) for d in self.config["datasets"] for s in self.seeds}
        if self.control:
            out |= {self.layout.splits(self.control["dataset"], "paper_protocol_confounded", s) for s in self.seeds}
        return sorted(out)

    def data_targets(self) -> list[str]:
        return ([self.layout.manifest(d) for d in self.config["datasets"]] + self.all_splits()
                + [self.layout.meteor_table(), self.layout.meteor_vocab()])
