"""Shadow-calibrated membership attacks on per-record signal tables (MB, FB and blind alike).

An attack is one config entry, e.g. ``{"method": "linear_svm", "features": [...], "params":
{"C": 1.0}}``. It is fitted on the shadow captioner's members (``shadow_in``, label 1) and
non-members (``shadow_out``, label 0) only, and then scores the target's records. Every score is
"higher = more likely member", and the decision is ``score >= threshold`` with the threshold
fixed on shadow data (threshold method) or by the classifier's own rule (0 for a
decision_function, 0.5 for a probability).

Methods (params and defaults):
- ``threshold``: no params. One signal: the feature with the best direction-aware shadow AUC
  (a feature lower for members is negated, ``direction = -1``); the threshold maximises shadow
  accuracy (midpoint between the chosen shadow score and the next lower one).
- ``linear_svm``: C=1.0, max_iter=10000. StandardScaler + LinearSVC; score = decision_function.
  The paper's classifier (on ROUGE-1/2/L means).
- ``logreg``: C=1.0, max_iter=1000. StandardScaler + LogisticRegression; score = decision_function
  (log-odds; same ranking as the probability but no saturation ties).
- ``mlp``: hidden=[64], max_iter=1000, alpha=1e-4, lr=1e-3. StandardScaler + MLPClassifier
  (adam); score = predict_proba[:, 1].
Classifiers get ``random_state = derive_seed(seed, "attack", method)``.

How good the fitted rule is, judged on the attacker's side only: ``shadow_cv_auc`` and
``shadow_cv_accuracy`` are k-fold cross-validated on the shadow rows (``CV_FOLDS`` folds,
stratified by label, grouped by record so that one image under several shadows never sits on
both sides of a fold; each fold refits the whole method, the feature choice of ``threshold``
included). The report picks its "best" attack by them: never by anything measured on the
target. ``shadow_fit_auc`` / ``shadow_fit_accuracy`` are the in-sample values of the final fit
(optimistic: an MLP can fit noise), kept for diagnosis only.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from m4i.attacks.queries import is_list_column
from m4i.io import M4IError
from m4i.records import unique_ids
from m4i.names import ATTACK_METHODS
from m4i.seeding import derive_seed

METHODS = ATTACK_METHODS
DEFAULT_PARAMS = {
    "threshold": {},
    "linear_svm": {"C": 1.0, "max_iter": 10000},
    "logreg": {"C": 1.0, "max_iter": 1000},
    "mlp": {"hidden": [64], "max_iter": 1000, "alpha": 1e-4, "lr": 1e-3},
}
TABLES = ("shadow_in", "shadow_out", "target_in", "target_out")
CV_FOLDS = 5


# --- features -------------------------------------------------------------------------------
def feature_columns(table: pd.DataFrame, features) -> list[str]:
    """The signal columns an attack uses: ``features`` as given, or for "all" every numeric or
    list-valued column except ``record_id``/``label`` (in table order)."""
    if features == "all":
        cols = [c for c in table.columns if c not in ("record_id", "label")
                and (pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
                     or is_list_column(table[c]))]
        if not cols:
            raise M4IError("attack features 'all': the signal table has no numeric column")
        return cols
    if isinstance(features, str) or not isinstance(features, (list, tuple)) or not features:
        raise M4IError(f"attack features must be 'all' or a non-empty list of column names, got {features!r}")
    return [str(f) for f in features]


def _matrix(table: pd.DataFrame, cols: list[str], what: str) -> tuple[np.ndarray, list[str]]:
    """(n, d) float matrix of ``cols``; a list-valued column ``c`` becomes ``c[0]..c[k-1]``."""
    blocks, names = [], []
    for c in cols:
        if c not in table:
            raise M4IError(f"{what}: signal table has no column {c!r} (has {list(table.columns)})")
        col = table[c]
        if is_list_column(col):
            try:
                block = np.array([np.asarray(v, dtype=float) for v in col])
            except (TypeError, ValueError) as exc:
                raise M4IError(f"{what}: list column {c!r} has rows of different lengths or non-numbers") from exc
            if block.ndim != 2:
                raise M4IError(f"{what}: list column {c!r} has rows of different lengths")
            names += [f"{c}[{k}]" for k in range(block.shape[1])]
        else:
            try:
                block = col.to_numpy(dtype=float)[:, None]
            except (TypeError, ValueError) as exc:
                raise M4IError(f"{what}: column {c!r} is not numeric") from exc
            names.append(c)
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if len(bad):
            rid = table["record_id"].iloc[bad[0]]
            raise M4IError(f"{what}: record {rid!r} has a missing or non-finite value in column {c!r}")
        blocks.append(block)
    return np.hstack(blocks) if blocks else np.empty((len(table), 0)), names


def _row_keys(table: pd.DataFrame) -> pd.Series:
    """A row's key: its record id, prefixed by its model when rows of several shadows are stacked."""
    rid = table["record_id"].astype(str)
    return table["model"].astype(str) + "/" + rid if "model" in table else rid


