"""Evaluation of one attack's per-record scores: the ``metrics`` object of metrics.json.

``evaluate`` is a pure function of (labels, scores, threshold, settings). Everything it returns
is a plain Python int/float/str/bool/None/list/dict, so ``json.dumps`` works and recomputing it
from scores.parquet and decision.threshold reproduces it exactly.

Conventions (member = label 1; prediction = ``score >= threshold``):
- A metric whose denominator is empty is ``None`` and ``undefined[<name>]`` says why:
  precision when nobody is flagged; recall with no members; f1 when both are empty; AUC, ROC
  and balanced accuracy unless both classes are present. ``undefined`` is ``{}`` otherwise.
- ci95: percentile bootstrap (2.5 %, 97.5 %), STRATIFIED: members and non-members are
  resampled separately with replacement, keeping their counts, so every replicate has both
  classes and the class balance of the evaluation set. numpy ``default_rng(seed)``; the AUC
  of each replicate is the Mann-Whitney statistic (equal to roc_auc_score, ties count 1/2).
  ``ci95.tpr_at_fpr[<target>]``: the same replicates' TPR at that FPR, each replicate choosing
  its own threshold (so the interval includes the uncertainty of the operating point, not only
  the binomial noise of the members at a fixed threshold); ``None`` where the point is undefined.
- tpr_at_fpr: the ROC operating point with the highest TPR whose realized FPR <= target (among
  equal TPRs, the lowest FPR). It is ``defined: false`` when target * n_neg < 1: then even one
  false positive exceeds the target, and the only admissible point is "flag nobody".
- roc_curve's first threshold is +inf ("flag nobody"). JSON has no infinity, so it is reported
  as ``None`` (in ``roc.thresholds`` and as an operating point's threshold): read None as
  "no record is flagged". ROC points are all of roc_curve's (drop_intermediate=False).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from m4i.io import M4IError

_EPS = 1e-12  # float slack for FPR comparisons such as 1/100 <= 0.01


def _validate(labels, scores, threshold) -> tuple[np.ndarray, np.ndarray, float]:
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise M4IError(f"evaluate: labels and scores must be 1-D (got shapes {y.shape} and {s.shape})")
    if len(y) != len(s):
        raise M4IError(f"evaluate: {len(y)} labels but {len(s)} scores")
    if len(y) == 0:
        raise M4IError("evaluate: no records to evaluate")
    try:
        s = s.astype(float)
    except (TypeError, ValueError) as exc:
        raise M4IError(f"evaluate: scores are not numeric ({exc})") from exc
    bad = np.flatnonzero(~np.isfinite(s))
    if len(bad):
        raise M4IError(f"evaluate: score at position {bad[0]} is {s[bad[0]]} ({len(bad)} non-finite score(s))")
    ok = np.isin(y, [0, 1]) if y.dtype.kind in "biuf" else np.zeros(len(y), bool)
    if not ok.all():
        raise M4IError(f"evaluate: labels must be 0 or 1 (1 = member), found {y[~ok][0]!r} at position {np.flatnonzero(~ok)[0]}")
    try:
        t = float(threshold)
    except (TypeError, ValueError) as exc:
        raise M4IError(f"evaluate: threshold {threshold!r} is not a number") from exc
    if not math.isfinite(t):
        raise M4IError(f"evaluate: threshold {threshold!r} is not finite")
    return y.astype(int), s, t


def _json_threshold(t) -> float | None:
    """roc_curve's +inf ("flag nobody") as None: JSON has no infinity."""
    return None if math.isinf(t) else float(t)


def _auc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC of every row of (labels y, scores s) as the Mann-Whitney statistic, ties counting 1/2
    (equal to roc_auc_score); vectorised for the bootstrap. Each row needs both classes."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    ranks = rankdata(np.asarray(s, dtype=float), axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    return ((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _max_false_positives(target: float, n_neg: int) -> int:
    """The most false positives an operating point may have at FPR <= target."""
    return int(math.floor(target * n_neg + _EPS))


def _tpr_at_fpr_rows(pos: np.ndarray, neg: np.ndarray, target: float) -> np.ndarray:
    """TPR at FPR <= target of every row of (member scores, non-member scores), vectorised for
    the bootstrap. With k the most false positives allowed, a threshold just above the
    (k+1)-th highest non-member score flags at most k non-members and every member above it;
    any lower threshold flags k+1 or more. So TPR = share of members strictly above it."""
    k = _max_false_positives(target, neg.shape[1])
    kth = np.partition(neg, neg.shape[1] - k - 1, axis=1)[:, neg.shape[1] - k - 1]
    return (pos > kth[:, None]).mean(axis=1)


