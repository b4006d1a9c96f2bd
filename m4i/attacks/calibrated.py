"""Per-example calibrated membership attacks: LiRA (online, offline) and RMIA.

Instead of one global decision rule fitted on a shadow model, these attacks compare the target's
signal on a candidate with the same signal of K *reference* models on that same candidate, so
an example that is easy for every model (high similarity whether trained on or not) is not
mistaken for a member. The attacker owns the reference models and therefore knows which of them
trained on which candidate (``membership``, shape ``(k, n)``, from ``membership_matrix``).
Membership of a candidate in the TARGET is never an input of any function here.

Array conventions (numpy):
- ``target``: the target model's signal per candidate, ``(n,)`` or ``(n, q)`` (q queries, e.g.
  the five reference captions or N sampled captions, like LiRA's augmentations);
- ``reference``: the reference models' signals, ``(k, n)`` or ``(k, n, q)``;
- ``membership``: ``(k, n)`` bool, ``membership[j, i]`` = reference model j trained on candidate i.
Every score returned is ``(n,)`` float64, higher = more likely member.

LiRA (Carlini et al., S&P 2022; reference code tensorflow/privacy research/mi_lira_2021/plot.py,
``generate_ours`` / ``generate_ours_offline``), with these deliberate choices:
- Gaussians are fitted per example *and per query*; the per-query log-scores are averaged over
  queries, as the reference code does.
- ``center``: ``"mean"`` (default; the paper's Algorithm 1 and the Gaussian MLE) or ``"median"``
  (what the reference code uses, robust to one diverged reference model). The spread is the
  standard deviation about the mean in both cases (as in the reference code).
- ``ddof`` (default 1): unbiased variances. The reference code's ``np.std`` is ``ddof=0``; with
  two to eight models per side (our K) ``ddof=0`` shrinks the spread by up to 30 %.
- ``variance="global"``: ONE pooled *within-example* variance per side (IN, OUT): the squared
  residuals of every reference signal about its own example's (and query's) mean, summed over
  all examples and queries, divided by the pooled degrees of freedom. The reference code's
  ``fix_variance`` takes ``np.std`` of the whole array instead, which also counts the spread of
  the examples' means (the very difficulty that per-example calibration removes), and it uses
  the IN array for the OUT spread too (``std_out = np.std(dat_in)``, a typo). The paper advises
  a global variance for fewer than 64 reference models; with K = 4 a per-example variance rests
  on two values per side and is useless. With global variances the log-normalisers are constants,
  so the ranking does not depend on ``ddof``.
- ``min_std`` floors every standard deviation (the reference code adds 1e-30): identical signals
  of all reference models (e.g. the same greedy caption) would otherwise give a zero spread and
  infinite scores.
- Offline, ``test="one_sided"`` (default) scores log Phi((x - mu_out) / sigma_out): the paper's
  offline test (Algorithm 1: Lambda = 1 - Pr[Z > phi(x)], Z ~ N(mu_out, sigma_out^2)); a signal
  far BELOW the OUT distribution is evidence of nothing but a bad query, not of membership. The
  reference code's offline score (``-logpdf`` under the OUT Gaussian) is two-sided, flagging
  both tails; ``test="two_sided"`` reproduces it.
- The reference code truncates every example's IN (OUT) signals to the smallest IN (OUT) count
  over examples; here every reference signal of the right side is used (with the balanced
  ``membership_matrix`` the counts are equal anyway).

RMIA (Zarifzadeh et al., ICML 2024; reference code privacytrustlab/ml_privacy_meter,
``modules/mia/attacks/rmia.py``): score(x) = Pr_z[ (p(x|theta)/p(x)) / (p(z|theta)/p(z)) > gamma ]
over population records z that no model trained on. Online, p(.) is the mean over all K
reference models (half of them IN for x). Offline (OUT models only), p(.) = 1/2 ((1 + a)
p_OUT(.) + (1 - a)), the paper's linear approximation of the unseen IN half, applied to x and z
alike (as the authors' code does; z is OUT for every model, so both sides of the ratio are
estimated the same way). Differences to the authors' code: p_OUT(x) is the mean over ALL of x's
OUT models (their code keeps the largest ``num_reference_models`` values of a descending sort,
which equals that only when every example has exactly that many OUT models); the comparison is
done on sorted log-ratios (``searchsorted``) instead of an n x m matrix, so it scales to large
population sets. Queries: the RMIA score is computed per query and averaged.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from m4i.io import M4IError
from m4i.records import positions, unique_ids

CENTERS = ("mean", "median")
VARIANCES = ("per_example", "global")
TESTS = ("one_sided", "two_sided")


# --- the attacker's own reference models --------------------------------------------------------
# --- input checks ---------------------------------------------------------------------------------
def _finite(a: np.ndarray, what: str) -> None:
    bad = np.argwhere(~np.isfinite(a))
    if len(bad):
        raise M4IError(f"{what}: non-finite value {a[tuple(bad[0])]} at index {tuple(int(i) for i in bad[0])}")


def _as_target(target, what: str = "target") -> np.ndarray:
    try:
        t = np.asarray(target, dtype=float)
    except (TypeError, ValueError) as exc:
        raise M4IError(f"{what}: signals are not numeric ({exc})") from exc
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise M4IError(f"{what}: expected shape (n,) or (n, q) with n, q >= 1, got {np.shape(target)}")
    _finite(t, what)
    return t


def _as_reference(reference, n: int, q: int, what: str = "reference") -> np.ndarray:
    try:
        r = np.asarray(reference, dtype=float)
    except (TypeError, ValueError) as exc:
        raise M4IError(f"{what}: signals are not numeric ({exc})") from exc
    if r.ndim == 2:
        r = r[:, :, None]
    if r.ndim != 3 or r.shape[0] == 0:
        raise M4IError(f"{what}: expected shape (k, n) or (k, n, q) with k >= 1, got {np.shape(reference)}")
    if r.shape[1:] != (n, q):
        raise M4IError(f"{what}: shape {np.shape(reference)} does not match the target's {n} candidates x "
                       f"{q} queries (expected (k, {n}, {q}){' or (k, %d)' % n if q == 1 else ''})")
    _finite(r, what)
    return r


def _as_membership(membership, k: int, n: int) -> np.ndarray:
    m = np.asarray(membership)
    if m.shape != (k, n):
        raise M4IError(f"membership: expected shape (k, n) = ({k}, {n}) (reference models x candidates), got {m.shape}")
    if m.dtype != bool:
        if m.dtype.kind not in "iu" or not np.isin(m, [0, 1]).all():
            raise M4IError("membership: must be boolean (or 0/1): True = that reference model trained on that candidate")
        m = m.astype(bool)
    return m


def _choice(value, allowed, name: str) -> None:
    if value not in allowed:
        raise M4IError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _check_min_std(min_std) -> float:
    if not isinstance(min_std, (int, float)) or isinstance(min_std, bool) or not min_std > 0:
        raise M4IError(f"min_std must be a positive number, got {min_std!r}")
    return float(min_std)


# --- Gaussian fits ---------------------------------------------------------------------------------
def _fit(reference: np.ndarray, mask: np.ndarray, center: str, variance: str, ddof: int, min_std: float,
         side: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma), each (n, q) (sigma (1, 1) when global), of the reference signals where ``mask``.

    ``reference`` (k, n, q); ``mask`` (k, n): which models' signals of each example to use.
    """
    counts = mask.sum(axis=0)  # (n,)
    need = ddof + 1 if variance == "per_example" else 1
    short = np.flatnonzero(counts < need)
    if len(short):
        hint = " (or use variance='global')" if variance == "per_example" else ""
        raise M4IError(f"{side} Gaussians: candidate {int(short[0])} has {int(counts[short[0]])} {side} reference "
                       f"model(s); at least {need} needed{hint}")
    w = mask[:, :, None].astype(float)
    x = np.where(mask[:, :, None], reference, np.nan)
    mean = np.nansum(x, axis=0) / counts[:, None]  # (n, q)
    mu = mean if center == "mean" else np.nanmedian(x, axis=0)
    sq = (w * (reference - mean) ** 2).sum(axis=0)  # (n, q): squared residuals about the mean
    if variance == "per_example":
        sigma = np.sqrt(sq / (counts[:, None] - ddof))
    else:
        dof = float(((counts - ddof).clip(min=0)).sum()) * reference.shape[2]
        if dof <= 0:
            raise M4IError(f"{side} Gaussians: no degrees of freedom left for a global variance "
                           f"(every candidate has at most ddof={ddof} {side} model)")
        sigma = np.full((1, 1), np.sqrt(sq.sum() / dof))
    return mu, np.maximum(sigma, min_std)