def _check_table(table, what: str, allow_empty: bool) -> None:
    if not isinstance(table, pd.DataFrame):
        raise M4IError(f"{what}: expected a DataFrame, got {type(table).__name__}")
    if "record_id" not in table:
        raise M4IError(f"{what}: signal table has no 'record_id' column")
    if not allow_empty and len(table) == 0:
        raise M4IError(f"{what}: signal table is empty")
    unique_ids(_row_keys(table), what)


def shadow_tables(shadows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The attacker's labelled training rows from K >= 1 shadow captioners.

    Each entry: ``{"model": key, "members": [record ids], "tables": [signal tables of its pool]}``.
    Rows of a shadow's members go to the first frame (label 1), the rest of its pool to the second
    (label 0), each in pool-table order, shadows in the given order; a string ``model`` column
    keeps the same record of two shadows apart (non-numeric: never a feature).
    """
    ins, outs = [], []
    for shadow in shadows:
        pool = pd.concat(list(shadow["tables"]), ignore_index=True).assign(model=str(shadow["model"]))
        member = pool["record_id"].astype(str).isin({str(r) for r in shadow["members"]})
        ins.append(pool[member])
        outs.append(pool[~member])
    if not ins:
        raise M4IError("an attack needs at least one shadow")
    return pd.concat(ins, ignore_index=True), pd.concat(outs, ignore_index=True)


# --- methods --------------------------------------------------------------------------------
def _shadow_auc(y: np.ndarray, x: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, x))


def _best_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The threshold on ``s`` maximising accuracy of ``s >= t`` on (y, s).

    Candidates are sklearn's ROC thresholds (every distinct score, plus +inf); the first best
    (highest threshold) wins, and the returned value is the midpoint to the next lower score so
    that the decision does not sit on a shadow record's exact value.
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    n_pos, n_neg = (y == 1).sum(), (y == 0).sum()
    acc = (tpr * n_pos + (1 - fpr) * n_neg) / len(y)
    i = int(np.argmax(acc))
    if i == 0:  # best to flag nobody: just above the largest shadow score
        return float(np.nextafter(thr[1], np.inf))
    if i == len(thr) - 1:  # best to flag everybody: the smallest shadow score
        return float(thr[i])
    return float((thr[i] + thr[i + 1]) / 2)


def _fit_threshold(X_sh, y_sh, names, params, seed):
    aucs = [_shadow_auc(y_sh, X_sh[:, j]) for j in range(X_sh.shape[1])]
    strength = [max(a, 1 - a) for a in aucs]
    j = int(np.argmax(strength))  # first of equals, in feature order
    direction = 1 if aucs[j] >= 0.5 else -1
    threshold = _best_threshold(y_sh, direction * X_sh[:, j])
    info = {"feature": names[j], "direction": direction,
            "feature_shadow_auc": {n: float(a) for n, a in zip(names, aucs)}}
    return (lambda X: direction * X[:, j]), threshold, info


def _classifier(method: str, params: dict, random_state: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if method == "linear_svm":
        clf = LinearSVC(C=float(params["C"]), max_iter=int(params["max_iter"]), random_state=random_state)
    elif method == "logreg":
        clf = LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"]), random_state=random_state)
    else:
        hidden = params["hidden"]
        hidden = (int(hidden),) if isinstance(hidden, (int, float)) else tuple(int(h) for h in hidden)
        clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=int(params["max_iter"]),
                            alpha=float(params["alpha"]), learning_rate_init=float(params["lr"]),
                            random_state=random_state)
    return make_pipeline(StandardScaler(), clf)


def _fit_classifier(method, X_sh, y_sh, params, seed):
    from sklearn.exceptions import ConvergenceWarning

    random_state = derive_seed(seed, "attack", method)
    model = _classifier(method, params, random_state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(X_sh, y_sh)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if method == "mlp":
        score, threshold = (lambda X: model.predict_proba(X)[:, 1]), 0.5
    else:
        score, threshold = model.decision_function, 0.0
    return score, threshold, {"random_state": random_state, "converged": converged}


def _params(attack: dict, method: str) -> dict:
    given = attack.get("params") or {}
    if not isinstance(given, dict):
        raise M4IError(f"attack params must be a mapping, got {given!r}")
    unknown = sorted(set(given) - set(DEFAULT_PARAMS[method]))
    if unknown:
        raise M4IError(f"attack method {method!r}: unknown params {unknown} "
                       f"(known: {sorted(DEFAULT_PARAMS[method])})")
    return {**DEFAULT_PARAMS[method], **given}


def _fit(method, X, y, names, params, seed):
    if method == "threshold":
        return _fit_threshold(X, y, names, params, seed)
    score_fn, threshold, extra = _fit_classifier(method, X, y, params, seed)
    return score_fn, threshold, {"direction": 1, **extra}


def shadow_cv(method: str, X: np.ndarray, y: np.ndarray, groups, names: list[str], params: dict, seed: int,
              folds: int = CV_FOLDS) -> dict:
    """Cross-validated quality of ``method`` on the shadow rows alone (see the module docstring).

    Returns ``shadow_cv_auc`` (mean over folds of the held-out fold's AUC), its sd over folds,
    ``shadow_cv_accuracy`` (mean held-out accuracy at each fold's own decision rule) and the fold
    count; ``None`` values with a ``shadow_cv_reason`` where too few records of a class exist.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.asarray(groups)
    n_groups = min(len(np.unique(groups[y == c])) for c in (0, 1))
    k = min(int(folds), n_groups)
    if k < 2:
        return {"shadow_cv_auc": None, "shadow_cv_auc_sd": None, "shadow_cv_accuracy": None, "shadow_cv_folds": 0,
                "shadow_cv_reason": f"fewer than 2 records of a class ({n_groups}) for {folds}-fold CV"}
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=derive_seed(seed, "attack-cv", method))
    aucs, accs = [], []
    for train, test in splitter.split(X, y, groups):
        if len(np.unique(y[train])) < 2 or len(np.unique(y[test])) < 2:
            continue  # a fold with one class only says nothing about ranking
        fn, thr, _ = _fit(method, X[train], y[train], names, params, seed)
        s = np.asarray(fn(X[test]), dtype=float)
        aucs.append(_shadow_auc(y[test], s))
        accs.append(float(np.mean((s >= thr) == (y[test] == 1))))
    if not aucs:
        return {"shadow_cv_auc": None, "shadow_cv_auc_sd": None, "shadow_cv_accuracy": None, "shadow_cv_folds": 0,
                "shadow_cv_reason": "no fold held both classes"}
    return {"shadow_cv_auc": float(np.mean(aucs)),
            "shadow_cv_auc_sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else None,
            "shadow_cv_accuracy": float(np.mean(accs)), "shadow_cv_folds": len(aucs)}


def run_attack(attack: dict, shadow_in: pd.DataFrame, shadow_out: pd.DataFrame, target_in: pd.DataFrame,
               target_out: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict]:
    """Fit ``attack`` on shadow_in (label 1) vs shadow_out (label 0); score target_in + target_out.

    Returns ``(scores, info)``: scores has ``record_id``, ``label`` (1 member), ``score`` (float,
    higher = member) and ``prediction`` (int, ``score >= info["threshold"]``), target_in rows
    first; info (JSON-serialisable) records the method, features, threshold, direction, the
    resolved params, the cross-validated shadow AUC/accuracy (``shadow_cv_*``) and the in-sample
    ones of the final fit (``shadow_fit_*``).
    """
    if not isinstance(attack, dict):
        raise M4IError(f"attack must be a mapping, got {type(attack).__name__}")
    method = attack.get("method")
    if method not in METHODS:
        raise M4IError(f"attack method {method!r} is unknown (known: {list(METHODS)})")
    params = _params(attack, method)
    tables = dict(zip(TABLES, (shadow_in, shadow_out, target_in, target_out)))
    for name, t in tables.items():
        _check_table(t, name, allow_empty=name.startswith("target"))
    if len(target_in) + len(target_out) == 0:
        raise M4IError("target_in and target_out are both empty: nothing to score")
    for role in ("shadow", "target"):
        both = set(_row_keys(tables[f"{role}_in"])) & set(_row_keys(tables[f"{role}_out"]))
        if both:
            raise M4IError(f"record {sorted(both)[0]!r} is both in {role}_in and {role}_out")

    cols = feature_columns(shadow_in, attack.get("features", "all"))
    mats = {}
    mats["shadow_in"], names = _matrix(shadow_in, cols, "shadow_in")
    for name, t in tables.items():
        if len(t) == 0:  # an empty target table: nothing to read, only the columns must exist
            missing = [c for c in cols if c not in t]
            if missing:
                raise M4IError(f"{name}: signal table has no column {missing[0]!r}")
            mats[name] = np.empty((0, len(names)))
            continue
        mats[name], _ = _matrix(t, cols, name)
        if mats[name].shape[1] != len(names):
            raise M4IError(f"{name}: {mats[name].shape[1]} feature values per record, shadow_in has "
                           f"{mats['shadow_in'].shape[1]} (list column lengths differ)")
    X_sh = np.vstack([mats["shadow_in"], mats["shadow_out"]])
    y_sh = np.r_[np.ones(len(shadow_in), int), np.zeros(len(shadow_out), int)]

    score_fn, threshold, extra = _fit(method, X_sh, y_sh, names, params, seed)
    # CV folds group the rows of one record (the same image under several shadows).
    groups = pd.concat([shadow_in["record_id"], shadow_out["record_id"]], ignore_index=True).astype(str)
    cv = shadow_cv(method, X_sh, y_sh, groups.to_numpy(), names, params, seed)

    s_sh = np.asarray(score_fn(X_sh), dtype=float)
    X_t = np.vstack([mats["target_in"], mats["target_out"]])
    s_t = np.asarray(score_fn(X_t), dtype=float) if len(X_t) else np.empty(0)
    scores = pd.DataFrame({
        "record_id": pd.concat([target_in["record_id"], target_out["record_id"]], ignore_index=True).astype(str),
        "label": np.r_[np.ones(len(target_in), int), np.zeros(len(target_out), int)].astype("int64"),
        "score": s_t.astype("float64"),
        "prediction": (s_t >= threshold).astype("int64"),
    })
    info = {
        "method": method,
        "features": cols,
        "n_features": len(names),
        "threshold": float(threshold),
        **extra,
        "params": params,
        **cv,
        "shadow_fit_auc": _shadow_auc(y_sh, s_sh),
        "shadow_fit_accuracy": float(np.mean((s_sh >= threshold) == (y_sh == 1))),
        "n_shadow_in": int(len(shadow_in)),
        "n_shadow_out": int(len(shadow_out)),
        "seed": int(seed),
    }
    if not math.isfinite(info["threshold"]):
        raise M4IError(f"attack {method}: fitted a non-finite threshold")
    return scores, info
