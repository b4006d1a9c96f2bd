"""Calibrated attacks (LiRA online/offline, RMIA) and multi-query aggregation on toys with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from m4i.attacks.calibrated import (gaussian_scale, lira_offline, lira_online, metric_scale,
                                    rmia, signal_array)
from m4i.attacks.queries import aggregate_queries, map_queries
from m4i.data.membership import membership_matrix
from m4i.evaluation import evaluate
from m4i.io import M4IError


# --- the LiRA reference code (tensorflow/privacy research/mi_lira_2021/plot.py), re-implemented --
# Copied formula by formula (not by calling ours) so that a change on either side shows. Its
# `prediction` is "lower = member" (its sweep() uses -prediction); the tests negate it.
def ref_generate_ours(keep, scores, check_scores, in_size=100000, out_size=100000, fix_variance=False):
    dat_in, dat_out = [], []
    for j in range(scores.shape[1]):
        dat_in.append(scores[keep[:, j], j, :])
        dat_out.append(scores[~keep[:, j], j, :])
    in_size = min(min(map(len, dat_in)), in_size)
    out_size = min(min(map(len, dat_out)), out_size)
    dat_in = np.array([x[:in_size] for x in dat_in])
    dat_out = np.array([x[:out_size] for x in dat_out])
    mean_in = np.median(dat_in, 1)
    mean_out = np.median(dat_out, 1)
    if fix_variance:
        std_in = np.std(dat_in)
        std_out = np.std(dat_in)  # sic: the reference code's OUT spread is the IN array's
    else:
        std_in = np.std(dat_in, 1)
        std_out = np.std(dat_out, 1)
    prediction = []
    for sc in check_scores:
        pr_in = -scipy.stats.norm.logpdf(sc, mean_in, std_in + 1e-30)
        pr_out = -scipy.stats.norm.logpdf(sc, mean_out, std_out + 1e-30)
        prediction.extend((pr_in - pr_out).mean(1))
    return np.array(prediction)


def ref_generate_ours_offline(keep, scores, check_scores, out_size=100000, fix_variance=False):
    dat_out = [scores[~keep[:, j], j, :] for j in range(scores.shape[1])]
    out_size = min(min(map(len, dat_out)), out_size)
    dat_out = np.array([x[:out_size] for x in dat_out])
    mean_out = np.median(dat_out, 1)
    std_out = np.std(dat_out) if fix_variance else np.std(dat_out, 1)
    prediction = []
    for sc in check_scores:
        prediction.extend(scipy.stats.norm.logpdf(sc, mean_out, std_out + 1e-30).mean(1))
    return np.array(prediction)


# --- the RMIA reference code (privacytrustlab/ml_privacy_meter modules/mia/attacks/rmia.py) ------
def ref_run_rmia(target_signals, ref_signals, ref_memberships, z_target_signals, z_ref_signals, offline_a,
                 num_reference_models):
    """Their run_rmia (samples x models layout), for OUT-only references with
    num_reference_models = the number of models (then their descending sort keeps every value)."""
    out_signals = ref_signals * ~ref_memberships
    out_signals = -np.sort(-out_signals, axis=1)[:, :num_reference_models]
    mean_x = (1 + offline_a) / 2 * np.mean(out_signals, axis=1) + (1 - offline_a) / 2
    prob_ratio_x = target_signals.ravel() / mean_x
    z_out = -np.sort(-z_ref_signals, axis=1)[:, :num_reference_models]
    mean_z = (1 + offline_a) / 2 * np.mean(z_out, axis=1) + (1 - offline_a) / 2
    prob_ratio_z = z_target_signals.ravel() / mean_z
    ratios = prob_ratio_x[:, np.newaxis] / prob_ratio_z
    return np.average(ratios > 1.0, axis=1)


# --- toys ----------------------------------------------------------------------------------------
def lira_toy(n=4000, k=8, q=2, seed=0, effect=1.0, noise=0.35, spread=2.0):
    """Candidates of very different difficulty (mean ~ N(0, spread^2)), a per-example membership
    effect, model noise. Returns target (n, q), reference (k, n, q), membership (k, n), labels (n,)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, spread, n)
    gain = effect * rng.uniform(0.5, 1.5, n)  # how much training on it raises its signal
    membership = membership_matrix(n, k, seed=seed)
    labels = rng.random(n) < 0.5  # the target's membership: used ONLY to evaluate

    def model(m):
        return difficulty[:, None] + gain[:, None] * m[:, None] + rng.normal(0, noise, (n, q))

    reference = np.stack([model(membership[j]) for j in range(k)])
    return model(labels), reference, membership, labels.astype(int)