def _lira_args(target, reference, center, variance, ddof, min_std):
    _choice(center, CENTERS, "center")
    _choice(variance, VARIANCES, "variance")
    if not isinstance(ddof, (int, np.integer)) or isinstance(ddof, bool) or ddof < 0:
        raise M4IError(f"ddof must be a non-negative integer, got {ddof!r}")
    t = _as_target(target)
    r = _as_reference(reference, *t.shape)
    return t, r, _check_min_std(min_std)


def lira_online(target, reference, membership, *, center: str = "mean", variance: str = "global",
                ddof: int = 1, min_std: float = 1e-4) -> np.ndarray:
    """LiRA online: mean over queries of log N(x; mu_in, sigma_in) - log N(x; mu_out, sigma_out).

    mu/sigma per candidate and query from the reference models that did (IN) and did not (OUT)
    train on the candidate. ``variance="global"`` (default, for small K) pools one spread per side.
    """
    t, r, min_std = _lira_args(target, reference, center, variance, ddof, min_std)
    m = _as_membership(membership, r.shape[0], t.shape[0])
    mu_in, sd_in = _fit(r, m, center, variance, ddof, min_std, "IN")
    mu_out, sd_out = _fit(r, ~m, center, variance, ddof, min_std, "OUT")
    llr = stats.norm.logpdf(t, mu_in, sd_in) - stats.norm.logpdf(t, mu_out, sd_out)
    return llr.mean(axis=1)


