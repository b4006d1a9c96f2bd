"""Identities (models, MFEs, scenarios, attacks) as data: keys, wildcard patterns, paths, and the
plan that expands a config into them; the membership of every captioner."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from m4i.config import load_config
from m4i.data.membership import model_members
from m4i.identity import Layout, MfeId, ModelId, ScenarioId, attack_identity
from m4i.io import M4IError
from m4i.plan import Plan

REPO = Path(__file__).resolve().parents[1]

MODELS = [
    ModelId("shapes", "lstm", "target", None, 0),
    ModelId("shapes", "lstm", "shadow", 0, 0),
    ModelId("doodles", "tfm", "shadow", 12, 3),
    ModelId("shapes", "lstm", "ref", 7, 1),
    ModelId("shapes", "lstm", "target", None, 0, defense="dp1"),
    ModelId("shapes", "lstm", "shadow", 1, 2, defense="paper"),  # a defense named like the suffix
    ModelId("shapes", "lstm", "target", None, 0, protocol="paper_protocol_confounded"),
    ModelId("shapes", "lstm", "shadow", 0, 0, defense="relax", protocol="paper_protocol_confounded"),
]


@pytest.mark.parametrize("model", MODELS, ids=str)
def test_model_key_round_trip_and_pattern(model):
    key = str(model)
    assert ModelId.parse(key) == model
    assert re.fullmatch(ModelId.PATTERN, key)
    assert model.fields()["model_id"] == key and "-" not in model.dataset


def test_model_keys_of_the_existing_layout_are_unchanged():
    # The files of studies run before identities became data keep their names.
    assert str(ModelId("shapes", "lstm", "target", None, 0)) == "shapes-lstm-target-s0"
    assert str(ModelId("doodles", "tfm", "shadow", 0, 0)) == "doodles-tfm-shadow0-s0"
    assert str(MfeId("clip", "shapes", 0)) == "clip-shapes-s0"
    assert str(ScenarioId("unrestricted", "paper_protocol_confounded")) == "unrestricted-paper-protocol-confounded"


@pytest.mark.parametrize("bad", ["shapes-lstm-target0-s0", "shapes-lstm-shadow-s0", "shapes-lstm-ref-s0",
                                 "shapes-lstm-target", "shapes_x-lstm-target-s0", "a-b-c-d-e-f-g",
                                 "shapes-lstm-target-s0-dp-1"])
def test_bad_model_keys_are_refused(bad):
    with pytest.raises(M4IError):
        ModelId.parse(bad)


def test_bad_model_fields_are_refused():
    with pytest.raises(M4IError, match="index"):
        ModelId("shapes", "lstm", "target", 0, 0)
    with pytest.raises(M4IError, match="role"):
        ModelId("shapes", "lstm", "victim", None, 0)
    with pytest.raises(M4IError, match="letters"):
        ModelId("sha-pes", "lstm", "target", None, 0)
    with pytest.raises(M4IError, match="protocol"):
        ModelId("shapes", "lstm", "target", None, 0, protocol="paper")


def test_undefended_twin_and_mfe_ids():
    m = ModelId.parse("shapes-lstm-shadow2-s1-dp8-paper-protocol-confounded")
    assert str(m.undefended()) == "shapes-lstm-shadow2-s1-paper-protocol-confounded" and m.role_index == "shadow2"
    for mfe in (MfeId("paper", "doodles", 4), MfeId("clip", "shapes", 0, "paper_protocol_confounded")):
        assert MfeId.parse(str(mfe)) == mfe and re.fullmatch(MfeId.PATTERN, str(mfe))


@pytest.mark.parametrize("scenario", [
    ScenarioId("unrestricted"), ScenarioId("data-restricted-flickr8k_rn152"),
    ScenarioId("unrestricted", "paper_protocol_confounded"),
    ScenarioId("model-restricted", defense="dp1", attacker="adaptive"),
    ScenarioId("fully-restricted-x", "paper_protocol_confounded", "relax", "unaware"),
], ids=str)
def test_scenario_key_round_trip(scenario):
    assert ScenarioId.parse(str(scenario)) == scenario
    assert re.fullmatch(ScenarioId.PATTERN, str(scenario))


def test_bad_scenarios_are_refused():
    with pytest.raises(M4IError):
        ScenarioId("unrestricted", defense="dp1")  # an attacker model must be named too
    with pytest.raises(M4IError):
        ScenarioId("unrestricted", defense="dp1", attacker="clairvoyant")
    with pytest.raises(M4IError):
        ScenarioId("unrestricted-paper-protocol-confounded")  # the protocol is a field, not a name
    with pytest.raises(M4IError):
        ScenarioId.parse("sideways")


def test_attack_identity_says_what_an_attack_needs():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["attacks"]
    ids = {n: attack_identity(n, c) for n, c in cfg.items()}
    assert (ids["mb-svm"].family, ids["mb-svm"].access, ids["mb-svm"].uses_references) == ("mb", "black-box", True)
    assert (ids["fb-clip-mlp"].family, ids["fb-clip-mlp"].uses_references) == ("fb", False)
    assert (ids["blind"].family, ids["blind"].access) == ("blind", "none")
    # An FB attack that reads the reference-caption similarity needs references.
    fb_ref = attack_identity("x", {"signal": "mfe", "mfe": "clip", "method": "mlp", "features": ["cos", "ref_cos"]})
    assert fb_ref.uses_references and fb_ref.family == "fb"


def test_layout_paths_and_results_root(tmp_path):
    L = Layout("default")
    m = ModelId.parse("shapes-lstm-target-s0")
    assert L.model(m) == "results/default/models/shapes-lstm-target-s0.pt"
    assert L.captions("{model}") == "results/default/captions/{model}.parquet"
    assert L.attack_metrics(ScenarioId("unrestricted"), "mb-svm", 0) == \
        "results/default/attacks/unrestricted/mb-svm/s0/metrics.json"
    table = tmp_path / "results" / "default" / "tables" / "attacks.csv"
    assert Layout.root_of(table) == tmp_path / "results" / "default"
    with pytest.raises(M4IError, match="results"):
        Layout.root_of(tmp_path / "elsewhere.csv")


# ------------------------------------------------------------------------------------------ plan
def test_the_quick_default_keeps_every_part_of_the_study():
    """config/config.yaml is config/full.yaml at smaller sizes: the same scenarios, captioners,
    MFEs and attacks, the confounded control, K = 4 references, and the defenses the study must
    run by default (DP-SGD at epsilon 1 and 8 and clipping only, early stopping, RelaxLoss, a
    decoding defense) against both attacker models."""
    quick, full = (load_config(REPO / "config" / f"{n}.yaml") for n in ("config", "full"))
    for key in ("scenarios", "captioners", "mfe", "attacks", "features"):
        assert quick[key].keys() == full[key].keys(), key
    assert quick["scenarios"]["unrestricted"]["references"] >= 4
    assert quick["splits"]["confounded_control"]["attacks"]
    kinds = {(d["kind"], d.get("epsilon"), d.get("early_stopping")) for d in quick["defenses"].values()}
    assert {("dp_sgd", 1.0, None), ("dp_sgd", 8.0, None), ("dp_sgd", None, None), ("regularize", None, True)} <= kinds
    assert {"relaxloss", "decode"} <= {k for k, _, _ in kinds}
    assert set(quick["defense_evaluation"]["attackers"]) == {"unaware", "adaptive"}
    plan = Plan(quick)
    families = {plan.attack(a).family for p in plan.scenarios(0) if p.id.defense for a in p.attacks}
    assert {"mb", "fb", "blind"} <= families


def test_plan_of_the_full_study():
    plan = Plan(load_config(REPO / "config" / "full.yaml"))
    keys = {str(m) for m in plan.models()}
    assert {"doodles-lstm-shadow0-s0", "doodles-tfm-shadow0-s0", "shapes-lstm-shadow1-s0", "shapes-tfm-shadow0-s0",
            "shapes-lstm-target-s0", "shapes-lstm-ref3-s0", "shapes-lstm-target-s0-dp1",
            "shapes-lstm-shadow0-s0-dp1", "shapes-lstm-target-s0-sample"} <= keys
    trained = {str(m) for m in plan.trained_models()}
    assert "shapes-lstm-target-s0-sample" not in trained and "shapes-lstm-target-s0-dp1" in trained
    assert str(plan.weights_of(ModelId.parse("shapes-lstm-target-s0-trunc"))) == "shapes-lstm-target-s0"
    assert plan.decode_of(ModelId.parse("shapes-lstm-target-s0-sample"))["queries"] == 5
    control = plan.scenario("unrestricted-paper-protocol-confounded", 0)
    assert "blind" in control.attacks and "mb-logreg" in control.attacks
    assert control.target.protocol == "paper_protocol_confounded"
    inputs = plan.attack_inputs("data-restricted", "mb-svm", 0)
    # a captioner's metric signals: one table of all its scored splits; the attack selects by name
    assert inputs["shadow0_shadow_in"].endswith("signals/metrics/doodles-lstm-shadow0-s0.parquet")
    assert inputs["target_out"].endswith("signals/metrics/shapes-lstm-target-s0.parquet")
    assert plan.input_rows("data-restricted", "mb-svm", 0) == {
        "shadow0_shadow_in": {"split": "shadow_in"}, "shadow0_shadow_out": {"split": "shadow_out"},
        "target_in": {"split": "target_in"}, "target_out": {"split": "target_out"}}
    # MFE signals: one table per captioner; an FB attack's rows are its MFE's (the attacker's data)
    fb = plan.attack_inputs("fully-restricted", "fb-clip-mlp", 0)
    assert fb["target_in"].endswith("signals/mfe/shapes-lstm-target-s0.parquet")
    assert fb["shadow0_shadow_in"].endswith("signals/mfe/doodles-tfm-shadow0-s0.parquet")
    assert plan.input_rows("fully-restricted", "fb-clip-mlp", 0)["target_out"] == {
        "split": "target_out", "mfe": "clip-doodles-s0"}
    assert inputs["shadow_splits"].endswith("splits/doodles/disjoint-s0.json")
    assert str(plan.mfe_id(plan.scenario("fully-restricted", 0), "fb-clip-mlp")) == "clip-doodles-s0"
    # calibrated attacks: online reads the K reference captioners, offline the shadows
    online = plan.attack_inputs("unrestricted", "lira-online-gb", 0)
    assert {f"ref{i}_target_in" for i in range(4)} <= set(online) and "ref4_target_in" not in online
    assert online["ref3_heldout"].endswith("signals/loglik/shapes-lstm-ref3-s0.parquet")
    assert plan.signal_parts("loglik", ModelId.parse("shapes-lstm-ref3-s0")) == [
        (None, "target_in"), (None, "target_out"), (None, "heldout")]
    offline = plan.attack_inputs("unrestricted", "rmia-offline-bb", 0)
    assert offline["ref1_target_out"].endswith("signals/metrics/shapes-lstm-shadow1-s0.parquet")
    assert plan.input_rows("unrestricted", "rmia-offline-bb", 0)["ref1_heldout"] == {"split": "heldout"}
    # what each captioner's one metric_signals job scores: every split some metric attack reads
    # (a shadow that is also an offline reference: its pool, the candidates and the population)
    assert plan.metric_splits(ModelId.parse("shapes-lstm-shadow1-s0")) == [
        "target_in", "target_out", "shadow_in", "shadow_out", "heldout"]
    assert plan.metric_splits(ModelId.parse("shapes-lstm-target-s0-dp1")) == ["target_in", "target_out"]
    assert plan.metric_splits(ModelId.parse("doodles-tfm-shadow0-s0")) == ["shadow_in", "shadow_out"]
    assert ModelId.parse("shapes-lstm-target-s0-dp1") in plan.signal_models("metrics")
    # ... and its one mfe_signals job: each (MFE, split) an FB attack reads; the undefended target
    # is read through the MFE of each scenario's attacker data (shapes, doodles) and both kinds
    target_parts = plan.signal_parts("mfe", ModelId.parse("shapes-lstm-target-s0"))
    assert target_parts == [(f"{k}-{d}-s0", s) for k in ("clip", "paper") for d in ("doodles", "shapes")
                            for s in ("target_in", "target_out")]
    assert plan.signal_parts("mfe", ModelId.parse("doodles-tfm-shadow0-s0")) == [
        (f"{k}-doodles-s0", s) for k in ("clip", "paper") for s in ("shadow_in", "shadow_out")]
    assert ModelId.parse("shapes-lstm-ref0-s0") not in plan.signal_models("mfe")  # no FB attack reads references
    # ... and its one generate_captions job: what those read, and for a captioner whose quality is
    # reported its held-out records and own pool (a reference captioner: only what attacks read)
    assert plan.caption_splits(ModelId.parse("shapes-lstm-shadow1-s0")) == [
        "target_in", "target_out", "shadow_in", "shadow_out", "heldout"]
    assert plan.caption_splits(ModelId.parse("shapes-lstm-target-s0-trunc")) == ["target_in", "target_out", "heldout"]
    assert plan.caption_splits(ModelId.parse("doodles-tfm-shadow0-s0")) == ["shadow_in", "shadow_out", "heldout"]
    assert plan.caption_splits(ModelId.parse("shapes-lstm-ref0-s0")) == ["target_in", "target_out", "heldout"]
    # defended scenarios: both attacker models; calibrated attacks not run; multi-query only vs sampling
    adaptive, unaware = plan.scenario("unrestricted@dp1-adaptive", 0), plan.scenario("unrestricted@dp1-unaware", 0)
    assert adaptive.target == unaware.target == ModelId.parse("shapes-lstm-target-s0-dp1")
    assert [str(m) for m in adaptive.shadows] == ["shapes-lstm-shadow0-s0-dp1"]
    assert [str(m) for m in unaware.shadows] == ["shapes-lstm-shadow0-s0"]
    assert "mb-logreg-mq" not in adaptive.attacks and not any(plan.attack(a).calibrated for a in adaptive.attacks)
    assert "mb-logreg-mq" in plan.scenario("unrestricted@sample-unaware", 0).attacks
    assert "mb-logreg-mq" not in plan.scenario("unrestricted", 0).attacks


def _plan(cfg: dict, tmp_path) -> Plan:
    """The plan of a config dict, loaded (and schema-checked) from a file like any study's."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Plan(load_config(path))