def tpr_at(labels, scores, fpr):
    point = evaluate(labels, scores, 0.0, n_bootstrap=0)["tpr_at_fpr"][str(fpr)]
    assert point["defined"]
    return point["tpr"]


# --- membership matrix -----------------------------------------------------------------------------
def test_membership_matrix_balanced_and_seeded():
    m = membership_matrix(1001, 16, seed=3)
    assert m.shape == (16, 1001) and m.dtype == bool
    assert (m.sum(axis=0) == 8).all()  # every candidate IN for exactly k/2 models
    per_model = m.sum(axis=1)  # each model IN for ~ Binomial(n, 1/2): within 4 sd of n/2
    assert (np.abs(per_model - 1001 / 2) < 4 * np.sqrt(1001 / 4)).all()
    assert np.array_equal(m, membership_matrix(1001, 16, seed=3))
    assert not np.array_equal(m, membership_matrix(1001, 16, seed=4))
    # models are exchangeable: no model is IN systematically more often (pairs of models agree ~1/2)
    agree = (m[0] == m[1]).mean()
    assert 0.4 < agree < 0.65
    for bad in (3, 0, 2.0, True):
        with pytest.raises(M4IError, match="k"):
            membership_matrix(10, bad, seed=0)
    with pytest.raises(M4IError, match="n_candidates"):
        membership_matrix(0, 4, seed=0)


# --- LiRA against the reference formula --------------------------------------------------------------
def test_lira_online_equals_reference_formula():
    target, reference, keep, _ = lira_toy(n=300, k=8, q=3, seed=1)
    ours = lira_online(target, reference, keep, center="median", variance="per_example", ddof=0, min_std=1e-30)
    theirs = -ref_generate_ours(keep, reference, target[None])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


def test_lira_offline_two_sided_equals_reference_formula_one_sided_differs():
    target, reference, keep, labels = lira_toy(n=300, k=8, q=3, seed=2)
    ours = lira_offline(target, reference, keep, test="two_sided", center="median", variance="per_example",
                        ddof=0, min_std=1e-30)
    theirs = -ref_generate_ours_offline(keep, reference, target[None])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)
    # One-sided: a signal far BELOW the OUT Gaussian is not evidence of membership.
    shifted = target.copy()
    shifted[0] = reference[~keep[:, 0], 0].mean(axis=0) - 10.0
    one = lira_offline(shifted, reference, keep, center="median", variance="per_example", ddof=0)
    two = lira_offline(shifted, reference, keep, test="two_sided", center="median", variance="per_example", ddof=0)
    assert one[0] == one.min() and two[0] == two.max()


