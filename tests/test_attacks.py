"""Attacks on synthetic signals of known separability, and the blind baseline."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from m4i.attacks import run_attack
from m4i.attacks.blind import CAPTION_COLUMNS, IMAGE_COLUMNS, blind_signals, caption_stats
from m4i.io import M4IError

FAST_MLP = {"hidden": [8], "max_iter": 300}
METHOD_PARAMS = [("threshold", {}), ("linear_svm", {"C": 1.0}), ("logreg", {"C": 1.0}), ("mlp", FAST_MLP)]


def gaussian(prefix: str, n: int, shift: float, rng, sign: float = 1.0) -> pd.DataFrame:
    """Signal `good` ~ N(sign*shift, 1), `noise` ~ N(0, 1) and a 2-d list column `vec`."""
    x = rng.normal(size=(n, 4))
    return pd.DataFrame({"record_id": [f"{prefix}:{i}" for i in range(n)], "noise": x[:, 1],
                         "good": x[:, 0] + sign * shift, "vec": list(x[:, 2:4])})


def four(shift: float, n: int = 600, seed: int = 0, sign: float = 1.0):
    rng = np.random.default_rng(seed)
    return (gaussian("si", n, shift, rng, sign), gaussian("so", n, 0.0, rng),
            gaussian("ti", n, shift, rng, sign), gaussian("to", n, 0.0, rng))


def auc(scores: pd.DataFrame) -> float:
    return roc_auc_score(scores["label"], scores["score"])


@pytest.fixture(scope="module")
def separable():
    return four(1.0)


@pytest.mark.parametrize("method, params", METHOD_PARAMS)
def test_known_separability(method, params, separable):
    # one signal shifted by d = 1 standard deviation: the best AUC is Phi(d / sqrt 2) ~ 0.760;
    # the 1200-record target gives a standard error of about 0.014
    scores, info = run_attack({"method": method, "features": "all", "params": params}, *separable, seed=0)
    assert abs(auc(scores) - norm.cdf(1 / np.sqrt(2))) < 0.045
    assert list(scores.columns) == ["record_id", "label", "score", "prediction"]
    assert scores["label"].tolist() == [1] * 600 + [0] * 600
    assert scores["record_id"].iloc[0] == "ti:0" and scores["record_id"].iloc[-1] == "to:599"
    assert (scores["prediction"] == (scores["score"] >= info["threshold"]).astype(int)).all()
    assert info["features"] == ["noise", "good", "vec"] and info["n_features"] == 4  # vec expanded
    assert info["method"] == method and 0.6 < info["shadow_cv_auc"] < 0.9
    assert info["shadow_cv_folds"] == 5 and 0.6 < info["shadow_fit_auc"] < 0.95
    json.dumps(info, allow_nan=False)


@pytest.mark.parametrize("method, params", METHOD_PARAMS)
def test_inseparable_is_chance(method, params):
    scores, _ = run_attack({"method": method, "features": "all", "params": params}, *four(0.0, seed=1), seed=0)
    assert abs(auc(scores) - 0.5) < 0.06


@pytest.mark.parametrize("method, params", METHOD_PARAMS[1:])
def test_classifier_decision_rule_and_determinism(method, params, separable):
    attack = {"method": method, "features": ["good", "noise"], "params": params}
    a, info = run_attack(attack, *separable, seed=3)
    b, _ = run_attack(attack, *separable, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert info["threshold"] == (0.5 if method == "mlp" else 0.0)
    assert info["params"] == {**{"linear_svm": {"C": 1.0, "max_iter": 10000}, "logreg": {"C": 1.0, "max_iter": 1000},
                                 "mlp": {"hidden": [8], "max_iter": 300, "alpha": 1e-4, "lr": 1e-3}}[method]}
    # balanced shadow classes and the classifier's own rule: about half the target flagged
    assert 0.4 < a["prediction"].mean() < 0.6


def test_threshold_picks_the_informative_feature_and_negates_lower_for_members():
    si, so, ti, to = four(1.0, sign=-1.0)  # members have LOWER `good`
    scores, info = run_attack({"method": "threshold", "features": "all"}, si, so, ti, to, seed=0)
    assert info["feature"] == "good" and info["direction"] == -1
    assert info["feature_shadow_auc"]["good"] < 0.3  # raw feature: lower for members
    assert np.allclose(scores["score"], -pd.concat([ti, to])["good"].to_numpy())
    assert auc(scores) > 0.7


def test_threshold_maximises_shadow_accuracy_by_hand():
    # members have a = 1, 2 and non-members a = 3, 4: direction -1, scores -1, -2 | -3, -4,
    # every threshold in (-3, -2] is perfect on the shadow; the midpoint -2.5 is chosen
    t = lambda p, v: pd.DataFrame({"record_id": [f"{p}{i}" for i in range(len(v))], "a": v})  # noqa: E731
    scores, info = run_attack({"method": "threshold", "features": ["a"]}, t("si", [1.0, 2.0]), t("so", [3.0, 4.0]),
                              t("ti", [2.4, 0.0]), t("to", [2.6, 9.0]), seed=0)
    assert info["threshold"] == -2.5 and info["direction"] == -1
    assert info["shadow_fit_accuracy"] == 1.0 and info["shadow_fit_auc"] == 1.0
    assert info["shadow_cv_auc"] == 1.0 and info["shadow_cv_folds"] == 2  # 2 records per class: 2 folds
    assert scores["prediction"].tolist() == [1, 1, 0, 0]


def test_list_column_only(separable):
    scores, info = run_attack({"method": "logreg", "features": ["vec"]}, *separable, seed=0)
    assert info["n_features"] == 2 and abs(auc(scores) - 0.5) < 0.07  # vec carries no signal
    si, so, ti, to = separable
    scores, _ = run_attack({"method": "mlp", "features": ["vec"], "params": FAST_MLP}, si, so, ti, to.iloc[:0], seed=0)
    assert len(scores) == len(ti) and (scores["label"] == 1).all()  # an empty target table is fine
    ragged = to.copy()
    ragged.at[5, "vec"] = np.zeros(3)
    with pytest.raises(M4IError, match="different lengths|lengths differ"):
        run_attack({"method": "logreg", "features": ["vec"]}, si, so, ti, ragged, seed=0)


@pytest.mark.parametrize("attack, mutate, match", [
    ({"method": "svm"}, None, "unknown"),
    ({"method": "logreg", "params": {"c": 1}}, None, "unknown params"),
    ({"method": "logreg", "features": ["nope"]}, None, "no column 'nope'"),
    ({"method": "logreg", "features": "good"}, None, "list of column names"),
    ({"method": "logreg", "features": ["good"]}, "nan", "record 'so:3'"),
    ({"method": "logreg", "features": ["good"]}, "overlap", "both in shadow_in and shadow_out"),
    ({"method": "logreg", "features": ["good"]}, "empty", "shadow_out: signal table is empty"),
    ({"method": "logreg", "features": ["good"]}, "dup", "duplicate record id"),
])
def test_bad_input(attack, mutate, match):
    si, so, ti, to = four(1.0, n=20)
    if mutate == "nan":
        so.loc[3, "good"] = np.nan
    elif mutate == "overlap":
        so.loc[0, "record_id"] = si.loc[0, "record_id"]
    elif mutate == "empty":
        so = so.iloc[:0]
    elif mutate == "dup":
        ti.loc[1, "record_id"] = ti.loc[0, "record_id"]
    with pytest.raises(M4IError, match=match):
        run_attack(attack, si, so, ti, to, seed=0)


# --- blind baseline ----------------------------------------------------------------------------
def test_caption_stats_by_hand():
    # tokens: [a, red, circle] and [a, big, red, dot, here]: lengths 3, 5 (mean 4, std 1),
    # 6 distinct of 8 tokens, word lengths 1,3,6,1,3,3,3,4 -> mean 3
    s = caption_stats(["A red circle.", "a big red dot here"])
    assert s == {"n_refs": 2.0, "ref_len_mean": 4.0, "ref_len_std": 1.0, "ref_ttr": 0.75, "ref_n_distinct": 6.0,
                 "ref_word_len_mean": 3.0, "ref_char_len_mean": (13 + 18) / 2}


def _dataset(root, prefix, n, rng, colour, words):
    rows = []
    for i in range(n):
        a = np.clip(rng.normal(colour, 20, size=(6, 6, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / f"{prefix}{i}.png")
        caps = [" ".join(rng.choice(words, size=rng.integers(3, 8))) for _ in range(3)]
        rows.append({"record_id": f"{prefix}:{i}", "image": f"{prefix}{i}.png", "captions": caps})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def blind_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("blind")
    rng = np.random.default_rng(0)
    a = _dataset(root, "a", 160, rng, (200, 60, 60), ["a", "red", "circle", "square", "left"])
    b = _dataset(root, "b", 80, rng, (60, 60, 200), ["one", "blue", "doodle", "sketch", "paper", "drawn"])
    return root, pd.concat([a, b], ignore_index=True)


def test_blind_signals_table(blind_data):
    root, manifest = blind_data
    ids = ["b:1", "a:0"]
    t = blind_signals(manifest, root, ids)
    assert t["record_id"].tolist() == ids
    assert list(t.columns) == ["record_id", *CAPTION_COLUMNS, *IMAGE_COLUMNS]
    assert t.loc[0, "img_mean_b"] > t.loc[0, "img_mean_r"] and t.loc[1, "img_mean_r"] > t.loc[1, "img_mean_b"]
    assert (t["img_width"] == 6).all() and (t["n_refs"] == 3).all()
    with pytest.raises(M4IError, match="'zz:9' is not in the manifest"):
        blind_signals(manifest, root, ["a:0", "zz:9"])
    with pytest.raises(M4IError, match="escapes"):
        blind_signals(manifest.assign(image="../x.png"), root, ["a:0"])


def test_blind_attack_chance_on_one_distribution_high_when_confounded(blind_data):
    root, manifest = blind_data
    sig = lambda ids: blind_signals(manifest, root, ids)  # noqa: E731
    a = [f"a:{i}" for i in range(160)]
    b = [f"b:{i}" for i in range(80)]
    attack = {"method": "logreg", "features": "all", "params": {"C": 1.0}}
    # disjoint splits of ONE dataset: members and non-members are exchangeable -> chance
    fair, _ = run_attack(attack, sig(a[:40]), sig(a[40:80]), sig(a[80:120]), sig(a[120:]), seed=0)
    assert abs(auc(fair) - 0.5) < 0.2
    # paper protocol: non-members from another dataset -> the blind attack "wins"
    conf, _ = run_attack(attack, sig(a[:40]), sig(b[:40]), sig(a[40:80]), sig(b[40:]), seed=0)
    assert auc(conf) > 0.95


def test_metrics_recompute_exactly_from_written_scores(separable, tmp_path):
    # the contract: metrics.json is reproduced exactly from scores.parquet + decision.threshold
    from m4i.evaluation import evaluate
    from m4i.io import read_json, read_table, write_json, write_table

    scores, info = run_attack({"method": "threshold", "features": "all"}, *separable, seed=0)
    m = evaluate(scores["label"].to_numpy(), scores["score"].to_numpy(), info["threshold"], n_bootstrap=50, seed=0)
    write_table(scores, tmp_path / "scores.parquet")
    write_json({"decision": {"threshold": info["threshold"]}, "info": info, "metrics": m}, tmp_path / "metrics.json")
    back, saved = read_table(tmp_path / "scores.parquet"), read_json(tmp_path / "metrics.json")
    again = evaluate(back["label"], back["score"], saved["decision"]["threshold"], n_bootstrap=50, seed=0)
    assert again == saved["metrics"] == m
    assert saved["info"] == info


def test_shadow_cv_auc_is_honest_where_the_in_sample_fit_is_not():
    # 40 pure-noise features, 60 + 60 shadow rows: a wide MLP fits the noise (in-sample AUC near 1)
    # while cross-validation on the shadow rows says chance, as the target does.
    rng = np.random.default_rng(5)

    def t(p, n):
        return pd.DataFrame({"record_id": [f"{p}:{i}" for i in range(n)], **{f"x{j}": rng.normal(size=n) for j in range(40)}})

    attack = {"method": "mlp", "features": "all", "params": {"hidden": [128], "max_iter": 2000, "alpha": 1e-6}}
    scores, info = run_attack(attack, t("si", 60), t("so", 60), t("ti", 300), t("to", 300), seed=0)
    assert info["shadow_fit_auc"] > 0.95
    assert abs(info["shadow_cv_auc"] - 0.5) < 0.12 and abs(auc(scores) - 0.5) < 0.08
    assert info["shadow_cv_folds"] == 5 and info["shadow_cv_auc_sd"] > 0


def test_shadow_cv_matches_an_independent_cross_validation(separable):
    # logreg on ungrouped records (one shadow): the same folds through sklearn's own pipeline
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from m4i.seeding import derive_seed

    si, so, ti, to = separable
    _, info = run_attack({"method": "logreg", "features": ["good", "noise"]}, si, so, ti, to, seed=2)
    X = pd.concat([si, so])[["good", "noise"]].to_numpy()
    y = np.r_[np.ones(len(si)), np.zeros(len(so))]
    groups = pd.concat([si, so])["record_id"].to_numpy()
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=derive_seed(2, "attack-cv", "logreg"))
    aucs = []
    for tr, te in cv.split(X, y, groups):
        m = make_pipeline(StandardScaler(), LogisticRegression(random_state=derive_seed(2, "attack", "logreg")))
        aucs.append(roc_auc_score(y[te], m.fit(X[tr], y[tr]).decision_function(X[te])))
    assert info["shadow_cv_auc"] == pytest.approx(np.mean(aucs))


def test_shadow_cv_keeps_one_record_of_several_shadows_in_one_fold():
    from m4i.attacks import shadow_cv

    # record r<i> appears twice (two shadows); a threshold on x: fold membership must be per record
    rng = np.random.default_rng(0)
    n = 50
    groups = np.r_[[f"r{i}" for i in range(n)], [f"r{i}" for i in range(n)]]
    y = np.r_[np.ones(n // 2), np.zeros(n // 2), np.zeros(n // 2), np.ones(n // 2)].astype(int)
    X = (y + rng.normal(scale=0.5, size=2 * n))[:, None]
    out = shadow_cv("threshold", X, y, groups, ["x"], {}, seed=0)
    assert out["shadow_cv_folds"] == 5 and out["shadow_cv_auc"] > 0.8
    from sklearn.model_selection import StratifiedGroupKFold

    for _, te in StratifiedGroupKFold(5, shuffle=True, random_state=1).split(X, y, groups):
        assert set(groups[te]).isdisjoint(set(np.delete(groups, te)))
