"""m4i.evaluation.evaluate against cases worked out by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from m4i.evaluation import _auc_rows, evaluate
from m4i.io import M4IError


def _plain(obj) -> bool:
    """Only JSON-native Python types all the way down (no numpy scalars)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return obj is None or type(obj) in (int, float, str, bool)


def test_hand_computed_case():
    # members 0.9, 0.4; non-members 0.6, 0.1; decide score >= 0.5
    #   predictions 1, 0 | 1, 0  -> tp 1, fn 1, fp 1, tn 1 -> every rate 0.5
    #   AUC: member-vs-non-member pairs 0.9>0.6, 0.9>0.1, 0.4<0.6, 0.4>0.1 -> 3/4
    #   ROC (all points): thr inf .9 .6 .4 .1 | fpr 0 0 .5 .5 1 | tpr 0 .5 .5 1 1
    #   FPR <= 0.5 (1 false positive of 2 allowed): best TPR 1 at threshold 0.4
    #   FPR <= 0.25: 0.25 * 2 non-members < 1 -> not resolvable
    m = evaluate([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], 0.5, fpr_targets=(0.5, 0.25), n_bootstrap=50, seed=0)
    assert (m["n"], m["n_members"], m["n_nonmembers"]) == (4, 2, 2)
    assert m["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    for k in ("attack_success_rate", "balanced_accuracy", "precision", "recall", "f1"):
        assert m[k] == 0.5, k
    assert m["auc"] == 0.75
    assert m["roc"] == {"fpr": [0.0, 0.0, 0.5, 0.5, 1.0], "tpr": [0.0, 0.5, 0.5, 1.0, 1.0],
                        "thresholds": [None, 0.9, 0.6, 0.4, 0.1]}
    assert m["tpr_at_fpr"]["0.5"] == {"target_fpr": 0.5, "defined": True, "threshold": 0.4, "fpr": 0.5,
                                      "tpr": 1.0, "fp": 1, "tp": 2, "n_neg": 2, "n_pos": 2}
    undef = m["tpr_at_fpr"]["0.25"]
    assert undef["defined"] is False and "2 non-members" in undef["reason"]
    assert m["undefined"] == {}
    assert _plain(m)
    json.dumps(m, allow_nan=False)


def test_ties_and_threshold_equality():
    # members 0.5, 0.7; non-members 0.5, 0.2; decide score >= 0.5 (a score equal to the
    # threshold counts as member) -> predictions 1, 1 | 1, 0 -> tp 2, fn 0, fp 1, tn 1
    #   accuracy 3/4, precision 2/3, recall 1, f1 = 2*(2/3)/(5/3) = 0.8, balanced (1 + 1/2)/2
    #   AUC: 0.5 vs 0.5 is a tie (1/2), the other three pairs are won -> 3.5/4
    m = evaluate([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.2], 0.5, n_bootstrap=0)
    assert m["confusion"] == {"tp": 2, "fp": 1, "tn": 1, "fn": 0}
    assert m["attack_success_rate"] == 0.75 and m["balanced_accuracy"] == 0.75
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0 and m["f1"] == pytest.approx(0.8)
    assert m["auc"] == 0.875
    # tied scores are one ROC point, not two
    assert m["roc"]["thresholds"] == [None, 0.7, 0.5, 0.2]
    assert m["ci95"] == {"auc": None, "attack_success_rate": None, "n_bootstrap": 0, "seed": 0,
                         "tpr_at_fpr": {"0.01": None, "0.001": None}}


def test_operating_point_with_tied_top_non_members():
    # non-members 0.9, 0.9, 0.1, 0.1 and one member 0.5; FPR <= 0.25 allows 1 false positive of 4,
    # but the two top non-members tie, so any threshold that flags the member flags both
    # (FPR 0.5): the only admissible point is "flag nobody" (threshold None, TPR 0).
    m = evaluate([0, 0, 1, 0, 0], [0.9, 0.9, 0.5, 0.1, 0.1], 0.5, fpr_targets=(0.25,), n_bootstrap=0)
    op = m["tpr_at_fpr"]["0.25"]
    assert op["defined"] and op["threshold"] is None
    assert (op["fp"], op["tp"], op["fpr"], op["tpr"]) == (0, 0, 0.0, 0.0)


def test_highest_tpr_within_fpr_budget():
    # members 0.8, 0.1; non-members 0.9, 0.2: FPR <= 0.5 (1 of 2) -> threshold 0.8 flags 0.9 and 0.8
    m = evaluate([0, 1, 0, 1], [0.9, 0.8, 0.2, 0.1], 0.5, fpr_targets=(0.5,), n_bootstrap=0)
    op = m["tpr_at_fpr"]["0.5"]
    assert (op["threshold"], op["fp"], op["tp"], op["fpr"], op["tpr"]) == (0.8, 1, 1, 0.5, 0.5)


def test_fpr_grid_too_fine_for_the_sample():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(150, int), np.zeros(150, int)]
    s = rng.normal(size=300) + y
    m = evaluate(y, s, 0.5, fpr_targets=(0.01, 0.001), n_bootstrap=0)
    assert m["tpr_at_fpr"]["0.01"]["defined"] is True  # 150 * 0.01 = 1.5 >= 1
    op = m["tpr_at_fpr"]["0.01"]
    assert op["fp"] <= 1 and op["fpr"] <= 0.01 and op["n_neg"] == 150
    assert ((s >= op["threshold"]) & (y == 1)).sum() == op["tp"]
    fine = m["tpr_at_fpr"]["0.001"]
    assert fine["defined"] is False and "need at least 1000" in fine["reason"]
    assert "tpr" not in fine


