"""The study a config describes, expanded into identities: scenarios, models, MFEs, attacks.

The Snakemake rules ask this module what to build (``rules/common.smk`` holds only thin
wrappers); it is plain Python, so the expansion is unit-tested without Snakemake. Paths come
from ``m4i.identity.Layout``.

A scenario (config ``scenarios.<name>``) names a target side and a shadow side (dataset and
captioner each); ``n_shadows: K`` gives the attacker K shadow captioners of the shadow side
(default 1). With ``splits.confounded_control`` the blind baseline also runs on the original
code's confounded split, as the first ``unrestricted`` scenario of that dataset with the
protocol swapped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from m4i.identity import AttackId, Layout, MfeId, ModelId, ScenarioId, attack_identity
from m4i.io import M4IError
from m4i.names import DEFAULT_PROTOCOL


@dataclass(frozen=True)
class ScenarioPlan:
    """One scenario at one seed: who is attacked, by which shadows, with which attacks."""

    id: ScenarioId
    seed: int
    target: ModelId
    shadows: tuple[ModelId, ...]
    attacks: tuple[str, ...]
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

    # ---------------------------------------------------------------------- attacks and scenarios
    def attack(self, name: str) -> AttackId:
        if name not in self.attack_ids:
            raise M4IError(f"unknown attack {name!r}; configured: {sorted(self.attack_ids)}")
        return self.attack_ids[name]

    def attacks_with(self, signal: str) -> list[str]:
        return [n for n, a in self.attack_ids.items() if a.signal == signal]

    def _scenario(self, sid: ScenarioId, scn: dict, seed: int, attacks) -> ScenarioPlan:
        t, s = scn["target"], scn["shadow"]
        target = ModelId(t["dataset"], t["arch"], "target", None, seed, sid.defense, sid.protocol)
        shadow_defense = sid.defense if sid.attacker == "adaptive" else None
        shadows = tuple(ModelId(s["dataset"], s["arch"], "shadow", i, seed, shadow_defense, sid.protocol)
                        for i in range(int(scn.get("n_shadows", 1))))
        return ScenarioPlan(sid, seed, target, shadows, tuple(attacks), t, s)

    def scenarios(self, seed: int) -> list[ScenarioPlan]:
        """Configured scenarios (in config order), then the confounded blind-only control."""
        out = []
        for name, scn in self.config["scenarios"].items():
            attacks = scn.get("attacks") or list(self.attack_ids)
            out.append(self._scenario(ScenarioId(name, self.protocol), scn, seed, attacks))
        if self.control and self.protocol == DEFAULT_PROTOCOL:
            base = self._control_base()
            sid = ScenarioId(base, "paper_protocol_confounded")
            out.append(self._scenario(sid, self.config["scenarios"][base], seed, self.attacks_with("blind")))
        return out

    def _control_base(self) -> str:
        """The scenario the confounded control copies: the first unrestricted one on its dataset."""
        ds = self.control["dataset"]
        for name, scn in self.config["scenarios"].items():
            if name.startswith("unrestricted") and scn["target"]["dataset"] == ds:
                return name
        raise M4IError(f"config key splits.confounded_control.dataset: no unrestricted scenario targets {ds!r}")

    def scenario(self, key: str, seed: int) -> ScenarioPlan:
        for plan in self.scenarios(seed):
            if str(plan.id) == key:
                return plan
        raise M4IError(f"unknown scenario {key!r}")

    def attack_runs(self) -> list[tuple[ScenarioPlan, str]]:
        return [(p, a) for seed in self.seeds for p in self.scenarios(seed) for a in p.attacks]

    # ------------------------------------------------------------------------------------ models
    def queried(self, plan: ScenarioPlan, attack: str) -> bool:
        """Whether ``attack`` queries the scenario's captioners (the blind baseline never does)."""
        return self.attack(attack).access != "none"

    def models(self) -> list[ModelId]:
        """Every captioner some attack queries, sorted by key."""
        out = set()
        for plan, attack in self.attack_runs():
            if self.queried(plan, attack):
                out.add(plan.target)
                out.update(plan.shadows)
        return sorted(out, key=str)

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

    def splits_of(self, model: ModelId) -> str:
        return self.layout.splits(model.dataset, model.protocol, model.seed)

    def signal_table(self, attack: str, plan: ScenarioPlan, model: ModelId, split: str) -> str:
        """The per-record signal table ``attack`` reads for ``model``'s records of ``split``."""
        a = self.attack(attack)
        L = self.layout
        if a.signal == "metrics":
            return L.metric_signals(model, split)
        if a.signal == "mfe":
            return L.mfe_signals(self.mfe_id(plan, attack), model, split)
        return L.blind_signals(model.dataset, model.protocol, model.seed, split)

    def attack_inputs(self, key: str, attack: str, seed: int) -> dict[str, str]:
        """Signal tables of every shadow (their whole pool: members and non-members) and of the
        target's members and non-members, plus the shadows' split file (their membership)."""
        plan = self.scenario(key, seed)
        out = {}
        for i, shadow in enumerate(plan.shadows):
            for split in ("shadow_in", "shadow_out"):
                out[f"shadow{i}_{split}"] = self.signal_table(attack, plan, shadow, split)
        for split in ("target_in", "target_out"):
            out[split] = self.signal_table(attack, plan, plan.target, split)
        out["shadow_splits"] = self.splits_of(plan.shadows[0])
        return out

    def attack_metrics(self) -> list[str]:
        return [self.layout.attack_metrics(p.id, a, p.seed) for p, a in self.attack_runs()]

    def utility(self) -> list[str]:
        return [self.layout.utility(m) for m in self.models()]

    def mfe_quality(self) -> list[str]:
        return [self.layout.mfe_quality(m) for m in self.mfe_ids()]

    def all_splits(self) -> list[str]:
        out = {self.layout.splits(d, self.protocol, s) for d in self.config["datasets"] for s in self.seeds}
        if self.control:
            out |= {self.layout.splits(self.control["dataset"], "paper_protocol_confounded", s) for s in self.seeds}
        return sorted(out)

    def data_targets(self) -> list[str]:
        return [self.layout.manifest(d) for d in self.config["datasets"]] + self.all_splits()