def lira_offline(target, reference, membership=None, *, test: str = "one_sided", center: str = "mean",
                 variance: str = "global", ddof: int = 1, min_std: float = 1e-4) -> np.ndarray:
    """LiRA offline: how far above the OUT Gaussian the target's signal lies.

    ``reference`` holds OUT reference models (trained without any candidate); with
    ``membership`` given (online references reused), only their OUT entries are used.
    One-sided (default): mean over queries of log Phi((x - mu_out) / sigma_out).
    Two-sided (the reference code's): mean over queries of -log N(x; mu_out, sigma_out).
    """
    _choice(test, TESTS, "test")
    t, r, min_std = _lira_args(target, reference, center, variance, ddof, min_std)
    out = np.ones(r.shape[:2], bool) if membership is None else ~_as_membership(membership, r.shape[0], t.shape[0])
    mu, sd = _fit(r, out, center, variance, ddof, min_std, "OUT")
    if test == "one_sided":
        s = stats.norm.logcdf((t - mu) / sd)
    else:
        s = -stats.norm.logpdf(t, mu, sd)
    return s.mean(axis=1)


# --- RMIA ------------------------------------------------------------------------------------------
def _as_probs(a, what: str, upper: bool) -> None:
    if (a < 0).any():
        raise M4IError(f"{what}: probabilities must be >= 0, found {a[a < 0][0]}")
    if upper and (a > 1).any():
        raise M4IError(f"{what}: offline RMIA's linear approximation needs probabilities in [0, 1], found {a[a > 1][0]}")