def test_lira_global_variance_is_the_pooled_within_example_spread():
    target, reference, keep, _ = lira_toy(n=200, k=4, q=2, seed=3)
    # Independent computation with explicit loops.
    res_in, res_out, dof_in, dof_out = 0.0, 0.0, 0, 0
    mu_in, mu_out = np.empty(target.shape), np.empty(target.shape)
    for i in range(target.shape[0]):
        for qq in range(target.shape[1]):
            a, b = reference[keep[:, i], i, qq], reference[~keep[:, i], i, qq]
            mu_in[i, qq], mu_out[i, qq] = a.mean(), b.mean()
            res_in += ((a - a.mean()) ** 2).sum()
            res_out += ((b - b.mean()) ** 2).sum()
            dof_in += len(a) - 1
            dof_out += len(b) - 1
    s_in, s_out = np.sqrt(res_in / dof_in), np.sqrt(res_out / dof_out)
    expect = (scipy.stats.norm.logpdf(target, mu_in, s_in) - scipy.stats.norm.logpdf(target, mu_out, s_out)).mean(1)
    np.testing.assert_allclose(lira_online(target, reference, keep), expect, rtol=1e-10)
    # The reference code's fix_variance std counts the spread between examples (here ~2 vs ~0.35).
    whole = np.std(reference[np.broadcast_to(keep[:, :, None], reference.shape)])
    assert whole > 3 * s_in
    off = scipy.stats.norm.logcdf((target - mu_out) / s_out).mean(1)
    np.testing.assert_allclose(lira_offline(target, reference, keep), off, rtol=1e-10)
    # offline with OUT-only models and no membership: all of them count
    out_only = reference[:, :, :][:, :50]
    np.testing.assert_allclose(
        lira_offline(target[:50], out_only),
        scipy.stats.norm.logcdf((target[:50] - out_only.mean(0)) / np.sqrt(
            ((out_only - out_only.mean(0)) ** 2).sum() / ((4 - 1) * 50 * 2))).mean(1), rtol=1e-10)


def test_lira_beats_a_global_threshold_at_low_fpr():
    target, reference, keep, labels = lira_toy(n=4000, k=8, q=2, seed=4)
    glob = target.mean(axis=1)  # the global rule on the same signal: higher = member
    online = lira_online(target, reference, keep)
    offline = lira_offline(target, reference[:, :, :], keep)  # OUT halves of the online models
    for fpr in (0.01, 0.001):
        g, on, off = tpr_at(labels, glob, fpr), tpr_at(labels, online, fpr), tpr_at(labels, offline, fpr)
        assert on > g + 0.3 and off > g + 0.2, (fpr, g, on, off)
    # and the per-example variance is usable with many models per side
    per_example = lira_online(target, reference, keep, variance="per_example")
    assert tpr_at(labels, per_example, 0.01) > tpr_at(labels, glob, 0.01) + 0.2


def test_lira_never_sees_target_labels_and_is_query_order_free():
    target, reference, keep, _ = lira_toy(n=100, k=4, q=3, seed=5)
    perm = [2, 0, 1]
    np.testing.assert_allclose(lira_online(target, reference, keep),
                               lira_online(target[:, perm], reference[:, :, perm], keep), rtol=1e-12)
    # 1-D inputs are the q = 1 case
    np.testing.assert_allclose(lira_online(target[:, 0], reference[:, :, 0], keep),
                               lira_online(target[:, :1], reference[:, :, :1], keep))


def test_lira_validation():
    target, reference, keep, _ = lira_toy(n=20, k=4, q=2, seed=6)
    with pytest.raises(M4IError, match="does not match"):
        lira_online(target, reference[:, :10], keep)
    with pytest.raises(M4IError, match="membership"):
        lira_online(target, reference, keep[:, :10])
    with pytest.raises(M4IError, match="non-finite"):
        lira_online(np.where(np.arange(20)[:, None] == 3, np.nan, target), reference, keep)
    lira_online(target, reference, keep, variance="per_example")  # 2 per side, ddof 1: allowed
    lonely = keep.copy()
    lonely[:, 0] = [True, False, False, False]
    with pytest.raises(M4IError, match="candidate 0 has 1 IN.*variance='global'"):
        lira_online(target, reference, lonely, variance="per_example")
    none_in = keep.copy()
    none_in[:, 0] = False
    with pytest.raises(M4IError, match="candidate 0 has 0 IN"):
        lira_online(target, reference, none_in)
    for kw in ({"center": "mode"}, {"variance": "x"}, {"min_std": 0}, {"ddof": -1}):
        with pytest.raises(M4IError):
            lira_online(target, reference, keep, **kw)
    with pytest.raises(M4IError, match="test"):
        lira_offline(target, reference, test="left")