def _bootstrap(y, s, threshold, n_bootstrap, seed, fpr_targets=()) -> dict:
    out = {"auc": None, "attack_success_rate": None, "n_bootstrap": int(n_bootstrap), "seed": int(seed),
           "tpr_at_fpr": {str(f): None for f in fpr_targets}}
    if n_bootstrap <= 0:
        return out
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    # Stratified: each class resampled within itself, so the class counts stay fixed.
    bp = pos[rng.integers(0, len(pos), size=(n_bootstrap, len(pos)))]
    bn = neg[rng.integers(0, len(neg), size=(n_bootstrap, len(neg)))]
    asr = ((bp >= threshold).sum(axis=1) + (bn < threshold).sum(axis=1)) / len(s)
    out["attack_success_rate"] = [float(v) for v in np.percentile(asr, [2.5, 97.5])]
    if len(pos) and len(neg):
        yb = np.broadcast_to(np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)], (n_bootstrap, len(s)))
        auc = _auc_rows(yb, np.concatenate([bp, bn], axis=1))
        out["auc"] = [float(v) for v in np.percentile(auc, [2.5, 97.5])]
        for f in fpr_targets:
            if _max_false_positives(float(f), len(neg)) >= 1:  # else undefined, as the point itself
                tpr = _tpr_at_fpr_rows(bp, bn, float(f))
                out["tpr_at_fpr"][str(f)] = [float(v) for v in np.percentile(tpr, [2.5, 97.5])]
    return out


def _undefined_point(target: float, n_pos: int, n_neg: int, reason: str) -> dict:
    return {"target_fpr": float(target), "defined": False, "n_neg": n_neg, "n_pos": n_pos, "reason": reason}


def _tpr_at_fpr(target: float, roc, n_pos: int, n_neg: int) -> dict:
    if roc is None:
        return _undefined_point(target, n_pos, n_neg, f"needs members and non-members (n_pos={n_pos}, n_neg={n_neg})")
    if _max_false_positives(target, n_neg) < 1:
        return _undefined_point(
            target, n_pos, n_neg,
            f"target FPR {target} with {n_neg} non-members: a single false positive is already FPR "
            f"{1 / n_neg:.3g}; need at least {math.ceil(1 / target - 1e-9)} non-members")
    fpr, tpr, thr = roc
    ok = np.flatnonzero(fpr <= target + _EPS)
    i = ok[np.argmax(tpr[ok])]  # argmax takes the first max: the lowest FPR for that TPR
    return {"target_fpr": float(target), "defined": True, "threshold": _json_threshold(thr[i]),
            "fpr": float(fpr[i]), "tpr": float(tpr[i]),
            "fp": int(round(fpr[i] * n_neg)), "tp": int(round(tpr[i] * n_pos)),
            "n_neg": n_neg, "n_pos": n_pos}


def _ratio(num: int, den: int, name: str, why: str, undefined: dict) -> float | None:
    if den == 0:
        undefined[name] = why
        return None
    return float(num / den)


def evaluate(labels: Sequence[int], scores: Sequence[float], threshold: float, *,
             fpr_targets: Sequence[float] = (0.01, 0.001), n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """The ``metrics`` object of metrics.json (see docs/CONTRACTS.md and this module's docstring)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s, t = _validate(labels, scores, threshold)
    for f in fpr_targets:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise M4IError(f"evaluate: fpr target {f!r} must be a number in (0, 1)")
    if int(n_bootstrap) < 0:
        raise M4IError(f"evaluate: n_bootstrap {n_bootstrap!r} must be >= 0")
    pred = s >= t
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    tn = n_neg - fp
    fn = n_pos - tp
    undefined: dict[str, str] = {}
    precision = _ratio(tp, tp + fp, "precision", "no record was flagged as a member", undefined)
    recall = _ratio(tp, n_pos, "recall", "no members", undefined)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, "f1", "no members and none flagged", undefined)
    if n_pos and n_neg:
        auc = float(roc_auc_score(y, s))
        roc = roc_curve(y, s, drop_intermediate=False)
        balanced = float((tp / n_pos + tn / n_neg) / 2)
        roc_json = {"fpr": [float(v) for v in roc[0]], "tpr": [float(v) for v in roc[1]],
                    "thresholds": [_json_threshold(v) for v in roc[2]]}
    else:
        auc = balanced = roc = roc_json = None
        why = f"needs members and non-members (n_members={n_pos}, n_nonmembers={n_neg})"
        undefined.update(auc=why, roc=why, balanced_accuracy=why)
    return {
        "n": int(len(y)), "n_members": n_pos, "n_nonmembers": n_neg,
        "attack_success_rate": float((tp + tn) / len(y)),
        "balanced_accuracy": balanced, "precision": precision, "recall": recall, "f1": f1, "auc": auc,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "ci95": _bootstrap(y, s, t, int(n_bootstrap), int(seed), fpr_targets),
        "tpr_at_fpr": {str(f): _tpr_at_fpr(float(f), roc, n_pos, n_neg) for f in fpr_targets},
        "roc": roc_json,
        "undefined": undefined,
    }