def rmia(target_x, reference_x, target_z, reference_z, *, membership=None, offline: bool = False,
         a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA score per candidate: the fraction of population records z it dominates.

    ``target_x`` (n,)|(n, q): the target's probability of each candidate; ``reference_x``
    (k, n)|(k, n, q): the reference models'; ``target_z`` (m,)|(m, q) and ``reference_z``
    (k, m)|(k, m, q) the same for m population records that no model (target or reference) trained
    on. Online (``offline=False``): ``membership`` (k, n) is required (each candidate should be IN
    for some models), p(x) = mean over all k models. Offline: ``membership`` None (all OUT) or
    given (then only the OUT entries of x count), p = ((1 + a) p_OUT + (1 - a)) / 2.
    score(x) = mean over queries of |{z : LR(x) / LR(z) > gamma}| / m with LR(.) = p(.|target) / p(.).
    """
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not gamma > 0:
        raise M4IError(f"rmia: gamma must be a positive number, got {gamma!r}")
    if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0.0 <= a <= 1.0:
        raise M4IError(f"rmia: offline parameter a must be in [0, 1], got {a!r}")
    tx = _as_target(target_x, "target_x")
    n, q = tx.shape
    rx = _as_reference(reference_x, n, q, "reference_x")
    k = rx.shape[0]
    tz = _as_target(target_z, "target_z")
    if tz.shape[1] != q:
        raise M4IError(f"target_z: {tz.shape[1]} queries per record, target_x has {q}")
    rz = _as_reference(reference_z, tz.shape[0], q, "reference_z")
    if rz.shape[0] != k:
        raise M4IError(f"reference_z: {rz.shape[0]} reference models, reference_x has {k}")
    for arr, what in ((tx, "target_x"), (rx, "reference_x"), (tz, "target_z"), (rz, "reference_z")):
        _as_probs(arr, what, upper=offline)

    if offline:
        out = np.ones((k, n), bool) if membership is None else ~_as_membership(membership, k, n)
        n_out = out.sum(axis=0)
        if (n_out == 0).any():
            raise M4IError(f"rmia offline: candidate {int(np.argmin(n_out))} has no OUT reference model")
        p_out_x = (rx * out[:, :, None]).sum(axis=0) / n_out[:, None]
        p_x = 0.5 * ((1 + a) * p_out_x + (1 - a))
        p_z = 0.5 * ((1 + a) * rz.mean(axis=0) + (1 - a))
    else:
        if membership is None:
            raise M4IError("rmia online: the reference models' membership matrix is required "
                           "(online reference models train on half of the candidates); use offline=True otherwise")
        m = _as_membership(membership, k, n)
        if not m.any(axis=0).all():
            raise M4IError(f"rmia online: candidate {int(np.argmin(m.any(axis=0)))} is IN for no reference model "
                           "(that is the offline setting)")
        p_x, p_z = rx.mean(axis=0), rz.mean(axis=0)
    for p, what in ((p_x, "p(x)"), (p_z, "p(z)")):
        if (p <= 0).any():
            i = np.argwhere(p <= 0)[0]
            raise M4IError(f"rmia: {what} is 0 for record {int(i[0])} (every reference model gave it probability 0); "
                           "transform the signal to positive values")
    with np.errstate(divide="ignore"):
        log_lr_x = np.log(tx) - np.log(p_x)  # -inf where the target's probability is 0: dominates nobody
        log_lr_z = np.log(tz) - np.log(p_z)
    scores = np.empty((n, q))
    for j in range(q):  # LR(x)/LR(z) > gamma  <=>  log LR(z) < log LR(x) - log gamma
        zs = np.sort(log_lr_z[:, j])
        scores[:, j] = np.searchsorted(zs, log_lr_x[:, j] - np.log(gamma), side="left") / len(zs)
    return scores.mean(axis=1)


# --- signal scales ---------------------------------------------------------------------------------
SCALES = ("identity", "logit", "log", "loglik_logit")


def gaussian_scale(values, kind: str, *, eps: float = 1e-3, upper: float = 1.0) -> np.ndarray:
    """Map a signal to a scale on which per-example Gaussians fit (LiRA's reason for its logit).

    - ``logit``: bounded similarity scores in [0, ``upper``] (BLEU, METEOR, ROUGE: upper 1).
      x / upper is clipped to [eps, 1 - eps] and mapped to log(p / (1 - p)). Near the bounds the
      raw scores are squeezed (a memorised caption scores 1.0 for every member-like model) and
      their spread shrinks; the logit undoes that squeeze. Clipping keeps the exact 0s (no
      matching 4-gram) and 1s (caption equals a reference) finite; eps = 1e-3 puts them at
      -/+6.9, near the data rather than far outliers that would dominate a fitted variance.
    - ``log``: non-negative unbounded scores (CIDEr): log(x + eps); CIDEr's spread grows with
      its level (it is a sum of tf-idf cosines scaled by 10), which a log evens out.
    - ``loglik_logit``: a mean token log-likelihood l <= 0 (gray-box signal): the logit of its
      probability p = exp(l), l - log(1 - exp(l)): LiRA's own transform of a model confidence,
      with p clipped to at most 1 - eps.
    - ``identity``: unchanged.
    """
    _choice(kind, SCALES, "gaussian_scale kind")
    x = np.asarray(values, dtype=float)
    if not np.isfinite(x).all():
        raise M4IError(f"gaussian_scale: non-finite input ({x[~np.isfinite(x)][0]})")
    if not (isinstance(eps, (int, float)) and 0 < eps < 0.5):
        raise M4IError(f"gaussian_scale: eps must be in (0, 0.5), got {eps!r}")
    if kind == "identity":
        return x.copy()
    if kind == "logit":
        if not upper > 0:
            raise M4IError(f"gaussian_scale: upper must be > 0, got {upper!r}")
        if (x < 0).any() or (x > upper * (1 + 1e-9)).any():
            bad = x[(x < 0) | (x > upper * (1 + 1e-9))][0]
            raise M4IError(f"gaussian_scale logit: value {bad} outside [0, {upper}]")
        p = np.clip(x / upper, eps, 1 - eps)
        return np.log(p) - np.log1p(-p)
    if kind == "log":
        if (x < 0).any():
            raise M4IError(f"gaussian_scale log: negative value {x[x < 0][0]}")
        return np.log(x + eps)
    if (x > 1e-9).any():
        raise M4IError(f"gaussian_scale loglik_logit: a log-likelihood must be <= 0, got {x[x > 1e-9][0]}")
    lp = np.minimum(x, np.log1p(-eps))
    return lp - np.log(-np.expm1(lp))


def metric_scale(column: str) -> str:
    """The ``gaussian_scale`` kind for a signal column of the project's tables.

    ``cider*`` -> log; bleu/meteor/rouge -> logit; gray-box ``*loglik*`` -> loglik_logit.
    Unknown columns raise (no silent identity for a signal whose range is unknown).
    """
    name = column.lower()
    if name.startswith("cider"):
        return "log"
    if name.startswith(("bleu", "meteor", "rouge")):
        return "logit"
    if "loglik" in name:
        return "loglik_logit"
    raise M4IError(f"metric_scale: no known scale for signal column {column!r}")


# --- aligning per-model tables ---------------------------------------------------------------------
def signal_array(tables, record_ids, column: str) -> np.ndarray:
    """Stack one signal column of several per-model tables into (k, n, q), candidates in
    ``record_ids`` order (the order of the target's and the membership matrix's columns).

    A scalar column gives q = 1; a list column (e.g. ``ref_loglik``, one value per reference
    caption) gives q = its length, which must be the same for every record. A record missing from
    a table, duplicated, or with a non-finite value raises.
    """
    record_ids = unique_ids(record_ids, "signal_array: candidates")
    if isinstance(tables, pd.DataFrame):
        raise M4IError("signal_array: pass a list of tables (one per model)")
    out = []
    for j, t in enumerate(tables):
        if "record_id" not in t or column not in t:
            raise M4IError(f"signal_array: table {j} lacks 'record_id' or {column!r} (has {list(t.columns)})")
        ids = unique_ids(t["record_id"], f"signal_array: table {j}")
        pos = positions(ids, record_ids, "signal_array", f"table {j} (no row for it)")
        vals = t[column].to_numpy()[pos]
        try:
            rows = [np.atleast_1d(np.asarray(v, dtype=float)) for v in vals]
        except (TypeError, ValueError) as exc:
            raise M4IError(f"signal_array: table {j} column {column!r} is not numeric ({exc})") from exc
        lens = {len(r) for r in rows}
        if len(lens) != 1:
            raise M4IError(f"signal_array: table {j} column {column!r} has rows of different lengths {sorted(lens)} "
                           "(every record needs the same number of queries)")
        arr = np.stack(rows)
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if len(bad):
            raise M4IError(f"signal_array: table {j} record {record_ids[bad[0]]!r} has a non-finite {column!r}")
        out.append(arr)
    if not out:
        raise M4IError("signal_array: no tables")
    if len({a.shape for a in out}) != 1:
        raise M4IError(f"signal_array: tables disagree on the number of queries: {sorted({a.shape[1] for a in out})}")
    return np.stack(out)


# --- one calibrated attack on the workflow's signal tables ------------------------------------------
DEFAULT_PARAMS = {
    "lira_online": {"center": "mean", "variance": "global", "ddof": 1, "min_std": 1e-4, "eps": 1e-3},
    "lira_offline": {"test": "one_sided", "center": "mean", "variance": "global", "ddof": 1, "min_std": 1e-4,
                     "eps": 1e-3},
    "rmia_online": {"gamma": 1.0},
    "rmia_offline": {"gamma": 1.0, "a": 0.3},
}
# The decision rule each score comes with (fixed, never fitted on target labels): LiRA online flags
# a likelihood ratio above 1; LiRA offline (one-sided) a signal above the OUT median (two-sided:
# less likely than one OUT standard deviation from the OUT mean); RMIA a candidate that dominates
# more than half of the population.
THRESHOLDS = {"lira_online": 0.0, "rmia_online": 0.5, "rmia_offline": 0.5}


def _threshold(method: str, params: dict) -> float:
    if method == "lira_offline":
        if params["test"] == "one_sided":
            return float(np.log(0.5))
        return float(-stats.norm.logpdf(1.0))
    return THRESHOLDS[method]


def probabilities(values: np.ndarray, column: str) -> np.ndarray:
    """RMIA's p(x|theta) from a signal column: the likelihood itself for a gray-box mean token
    log-likelihood (exp, the geometric-mean token probability), a [0, 1] similarity as it is."""
    scale = metric_scale(column)
    if scale == "loglik_logit":
        return np.exp(values)
    if scale == "logit":
        return values
    raise M4IError(f"RMIA needs a probability-like signal (a log-likelihood or a [0, 1] similarity), "
                   f"not {column!r}")


def run_calibrated(attack: dict, target: dict, references: list[dict], reference_members: list, *,
                   candidates: tuple[list, list], population: list) -> tuple[pd.DataFrame, dict]:
    """Score the candidates of a calibrated attack (``attack["method"]`` in DEFAULT_PARAMS).

    ``target`` and every entry of ``references``: ``{"candidates": signal table over the
    candidates, "population": signal table over the population records}``; ``reference_members``:
    per reference model, the records it trained on (the attacker's own knowledge);
    ``candidates``: (record ids of target_in, of target_out) — used only to order the rows and to
    label them for the evaluation, never by the score; ``population``: record ids no captioner
    trained on (RMIA's z). ``attack["features"]``: exactly one signal column (a list column's
    entries are queries, e.g. the five reference captions).
    Returns ``(scores, info)`` like ``m4i.attacks.run_attack``.
    """
    method = attack.get("method")
    if method not in DEFAULT_PARAMS:
        raise M4IError(f"calibrated attack method {method!r} unknown (known: {list(DEFAULT_PARAMS)})")
    features = attack.get("features")
    if not isinstance(features, (list, tuple)) or len(features) != 1:
        raise M4IError(f"attack {method}: features must name exactly one signal column, got {features!r}")
    column = str(features[0])
    given = attack.get("params") or {}
    unknown = sorted(set(given) - set(DEFAULT_PARAMS[method]))
    if unknown:
        raise M4IError(f"attack method {method!r}: unknown params {unknown} (known: {sorted(DEFAULT_PARAMS[method])})")
    params = {**DEFAULT_PARAMS[method], **given}
    if len(references) != len(reference_members) or not references:
        raise M4IError(f"attack {method}: {len(references)} reference tables but {len(reference_members)} memberships")
    ins, outs = [str(r) for r in candidates[0]], [str(r) for r in candidates[1]]
    ids = ins + outs
    k = len(references)
    membership = np.array([[r in set(map(str, m)) for r in ids] for m in reference_members], bool)
    tx = signal_array([target["candidates"]], ids, column)[0]
    rx = signal_array([r["candidates"] for r in references], ids, column)
    if method.startswith("lira"):
        kind = metric_scale(column)
        tx, rx = gaussian_scale(tx, kind, eps=params["eps"]), gaussian_scale(rx, kind, eps=params["eps"])
        common = {k_: params[k_] for k_ in ("center", "variance", "ddof", "min_std")}
        if method == "lira_online":
            scores = lira_online(tx, rx, membership, **common)
        else:
            scores = lira_offline(tx, rx, membership, test=params["test"], **common)
    else:
        pop = [str(r) for r in population]
        tz = signal_array([target["population"]], pop, column)[0]
        rz = signal_array([r["population"] for r in references], pop, column)
        tx, rx, tz, rz = (probabilities(a, column) for a in (tx, rx, tz, rz))
        offline = method == "rmia_offline"
        scores = rmia(tx, rx, tz, rz, membership=membership, offline=offline, a=params.get("a", 0.3),
                      gamma=params["gamma"])
    threshold = _threshold(method, params)
    table = pd.DataFrame({
        "record_id": ids,
        "label": np.r_[np.ones(len(ins), int), np.zeros(len(outs), int)].astype("int64"),
        "score": np.asarray(scores, dtype="float64"),
        "prediction": (np.asarray(scores) >= threshold).astype("int64"),
    })
    n_in = membership.sum(axis=0)
    info = {"method": method, "features": [column], "n_features": 1, "threshold": float(threshold),
            "direction": 1, "params": params, "n_references": k,
            "references_in_per_candidate": {"min": int(n_in.min()), "max": int(n_in.max())},
            "n_population": len(population) if method.startswith("rmia") else 0,
            "decision_rule": {"lira_online": "likelihood ratio > 1", "rmia_online": "dominates > half the population",
                              "rmia_offline": "dominates > half the population"}.get(
                method, "above the OUT median" if params.get("test") == "one_sided" else "beyond 1 OUT sd")}
    return table, info