def test_all_one_class_does_not_crash():
    # three members, no non-member: precision 2/2, recall 2/3, AUC/ROC/balanced accuracy undefined
    m = evaluate([1, 1, 1], [0.2, 0.6, 0.9], 0.5, n_bootstrap=20, seed=0)
    assert m["confusion"] == {"tp": 2, "fp": 0, "tn": 0, "fn": 1}
    assert m["attack_success_rate"] == pytest.approx(2 / 3) and m["precision"] == 1.0
    assert m["auc"] is None and m["roc"] is None and m["balanced_accuracy"] is None
    assert {"auc", "roc", "balanced_accuracy"} <= set(m["undefined"])
    assert m["ci95"]["auc"] is None and len(m["ci95"]["attack_success_rate"]) == 2
    assert all(not v["defined"] for v in m["tpr_at_fpr"].values())
    json.dumps(m, allow_nan=False)
    # no member predicted at all: precision undefined, not 0
    m0 = evaluate([0, 0, 1], [0.1, 0.2, 0.3], 0.9, n_bootstrap=0)
    assert m0["precision"] is None and "precision" in m0["undefined"] and m0["recall"] == 0.0


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    s = np.round(rng.normal(size=200) + 0.8 * y, 1)  # rounded: many ties
    a = evaluate(y, s, 0.4, n_bootstrap=300, seed=7)
    assert a == evaluate(y, s, 0.4, n_bootstrap=300, seed=7)
    assert json.dumps(a) == json.dumps(evaluate(list(y), list(s), 0.4, n_bootstrap=300, seed=7))
    assert a["ci95"] != evaluate(y, s, 0.4, n_bootstrap=300, seed=8)["ci95"]
    lo, hi = a["ci95"]["auc"]
    assert lo < a["auc"] < hi and hi - lo < 0.3
    lo, hi = a["ci95"]["attack_success_rate"]
    assert lo < a["attack_success_rate"] < hi
    assert (a["ci95"]["n_bootstrap"], a["ci95"]["seed"]) == (300, 7)


def test_vectorised_bootstrap_auc_equals_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(5, 40))
    y[:, 0], y[:, 1] = 0, 1
    s = rng.integers(0, 5, size=(5, 40)).astype(float)  # heavy ties
    want = [roc_auc_score(y[i], s[i]) for i in range(5)]
    assert _auc_rows(y, s) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("labels, scores, threshold, match", [
    ([1, 0], [0.1, float("nan")], 0.5, "position 1"),
    ([1, 0], [0.1, float("inf")], 0.5, "non-finite"),
    ([1, 2], [0.1, 0.2], 0.5, "labels must be 0 or 1"),
    ([1, 0, 1], [0.1, 0.2], 0.5, "3 labels but 2 scores"),
    ([], [], 0.5, "no records"),
    ([1, 0], [0.1, 0.2], float("nan"), "threshold"),
])
def test_bad_input(labels, scores, threshold, match):
    with pytest.raises(M4IError, match=match):
        evaluate(labels, scores, threshold, n_bootstrap=0)


def test_bad_settings():
    with pytest.raises(M4IError, match="fpr target"):
        evaluate([1, 0], [0.2, 0.1], 0.5, fpr_targets=(0.0,))
    with pytest.raises(M4IError, match="n_bootstrap"):
        evaluate([1, 0], [0.2, 0.1], 0.5, n_bootstrap=-1)