def _test_config() -> dict:
    return yaml.safe_load((REPO / "config" / "test.yaml").read_text())


def test_an_attack_a_scenario_names_but_cannot_run_is_a_config_error(tmp_path):
    cfg = _test_config()
    cfg["scenarios"]["data-restricted"]["attacks"] = ["mb-svm", "lira-online-bb"]
    with pytest.raises(M4IError, match="scenarios.data-restricted.attacks.*lira-online-bb.*references"):
        _plan(cfg, tmp_path).scenarios(0)
    cfg["scenarios"]["data-restricted"]["attacks"] = ["mb-svm"]
    cfg["defense_evaluation"]["scenarios"] = ["model-restricted"]  # its shadow is a ViT-GPT-2
    with pytest.raises(M4IError, match="defenses.dp8.*show_tell.*vit_gpt2"):
        _plan(cfg, tmp_path)


def test_offline_calibrated_attacks_refuse_the_confounded_split(tmp_path):
    """Its shadows train on target members: a candidate can be IN every shadow (no OUT model)."""
    cfg = _test_config()
    cfg["splits"]["confounded_control"]["attacks"] = ["blind", "lira-offline-gb"]
    with pytest.raises(M4IError, match="confounded_control.attacks.*lira-offline-gb.*OUT reference"):
        _plan(cfg, tmp_path).scenarios(0)
    del cfg["splits"]["confounded_control"]["attacks"]  # all attacks: the offline ones are left out
    plan = _plan(cfg, tmp_path)
    control = plan.scenario("unrestricted-paper-protocol-confounded", 0)
    assert "blind" in control.attacks and "mb-logreg" in control.attacks
    assert not {"lira-offline-gb", "rmia-offline-bb"} & set(control.attacks)
    assert "lira-offline-gb" in plan.scenario("unrestricted", 0).attacks