def test_lira_zero_spread_is_floored_not_infinite():
    target = np.array([[1.0], [1.0], [2.0]])
    reference = np.ones((4, 3, 1))  # every reference model gives exactly the same signal
    keep = membership_matrix(3, 4, seed=0)
    s = lira_offline(target, reference, keep)
    assert np.isfinite(s).all() and s[2] > s[0]
    assert np.isfinite(lira_online(target, reference, keep)).all()


# --- RMIA ----------------------------------------------------------------------------------------------
def test_rmia_offline_hand_computed():
    # Two OUT reference models, a = 0.5: p(.) = ((1 + 0.5) * p_OUT(.) + 0.5) / 2.
    #   x1: p_OUT = (0.4 + 0.6)/2 = 0.5 -> p = 0.625; LR = 0.8/0.625 = 1.28
    #   x2: p_OUT = (0.3 + 0.5)/2 = 0.4 -> p = 0.55;  LR = 0.3/0.55  = 0.5455
    #   z:  p_OUT = 0.4, 0.3, 0.6, 0.3 -> p = 0.55, 0.475, 0.7, 0.475
    #       LR = 0.5/0.55 = 0.909, 0.2/0.475 = 0.421, 0.9/0.7 = 1.2857, 0.6/0.475 = 1.263
    # gamma 1:   x1 beats 0.909, 0.421, 1.263 (not 1.2857) -> 3/4; x2 beats 0.421 only -> 1/4
    # gamma 1.1: x1/z = 1.408, 3.04, 0.996, 1.013 -> 2/4;       x2/z = 0.6, 1.296, 0.42, 0.43 -> 1/4
    tx = [0.8, 0.3]
    rx = [[0.4, 0.3], [0.6, 0.5]]
    tz = [0.5, 0.2, 0.9, 0.6]
    rz = [[0.5, 0.4, 0.6, 0.2], [0.3, 0.2, 0.6, 0.4]]
    np.testing.assert_allclose(rmia(tx, rx, tz, rz, offline=True, a=0.5), [0.75, 0.25])
    np.testing.assert_allclose(rmia(tx, rx, tz, rz, offline=True, a=0.5, gamma=1.1), [0.5, 0.25])
    # a = 1: p = p_OUT. x1: LR 1.6; z: 1.25, 0.667, 1.5, 2.0 -> 3/4
    np.testing.assert_allclose(rmia(tx, rx, tz, rz, offline=True, a=1.0)[0], 0.75)


def test_rmia_offline_equals_authors_formula_and_online_is_the_mean():
    rng = np.random.default_rng(7)
    n, m, k = 200, 300, 4
    tx, tz = rng.uniform(0.05, 1, n), rng.uniform(0.05, 1, m)
    rx, rz = rng.uniform(0.05, 1, (k, n)), rng.uniform(0.05, 1, (k, m))
    for a in (0.0, 0.3, 1.0):
        theirs = ref_run_rmia(tx, rx.T, np.zeros((n, k), bool), tz, rz.T, a, k)
        np.testing.assert_allclose(rmia(tx, rx, tz, rz, offline=True, a=a), theirs)
    keep = membership_matrix(n, k, seed=0)
    online = rmia(tx, rx, tz, rz, membership=keep)
    lr_x, lr_z = tx / rx.mean(0), tz / rz.mean(0)
    np.testing.assert_allclose(online, ((lr_x[:, None] / lr_z[None]) > 1).mean(1))
    # offline with online references: only their OUT entries enter p_OUT(x)
    p_out = (rx * ~keep).sum(0) / (~keep).sum(0)
    lr_x = tx / (0.5 * (1.3 * p_out + 0.7))
    lr_z = tz / (0.5 * (1.3 * rz.mean(0) + 0.7))
    np.testing.assert_allclose(rmia(tx, rx, tz, rz, membership=keep, offline=True),
                               ((lr_x[:, None] / lr_z[None]) > 1).mean(1))
    # queries: the per-query scores, averaged
    q2 = rmia(np.c_[tx, tx[::-1]], np.stack([rx, rx[:, ::-1]], -1), np.c_[tz, tz], np.stack([rz, rz], -1),
              membership=keep)
    np.testing.assert_allclose(q2, (rmia(tx, rx, tz, rz, membership=keep)
                                    + rmia(tx[::-1], rx[:, ::-1], tz, rz, membership=keep[:, ::-1])) / 2)