# --- against an independent brute-force implementation -----------------------------------------
def _brute_force(y, s, threshold, targets, boot_idx):
    """Every number from first principles: pair counts for AUC, one pass over every candidate
    threshold for ROC and TPR@FPR, counting for the attack success rate (no sklearn, no ranks)."""
    pos, neg = [v for v, l in zip(s, y) if l == 1], [v for v, l in zip(s, y) if l == 0]

    def auc(p, n):
        wins = sum((a > b) + 0.5 * (a == b) for a in p for b in n)
        return wins / (len(p) * len(n))

    def rates(t):  # predict member when score >= t
        return sum(b >= t for b in neg) / len(neg), sum(a >= t for a in pos) / len(pos)

    def best_point(p, n, f):  # every candidate threshold of this sample; best TPR at FPR <= f
        pts = []
        for t in [float("inf")] + sorted(set(p) | set(n), reverse=True):
            fpr, tpr = sum(b >= t for b in n) / len(n), sum(a >= t for a in p) / len(p)
            if fpr <= f + 1e-12:
                pts.append((tpr, -fpr, t))
        return max(pts)  # best TPR, then lowest FPR, then highest threshold

    cands = [float("inf")] + sorted(set(s), reverse=True)
    roc = [(t, *rates(t)) for t in cands]
    at = {}
    for f in targets:
        tpr, nfpr, t = best_point(pos, neg, f)
        at[f] = (None if t == float("inf") else t, -nfpr, tpr)
    asr = (sum(a >= threshold for a in pos) + sum(b < threshold for b in neg)) / len(s)
    bp_idx, bn_idx = boot_idx
    boot_auc = [auc([pos[i] for i in ip], [neg[j] for j in jn]) for ip, jn in zip(bp_idx, bn_idx)]
    boot_asr = [(sum(pos[i] >= threshold for i in ip) + sum(neg[j] < threshold for j in jn)) / len(s)
                for ip, jn in zip(bp_idx, bn_idx)]
    ci_tpr = {f: np.percentile([best_point([pos[i] for i in ip], [neg[j] for j in jn], f)[0]
                                for ip, jn in zip(bp_idx, bn_idx)], [2.5, 97.5]) for f in targets}
    return {"auc": auc(pos, neg), "roc": roc, "tpr_at_fpr": at, "asr": asr, "ci_tpr": ci_tpr,
            "ci_auc": np.percentile(boot_auc, [2.5, 97.5]), "ci_asr": np.percentile(boot_asr, [2.5, 97.5])}


@pytest.mark.parametrize("case", range(25))
def test_evaluate_matches_brute_force_on_random_scores(case):
    rng = np.random.default_rng(1000 + case)
    n_pos, n_neg = int(rng.integers(1, 40)), int(rng.integers(1, 220))
    y = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)])
    # coarse scores in some cases, so ties between and within classes are common
    s = rng.normal(size=len(y)) + 0.8 * y
    if case % 2:
        s = np.round(s, 1)
    threshold = float(rng.choice(s)) if case % 3 else float(rng.normal())
    # an FPR target equal to an achievable FPR (k false positives exactly): the boundary counts
    targets = (0.01, 0.05, 0.3) + ((min(3, n_neg - 1) / n_neg,) if n_neg > 1 else ())
    n_boot, seed = 40, case
    m = evaluate(y, s, threshold, fpr_targets=targets, n_bootstrap=n_boot, seed=seed)
    # the contract's resampling (stratified, default_rng(seed): members then non-members)
    brng = np.random.default_rng(seed)
    boot_idx = (brng.integers(0, n_pos, size=(n_boot, n_pos)), brng.integers(0, n_neg, size=(n_boot, n_neg)))
    bf = _brute_force(y.tolist(), s.tolist(), threshold, targets, boot_idx)

    assert m["auc"] == pytest.approx(bf["auc"], abs=1e-12)
    assert m["attack_success_rate"] == pytest.approx(bf["asr"], abs=1e-12)
    roc = list(zip(m["roc"]["thresholds"], m["roc"]["fpr"], m["roc"]["tpr"]))
    want = [(None if t == float("inf") else t, f, r) for t, f, r in bf["roc"]]
    assert [(t, pytest.approx(f), pytest.approx(r)) for t, f, r in roc] == want
    for f in targets:
        point = m["tpr_at_fpr"][str(f)]
        if f * n_neg < 1:
            assert point["defined"] is False  # one false positive already exceeds the target
            assert m["ci95"]["tpr_at_fpr"][str(f)] is None
            continue
        # each bootstrap replicate picks its own operating point (brute force over its thresholds)
        assert m["ci95"]["tpr_at_fpr"][str(f)] == pytest.approx(list(bf["ci_tpr"][f]), abs=1e-12), f
        t, fpr, tpr = bf["tpr_at_fpr"][f]
        assert (point["threshold"], point["fpr"], point["tpr"]) == (t, pytest.approx(fpr), pytest.approx(tpr)), f
        assert point["fpr"] <= f + 1e-12
    assert m["ci95"]["auc"] == pytest.approx(list(bf["ci_auc"]), abs=1e-12)
    assert m["ci95"]["attack_success_rate"] == pytest.approx(list(bf["ci_asr"]), abs=1e-12)