def test_plan_with_k_shadows_and_seeds(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg["seeds"] = [0, 1]
    cfg["scenarios"]["unrestricted"]["n_shadows"] = 3
    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump(cfg))
    plan = Plan(load_config(path))
    sc = plan.scenario("unrestricted", 1)
    assert [m.role_index for m in sc.shadows] == ["shadow0", "shadow1", "shadow2"]
    assert all(m.seed == 1 for m in sc.shadows)
    keys = set(plan.attack_inputs("unrestricted", "mb-logreg", 1))
    assert {f"shadow{i}_{s}" for i in range(3) for s in ("shadow_in", "shadow_out")} <= keys
    assert len(plan.attack_metrics()) == 2 * len(Plan(load_config(REPO / "config" / "test.yaml")).attack_metrics())


# ------------------------------------------------------------------------------------ membership
def _splits(n=40):
    ids = [f"d:{i:03d}" for i in range(n)]
    return {"dataset": "d", "splits": {"target_in": ids[:10], "target_out": ids[10:20],
                                       "shadow_in": ids[20:26], "shadow_out": ids[26:40]}}


def test_membership_of_target_and_shadows():
    sp = _splits()
    t = model_members(ModelId("d", "lstm", "target", None, 0), sp)
    assert t["members"] == sp["splits"]["target_in"] and t["nonmembers"] == sp["splits"]["target_out"]
    s0 = model_members(ModelId("d", "lstm", "shadow", 0, 0), sp)
    assert s0["members"] == sp["splits"]["shadow_in"]
    pool = set(sp["splits"]["shadow_in"]) | set(sp["splits"]["shadow_out"])
    draws = [model_members(ModelId("d", "lstm", "shadow", i, 0), sp) for i in (1, 2)]
    for d in draws:
        assert len(d["members"]) == 6 and set(d["members"]) | set(d["nonmembers"]) == pool
        assert not set(d["members"]) & set(d["nonmembers"]) and d["members"] == sorted(d["members"])
        assert not set(d["members"]) & set(sp["splits"]["target_in"] + sp["splits"]["target_out"])
    assert draws[0]["members"] != draws[1]["members"]  # independent draws
    again = model_members(ModelId("d", "tfm", "shadow", 1, 0, defense="dp1"), sp)
    assert again["members"] == draws[0]["members"]  # arch and defense do not change the data
    # Over many shadows each pool record is a member about |shadow_in| / |pool| of the time.
    counts = np.zeros(len(pool))
    order = sorted(pool)
    for i in range(1, 201):
        for r in model_members(ModelId("d", "lstm", "shadow", i, 0), sp)["members"]:
            counts[order.index(r)] += 1
    assert np.allclose(counts / 200, 6 / 20, atol=0.12)


def test_membership_of_reference_captioners_is_a_balanced_matrix():
    sp = _splits()
    pool = sorted(sp["splits"]["target_in"] + sp["splits"]["target_out"])
    refs = [model_members(ModelId("d", "lstm", "ref", i, 0), sp, n_refs=4) for i in range(4)]
    for r in refs:
        assert set(r["members"]) | set(r["nonmembers"]) == set(pool) and not set(r["members"]) & set(r["nonmembers"])
    counts = {rid: sum(rid in r["members"] for r in refs) for rid in pool}
    assert set(counts.values()) == {2}  # every candidate IN for exactly K/2 = 2 references
    with pytest.raises(M4IError, match="number of reference"):
        model_members(ModelId("d", "lstm", "ref", 0, 0), sp)
    with pytest.raises(M4IError, match="only 4"):
        model_members(ModelId("d", "lstm", "ref", 4, 0), sp, n_refs=4)