def test_rmia_separates_members_on_a_toy():
    rng = np.random.default_rng(8)
    n, m, k = 2000, 2000, 8
    keep = membership_matrix(n, k, seed=1)
    labels = rng.random(n) < 0.5
    hard_x, hard_z = rng.uniform(0.1, 0.9, n), rng.uniform(0.1, 0.9, m)

    def prob(base, member):
        return np.clip(base + 0.08 * member + rng.normal(0, 0.02, base.shape), 1e-3, 1)

    tx, tz = prob(hard_x, labels), prob(hard_z, 0)
    rx = np.stack([prob(hard_x, keep[j]) for j in range(k)])
    rz = np.stack([prob(hard_z, 0) for _ in range(k)])
    y = labels.astype(int)
    assert tpr_at(y, rmia(tx, rx, tz, rz, membership=keep), 0.01) > tpr_at(y, tx, 0.01) + 0.3
    # Offline, a matters (the authors tune it on a reference model); on this toy 0.8 is good.
    assert tpr_at(y, rmia(tx, rx, tz, rz, membership=keep, offline=True, a=0.8), 0.01) \
        > tpr_at(y, tx, 0.01) + 0.3


def test_rmia_validation():
    tx, rx, tz, rz = [0.5, 0.6], [[0.5, 0.5], [0.4, 0.4]], [0.5], [[0.5], [0.5]]
    keep = membership_matrix(2, 2, seed=0)
    with pytest.raises(M4IError, match="membership"):
        rmia(tx, rx, tz, rz)  # online without the attacker's membership matrix
    with pytest.raises(M4IError, match=r"\[0, 1\]"):
        rmia([1.5, 0.6], rx, tz, rz, offline=True)
    with pytest.raises(M4IError, match="gamma"):
        rmia(tx, rx, tz, rz, membership=keep, gamma=0)
    with pytest.raises(M4IError, match="a must be"):
        rmia(tx, rx, tz, rz, offline=True, a=1.5)
    with pytest.raises(M4IError, match="reference_z"):
        rmia(tx, rx, tz, [[0.5]], membership=keep)
    with pytest.raises(M4IError, match="p\\(x\\) is 0"):
        rmia(tx, [[0, 0.5], [0, 0.4]], tz, rz, membership=keep)
    with pytest.raises(M4IError, match="IN for no reference model"):
        rmia(tx, rx, tz, rz, membership=np.zeros((2, 2), bool))


# --- scales and alignment --------------------------------------------------------------------------
def test_gaussian_scale_known_values():
    np.testing.assert_allclose(gaussian_scale([0.5, 0.0, 1.0, 0.9], "logit"),
                               [0.0, np.log(1e-3 / (1 - 1e-3)), np.log((1 - 1e-3) / 1e-3), np.log(9)])
    np.testing.assert_allclose(gaussian_scale([5.0], "logit", upper=10.0), [0.0])
    np.testing.assert_allclose(gaussian_scale([0.0, 2.0], "log"), [np.log(1e-3), np.log(2.001)])
    ll = np.array([-0.05, -1.0, -7.0, 0.0])
    p = np.minimum(np.exp(ll), 1 - 1e-3)
    np.testing.assert_allclose(gaussian_scale(ll, "loglik_logit"), np.log(p / (1 - p)), rtol=1e-9)
    assert np.all(np.diff(gaussian_scale(np.linspace(0, 1, 50), "logit")) >= 0)
    for vals, kind in (([1.2], "logit"), ([-0.1], "logit"), ([-1.0], "log"), ([0.5], "loglik_logit"),
                       ([np.nan], "identity")):
        with pytest.raises(M4IError):
            gaussian_scale(vals, kind)
    assert [metric_scale(c) for c in ("bleu4_mean", "rougeL_max", "meteor_mean", "cider_mean", "ref_loglik")] \
        == ["logit", "logit", "logit", "log", "loglik_logit"]
    with pytest.raises(M4IError, match="no known scale"):
        metric_scale("cos")


def test_signal_array_aligns_by_record_id():
    a = pd.DataFrame({"record_id": ["r1", "r2", "r3"], "s": [1.0, 2.0, 3.0], "l": [[1, 2], [3, 4], [5, 6]]})
    b = a.iloc[::-1].assign(s=lambda t: t["s"] * 10)
    arr = signal_array([a, b], ["r2", "r1"], "s")
    np.testing.assert_array_equal(arr, [[[2.0], [1.0]], [[20.0], [10.0]]])
    np.testing.assert_array_equal(signal_array([a], ["r3"], "l"), [[[5.0, 6.0]]])
    with pytest.raises(M4IError, match="record 'r9' is not in table"):
        signal_array([a], ["r1", "r9"], "s")
    with pytest.raises(M4IError, match="different lengths"):
        signal_array([a.assign(l=[[1], [2, 3], [4]])], ["r1", "r2"], "l")
    with pytest.raises(M4IError, match="lacks"):
        signal_array([a], ["r1"], "missing")


# --- multi-query aggregation -----------------------------------------------------------------------------
def test_aggregate_queries_mean_and_max():
    t = pd.DataFrame({"record_id": ["b", "a", "b", "a", "b", "a"], "query": [0, 0, 1, 1, 2, 2],
                      "bleu": [0.1, 0.5, 0.4, 0.5, 0.7, 0.2], "vec": [[1, 0], [0, 0], [3, 0], [0, 2], [2, 1], [0, 1]]})
    out = aggregate_queries(t)
    assert list(out.columns) == ["record_id", "bleu_qmean", "bleu_qmax", "vec_qmean", "vec_qmax"]
    assert list(out["record_id"]) == ["b", "a"]
    np.testing.assert_allclose(out["bleu_qmean"], [0.4, 0.4])
    np.testing.assert_allclose(out["bleu_qmax"], [0.7, 0.5])
    np.testing.assert_allclose(np.stack(out["vec_qmean"]), [[2, 1 / 3], [0, 1]])
    np.testing.assert_allclose(np.stack(out["vec_qmax"]), [[3, 1], [0, 2]])
    # row order does not matter
    shuffled = aggregate_queries(t.iloc[[5, 0, 3, 2, 1, 4]])
    pd.testing.assert_frame_equal(shuffled.set_index("record_id").loc[["b", "a"]].reset_index(), out)
    with pytest.raises(M4IError, match="record 'a' has queries \\[0, 2\\]"):
        aggregate_queries(t.drop(index=3))
    with pytest.raises(M4IError, match="twice"):
        aggregate_queries(pd.concat([t, t.iloc[:1]]))
    with pytest.raises(M4IError, match="not numeric"):
        aggregate_queries(t.assign(caption="x"))
    with pytest.raises(M4IError, match="query"):
        aggregate_queries(t.drop(columns="query"))


def test_map_queries_applies_per_query():
    caps = pd.DataFrame({"record_id": ["a", "a", "b", "b"], "query": [0, 1, 0, 1], "caption": ["x", "yy", "zzz", "w"]})
    calls = []

    def fn(part):
        calls.append(list(part.columns))
        return pd.DataFrame({"record_id": part["record_id"], "n": part["caption"].str.len().astype(float)})

    out = map_queries(caps, fn)
    assert calls == [["record_id", "caption"]] * 2
    assert list(out.columns) == ["record_id", "query", "n"]
    agg = aggregate_queries(out)
    np.testing.assert_allclose(agg["n_qmean"], [1.5, 2.0])
    np.testing.assert_allclose(agg["n_qmax"], [2.0, 3.0])
