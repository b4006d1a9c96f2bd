"""Result tables (CSV + Markdown) from attack metrics.json and utility JSON files.

Every row carries a stable ``row_id`` and a ``sources`` column (semicolon-separated paths
relative to the results root) so that ``m4i provenance <table> <row_id>`` can trace it.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from m4i.identity import ModelId
from m4i.io import M4IError, atomic_path, read_json
from m4i.names import TABLE_NAMES

# Paper headline numbers (Hu et al., NeurIPS 2022): unrestricted average attack success rate.
PAPER_ASR_PCT = {"mb": 72.5, "fb": 94.83}
PAPER_REF = "Hu et al., NeurIPS 2022 (arXiv 2209.06997), unrestricted average ASR"
CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider")


# --------------------------------------------------------------------------- loading
def attack_identity(doc: dict, source: str) -> dict:
    """The attack's identity fields recorded in a metrics.json (m4i.identity.AttackId.fields)."""
    ident = _get(doc, "identity.attack", source)
    for key in ("family", "signal", "method", "access", "uses_references"):
        if key not in ident:
            raise M4IError(f"{source}: identity.attack lacks {key!r}")
    return ident


def scenario_identity(doc: dict, source: str) -> dict:
    """The scenario's identity fields recorded in a metrics.json (m4i.identity.ScenarioId.fields)."""
    return _get(doc, "identity.scenario", source)


def fpr_column(key: str) -> str:
    """'0.01' -> 'tpr@1%fpr', '0.001' -> 'tpr@0.1%fpr'."""
    return f"tpr@{float(key) * 100:g}%fpr"


def _source(path: str | os.PathLike, results_root: str | os.PathLike) -> str:
    try:
        return Path(path).resolve().relative_to(Path(results_root).resolve()).as_posix()
    except ValueError:
        raise M4IError(f"{path} is not under the results root {results_root}") from None


def _get(doc: dict, path: str, src: str):
    cur = doc
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise M4IError(f"{src}: missing key {path!r}")
        cur = cur[key]
    return cur


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def attack_row(doc: dict, source: str) -> dict:
    """One attacks-table row from a parsed metrics.json (``source``: path rel. to results root)."""
    attack, scenario = _get(doc, "attack", source), _get(doc, "scenario", source)
    seed = int(_get(doc, "seed", source))
    parts = Path(source).parts
    # The layout attacks/<scenario>/<attack>/s<k>/metrics.json must agree with the content.
    if len(parts) == 5 and parts[0] == "attacks" and parts[1:4] != (scenario, attack, f"s{seed}"):
        raise M4IError(f"{source}: file says scenario={scenario} attack={attack} seed={seed}, "
                       f"its path says {'/'.join(parts[1:4])}")
    m = _get(doc, "metrics", source)
    ident, scen = attack_identity(doc, source), scenario_identity(doc, source)
    ci = m.get("ci95", {})
    # A CI is null when it was not computed (n_bootstrap 0 or one class only).
    auc_ci = ci.get("auc") or [None, None]
    asr_ci = ci.get("attack_success_rate") or [None, None]
    row = {
        "row_id": f"attack:{scenario}:{attack}:s{seed}",
        "scenario": scenario,
        "attack": attack,
        "family": ident["family"],
        "uses_references": bool(ident["uses_references"]),
        "target_model": doc.get("target_model"),
        "shadow_model": doc.get("shadow_model"),
        "seed": seed,
        "signal": ident["signal"],
        "method": ident["method"],
        "access": ident["access"],
        "scenario_name": scen.get("scenario_name", scenario),
        "protocol": scen.get("protocol"),
        "defense": scen.get("defense"),
        "attacker": scen.get("attacker"),
        "calibrated": bool(ident.get("calibrated", False)),
        "n_shadows": len(doc.get("shadow_models") or [doc.get("shadow_model")]),
        "attack_success_rate": _num(_get(m, "attack_success_rate", source)),
        "precision": _num(m.get("precision")),
        "recall": _num(m.get("recall")),
        "auc": _num(_get(m, "auc", source)),
        "auc_ci_lo": _num(auc_ci[0]), "auc_ci_hi": _num(auc_ci[1]),
        "asr_ci_lo": _num(asr_ci[0]), "asr_ci_hi": _num(asr_ci[1]),
        # The attacker-side judgement of the fit (cross-validated on shadow rows; m4i.attacks):
        # the only number the report may pick a "best" attack by. NaN for attacks with no
        # shadow fit (calibrated attacks) and for metrics files that predate it.
        "shadow_cv_auc": _num((doc.get("info") or {}).get("shadow_cv_auc")),
        "shadow_cv_accuracy": _num((doc.get("info") or {}).get("shadow_cv_accuracy")),
    }
    for key, op in sorted(m.get("tpr_at_fpr", {}).items(), key=lambda kv: -float(kv[0])):
        # An operating point that the scores cannot reach is "undefined", never 0; beside the
        # rate, the counts it rests on and its bootstrap interval (each replicate its own threshold).
        col, defined = fpr_column(key), bool(op.get("defined"))
        tpr_ci = (ci.get("tpr_at_fpr") or {}).get(key) or [None, None]
        row[col] = _num(op.get("tpr")) if defined else float("nan")
        row[f"{col}_ci_lo"], row[f"{col}_ci_hi"] = _num(tpr_ci[0]), _num(tpr_ci[1])
        row[f"{col}_tp"] = _num(op.get("tp")) if defined else float("nan")
        row[f"{col}_fp"] = _num(op.get("fp")) if defined else float("nan")
    row.update(
        threshold=_num(doc.get("decision", {}).get("threshold")),
        n=int(_get(m, "n", source)),
        n_members=int(m.get("n_members", -1)),
        n_nonmembers=int(m.get("n_nonmembers", -1)),
        sources=source,
    )
    return row


def attacks_table(metrics_paths: list[str], results_root: str | os.PathLike) -> pd.DataFrame:
    """(a) One row per scenario x attack x seed (x target model), in a stable order."""
    rows = [attack_row(read_json(p), _source(p, results_root)) for p in metrics_paths]
    if not rows:
        raise M4IError("attacks_table: no metrics.json paths given")
    df = pd.DataFrame(rows)
    dup = df[df["row_id"].duplicated(keep=False)]
    if len(dup):
        raise M4IError(f"attacks_table: duplicate row ids {sorted(set(dup['row_id']))} "
                       f"from {list(dup['sources'])}")
    # Scenarios and attacks keep the order in which the caller (config order) lists them.
    scen_order = {s: i for i, s in enumerate(dict.fromkeys(df["scenario"]))}
    att_order = {a: i for i, a in enumerate(dict.fromkeys(df["attack"]))}
    df = df.assign(_s=df["scenario"].map(scen_order), _a=df["attack"].map(att_order))
    df = df.sort_values(["_s", "_a", "seed"], kind="stable").drop(columns=["_s", "_a"])
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- summary
_TPR_COLUMN = re.compile(r"^tpr@[0-9.]+%fpr$")


def _tpr_columns(df) -> list[str]:
    """The TPR-at-FPR rate columns (``tpr@1%fpr``) of a frame or a row's keys, not their
    ``_ci_lo``/``_tp``/... companions."""
    return [c for c in getattr(df, "columns", df) if _TPR_COLUMN.match(c)]


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds; NaN if any seed is undefined or fewer than 2."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or np.isnan(v).any():
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    from scipy.stats import t

    half = float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def _side(model_key) -> str | None:
    """``dataset/arch`` of a model key (the seed and role dropped): a scenario's side."""
    if not isinstance(model_key, str):
        return None
    try:
        m = ModelId.parse(model_key)
    except M4IError:
        return None
    return f"{m.dataset}/{m.arch}"


def _per_seed_ci(g: pd.DataFrame, lo: str, hi: str) -> str:
    """Each seed's own bootstrap interval, ``s0:[lo,hi];s1:[lo,hi]`` (``n/a`` where not computed)."""
    return ";".join(f"s{int(r['seed'])}:" + ("n/a" if pd.isna(r[lo]) or pd.isna(r[hi]) else f"[{r[lo]:.4g},{r[hi]:.4g}]")
                    for _, r in g.iterrows())


def _per_seed_counts(g: pd.DataFrame, col: str) -> str:
    """What each seed's TPR at an FPR rests on: ``s0:297/300 TP at 10/1000 FP`` (``undef.`` where
    the non-members are too few for that FPR)."""
    def one(r) -> str:
        if pd.isna(r.get(f"{col}_tp")):
            return f"s{int(r['seed'])}:undef."
        return (f"s{int(r['seed'])}:{int(r[f'{col}_tp'])}/{int(r['n_members'])} TP at "
                f"{int(r[f'{col}_fp'])}/{int(r['n_nonmembers'])} FP")
    return ";".join(one(r) for _, r in g.iterrows())


def summary_table(attacks: pd.DataFrame) -> pd.DataFrame:
    """(b) Per scenario x attack: mean and sd over seeds, a 95 % CI, and each seed's bootstrap CI.

    ``<m>_ci_lo/hi`` is the t-interval over seeds when there are several (it includes the
    variance of training: another seed is another split and another captioner), else the single
    seed's bootstrap interval (the target's records resampled, the captioner fixed);
    ``<m>_sd`` is the sd over seeds (NaN for one seed); ``auc_boot_ci_per_seed`` and
    ``asr_boot_ci_per_seed`` keep every seed's bootstrap interval beside them.
    """
    metrics = ["attack_success_rate", "auc", "precision", "recall", *_tpr_columns(attacks), "shadow_cv_auc"]
    boot = {"attack_success_rate": ("asr_ci_lo", "asr_ci_hi"), "auc": ("auc_ci_lo", "auc_ci_hi"),
            **{c: (f"{c}_ci_lo", f"{c}_ci_hi") for c in _tpr_columns(attacks)}}
    rows = []
    for (scenario, attack), g in attacks.groupby(["scenario", "attack"], sort=False):
        first = g.iloc[0]
        row = {
            "row_id": f"summary:{scenario}:{attack}", "scenario": scenario, "attack": attack,
            "family": first["family"], "access": first.get("access"),
            "uses_references": bool(first["uses_references"]),
            "calibrated": bool(first.get("calibrated", False)),
            "scenario_name": first.get("scenario_name", scenario), "protocol": first.get("protocol"),
            "defense": first.get("defense"), "attacker": first.get("attacker"),
            "target_side": _side(first.get("target_model")), "shadow_side": _side(first.get("shadow_model")),
            "n_seeds": len(g), "seeds": ";".join(str(s) for s in g["seed"]),
            "ci_method": "t over seeds" if len(g) > 1 else "bootstrap (single seed)",
        }
        for m in metrics:
            if m not in g:
                continue
            if len(g) > 1:
                row[f"{m}_mean"], row[f"{m}_ci_lo"], row[f"{m}_ci_hi"] = mean_ci(g[m])
                row[f"{m}_sd"] = float(np.std(g[m].to_numpy(dtype=float), ddof=1))
            else:
                lo_col, hi_col = boot.get(m, (None, None))
                row[f"{m}_mean"] = float(g[m].iloc[0])
                row[f"{m}_ci_lo"] = float(g[lo_col].iloc[0]) if lo_col else float("nan")
                row[f"{m}_ci_hi"] = float(g[hi_col].iloc[0]) if hi_col else float("nan")
                row[f"{m}_sd"] = float("nan")
        row["auc_boot_ci_per_seed"] = _per_seed_ci(g, "auc_ci_lo", "auc_ci_hi")
        row["asr_boot_ci_per_seed"] = _per_seed_ci(g, "asr_ci_lo", "asr_ci_hi")
        for c in _tpr_columns(attacks):
            row[f"{c}_boot_ci_per_seed"] = _per_seed_ci(g, f"{c}_ci_lo", f"{c}_ci_hi")
            row[f"{c}_counts_per_seed"] = _per_seed_counts(g, c)
        row["sources"] = ";".join(g["sources"])
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- selection
# Families whose attacks are fitted on shadows (one global rule) and so carry a cross-validated
# shadow AUC; the calibrated families (LiRA, RMIA) have no shadow fit and are never "best"-picked.
SELECTABLE_FAMILIES = ("mb", "fb")
SELECTION_RULE = ("best = highest shadow_cv_auc (k-fold cross-validated on the shadow captioners' "
                  "members/non-members; never a target number), first in config order on ties")


def best_by_shadow(summary: pd.DataFrame, family: str):
    """The summary row of ``family`` with the highest cross-validated shadow AUC, or None.

    Why: choosing the best attack by its target AUC reports the maximum of several noisy target
    numbers, an optimistic bias the attacker could not realise; the shadow side is all the
    attacker has. Rows without a shadow CV AUC (e.g. old files) are never chosen.
    """
    if family not in SELECTABLE_FAMILIES:
        raise M4IError(f"best_by_shadow: family {family!r} has no shadow fit (selectable: {list(SELECTABLE_FAMILIES)})")
    f = summary[summary["family"] == family]
    if "shadow_cv_auc_mean" not in f or not f["shadow_cv_auc_mean"].notna().any():
        return None
    return f.loc[f["shadow_cv_auc_mean"].idxmax()]


# --------------------------------------------------------------------------- caption quality
def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def caption_quality_table(utility_paths: list[str], results_root: str | os.PathLike) -> pd.DataFrame:
    """(c) Per captioner x metric: held-out vs members vs fixed-caption baseline, and the gap."""
    rows = []
    for path in utility_paths:
        src = _source(path, results_root)
        doc = read_json(path)
        model = ModelId.parse(Path(path).stem)
        model_id = str(model)
        held, mem = _get(doc, "heldout", src), _get(doc, "members", src)
        gap = doc.get("gap", {})
        base = doc.get("baseline_fixed_caption", {})
        metrics = [m for m in CAPTION_METRICS if m in held] + sorted(set(held) - set(CAPTION_METRICS))
        info = model.fields()
        for m in metrics:
            rows.append({
                "row_id": f"utility:{model_id}:{m}", **info, "metric": m,
                "heldout": _num(held.get(m)), "members": _num(mem.get(m)),
                # gap = members - heldout; recomputed if the file lacks it.
                "gap": _num(gap[m]) if m in gap else _num(mem.get(m)) - _num(held.get(m)),
                "fixed_caption_heldout": _num(base.get("heldout", {}).get(m)),
                "heldout_minus_fixed": _num(held.get(m)) - _num(base.get("heldout", {}).get(m)),
                "fixed_caption": base.get("caption"), "sources": src,
            })
        # Content accuracy: {"heldout", "members", "baseline_fixed_caption": {attr: value}}
        # (m4i.models.quality), {} for real data; a flat {attr: value} is kept apart.
        acc = doc.get("content_accuracy") or {}
        if isinstance(acc.get("heldout"), dict) or isinstance(acc.get("members"), dict):
            h, mm = _flat(acc.get("heldout", {})), _flat(acc.get("members", {}))
            fx = _flat(acc.get("baseline_fixed_caption", {}))
            for key in sorted(set(h) | set(mm)):
                rows.append({"row_id": f"utility:{model_id}:content_accuracy.{key}", **info,
                             "metric": f"content_accuracy.{key}", "heldout": _num(h.get(key)),
                             "members": _num(mm.get(key)),
                             "gap": _num(mm.get(key)) - _num(h.get(key)),
                             "fixed_caption_heldout": _num(fx.get(key)),
                             "heldout_minus_fixed": _num(h.get(key)) - _num(fx.get(key)),
                             "fixed_caption": base.get("caption"), "sources": src})
        else:
            for key, val in sorted(_flat(acc).items()):
                # Which split a flat value was measured on is not stated: keep it apart.
                rows.append({"row_id": f"utility:{model_id}:content_accuracy.{key}", **info,
                             "metric": f"content_accuracy.{key}", "value": _num(val),
                             "sources": src})
    cols = ["row_id", "model_id", "dataset", "arch", "role", "index", "seed", "defense", "protocol", "metric", "heldout",
            "members", "gap", "fixed_caption_heldout", "heldout_minus_fixed", "value",
            "fixed_caption", "sources"]
    df = pd.DataFrame(rows)
    df = df.reindex(columns=[c for c in cols if c in df.columns or c != "value"])
    return df


# --------------------------------------------------------------------------- blind vs attacks
def blind_vs_attacks_table(summary: pd.DataFrame) -> pd.DataFrame:
    """(d) Per scenario: the blind baseline beside the mean MB / FB attack and the one the
    attacker would pick (``best_by_shadow``), and every calibrated attack's AUC."""
    rows = []
    for scenario, g in summary.groupby("scenario", sort=False):
        row = {"row_id": f"blind:{scenario}", "scenario": scenario,
               "confounded": "confounded" in scenario}
        blind = g[g["family"] == "blind"]
        for col, src in (("blind_asr", "attack_success_rate_mean"), ("blind_auc", "auc_mean"),
                         ("blind_auc_ci_lo", "auc_ci_lo"), ("blind_auc_ci_hi", "auc_ci_hi")):
            row[col] = float(blind[src].iloc[0]) if len(blind) else float("nan")
        for fam in ("mb", "fb"):
            f = g[g["family"] == fam]
            row[f"{fam}_n_attacks"] = len(f)
            row[f"{fam}_mean_asr"] = float(f["attack_success_rate_mean"].mean()) if len(f) else float("nan")
            row[f"{fam}_mean_auc"] = float(f["auc_mean"].mean()) if len(f) else float("nan")
            best = best_by_shadow(g, fam)
            row[f"{fam}_best_attack"] = None if best is None else best["attack"]
            row[f"{fam}_best_shadow_cv_auc"] = float("nan") if best is None else float(best["shadow_cv_auc_mean"])
            row[f"{fam}_best_auc"] = float("nan") if best is None else float(best["auc_mean"])
        cal = g[g["calibrated"]] if "calibrated" in g else g.iloc[:0]
        # Calibrated attacks have no shadow fit to select by: all are listed, none is "best".
        row["calibrated_attacks"] = ";".join(f"{r['attack']}={r['auc_mean']:.3f}" for _, r in cal.iterrows())
        notes = []
        if row["confounded"]:
            notes.append("members and non-members come from different datasets: "
                         "a blind attack can win without the model")
        if row["blind_auc_ci_lo"] > 0.5:
            notes.append("blind baseline above chance: the split itself leaks membership")
        row["note"] = "; ".join(notes)
        row["sources"] = ";".join(g["sources"])
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- paper vs run
def _setting_str(v) -> str:
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


CONFOUNDED_NOTE = (
    "confounded = the original code's protocol, with two leaks: its non-members come from another "
    "dataset (a blind classifier that never queries the captioner can win), and the shadow's attack is "
    "fitted on the target's own non-members (shadow_out = target_out; shadow members drawn from the "
    "target's dataset may also be target members)")


def _confounded_key(scenario: str) -> str:
    from m4i.identity import ScenarioId

    sid = ScenarioId.parse(scenario)
    return str(ScenarioId(sid.name, "paper_protocol_confounded", sid.defense, sid.attacker))


def paper_vs_run_table(summary: pd.DataFrame, settings: dict,
                       scenario: str = "unrestricted") -> pd.DataFrame:
    """(e) The paper's headline ASR beside this run, on the honest split and on the confounded one.

    Family rows (``paper:mb``, ``paper:fb``): the average ASR over the scenario's attacks of the
    family (each attack once, its mean over seeds, as the paper averages over attacks), honest
    and confounded, and the blind baseline on both. Attack rows (``paper:<family>:<attack>``):
    the same attack on both splits (ASR and AUC with CIs) — every non-blind attack that ran on
    either, the calibrated ones too (the paper has no number for them).
    """
    conf_key = _confounded_key(scenario)
    honest, conf = summary[summary["scenario"] == scenario], summary[summary["scenario"] == conf_key]

    def blind_cols(frame, tag):
        b = frame[frame["family"] == "blind"]
        get = (lambda c: float(b[c].iloc[0])) if len(b) else (lambda c: float("nan"))
        return {f"blind_{tag}_asr_pct": get("attack_success_rate_mean") * 100.0, f"blind_{tag}_auc": get("auc_mean"),
                f"blind_{tag}_auc_ci_lo": get("auc_ci_lo"), f"blind_{tag}_auc_ci_hi": get("auc_ci_hi")}

    blind = {**blind_cols(honest, "honest"), **blind_cols(conf, "confounded")}
    blind_src = list(summary.loc[summary["scenario"].isin([scenario, conf_key]) & (summary["family"] == "blind"), "sources"])
    settings_cols = {k: _setting_str(v) for k, v in settings.items()}
    rows = []
    for fam, paper in PAPER_ASR_PCT.items():
        f, fc = honest[honest["family"] == fam], conf[conf["family"] == fam]
        asr, asr_c = f["attack_success_rate_mean"] * 100.0, fc["attack_success_rate_mean"] * 100.0
        run = float(asr.mean()) if len(f) else float("nan")
        rows.append({
            "row_id": f"paper:{fam}", "family": fam, "attack": "(average)", "scenario": scenario,
            "paper_asr_pct": paper, "run_asr_pct": run, "difference_pp": run - paper,
            "run_asr_min_pct": float(asr.min()) if len(f) else float("nan"),
            "run_asr_max_pct": float(asr.max()) if len(f) else float("nan"),
            "confounded_asr_pct": float(asr_c.mean()) if len(fc) else float("nan"),
            "n_attacks": len(f), "attacks": ";".join(f["attack"]),
            "n_attacks_confounded": len(fc), "attacks_confounded": ";".join(fc["attack"]),
            **blind,
            "n_seeds": int(f["n_seeds"].max()) if len(f) else 0,
            **settings_cols,
            "note": CONFOUNDED_NOTE,
            "paper_source": PAPER_REF,
            "sources": ";".join([*f["sources"], *fc["sources"], *blind_src]),
        })
    attacks = list(dict.fromkeys([*honest.loc[honest["family"] != "blind", "attack"],
                                  *conf.loc[conf["family"] != "blind", "attack"]]))
    for attack in attacks:
        h, c = honest[honest["attack"] == attack], conf[conf["attack"] == attack]
        fam = (h if len(h) else c)["family"].iloc[0]
        row = {"row_id": f"paper:{fam}:{attack}", "family": fam, "attack": attack, "scenario": scenario,
               "paper_asr_pct": PAPER_ASR_PCT.get(fam, float("nan"))}
        for tag, frame in (("run", h), ("confounded", c)):
            get = (lambda col: float(frame[col].iloc[0])) if len(frame) else (lambda col: float("nan"))
            row[f"{tag}_asr_pct"] = get("attack_success_rate_mean") * 100.0
            row[f"{tag}_auc"], row[f"{tag}_auc_ci_lo"], row[f"{tag}_auc_ci_hi"] = (
                get("auc_mean"), get("auc_ci_lo"), get("auc_ci_hi"))
        row["difference_pp"] = row["run_asr_pct"] - row["paper_asr_pct"]
        row.update(blind)
        row["n_seeds"] = int(max([*h["n_seeds"], *c["n_seeds"], 0]))
        row["note"] = CONFOUNDED_NOTE
        row["paper_source"] = PAPER_REF if fam in PAPER_ASR_PCT else "the paper has no such attack"
        row["sources"] = ";".join([*h["sources"], *c["sources"], *blind_src])
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- writing
def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    # NaN spelled out: an empty cell would hide "undefined" from a reader.
    _write_text(df.to_csv(index=False, na_rep="NaN", lineterminator="\n"), Path(path))


def to_markdown(df: pd.DataFrame, title: str) -> str:
    shown = df.copy()
    for c in _tpr_columns(shown):
        shown[c] = shown[c].map(lambda v: "undefined" if pd.isna(v) else f"{v:.4g}")
    shown = shown.astype(object).where(shown.notna(), None)  # tabulate's missingval needs None
    body = shown.to_markdown(index=False, floatfmt=".4g", missingval="n/a")
    return f"# {title}\n\n{body}\n"


TITLES = {
    "attacks": "Attacks: one row per scenario x attack x seed",
    "summary": "Attacks summarised over seeds (mean, sd and 95 % CI; each seed's bootstrap CI)",
    "quality": "Caption quality per captioner: held-out vs members vs fixed caption",
    "blind": "Blind baseline vs attacks per scenario",
    "paper_vs_run": "Paper headline numbers vs this run (honest and confounded split)",
}


def build_tables(metrics_paths: list[str], utility_paths: list[str],
                 results_root: str | os.PathLike, out_dir: str | os.PathLike,
                 settings: dict, defenses: dict | None = None, recipe_paths=None) -> list[str]:
    """Write every table of TABLE_NAMES under ``out_dir`` (.csv and .md; LATEX_TABLES also .tex)
    and return the written paths. ``defenses``: the config's ``defenses`` block; ``recipe_paths``:
    defended targets' checkpoints (or utility files) whose ``recipe`` carries DP accounting."""
    from m4i.names import LATEX_TABLES
    from m4i.report import defenses as D
    from m4i.report import views as V

    attacks = attacks_table(list(metrics_paths), results_root)
    summary = summary_table(attacks)
    quality = caption_quality_table(list(utility_paths), results_root)
    data = {
        "attacks": attacks,
        "summary": summary,
        "quality": quality,
        "blind": blind_vs_attacks_table(summary),
        "paper_vs_run": paper_vs_run_table(summary, dict(settings)),
    }
    out, written = Path(out_dir), []
    for name, df in data.items():
        write_csv(df, out / f"{name}.csv")
        _write_text(to_markdown(df, TITLES[name]), out / f"{name}.md")
        written += [str(out / f"{name}.csv"), str(out / f"{name}.md")]
    written += D.write_defenses(D.defenses_table(attacks, utility_paths, results_root, defenses,
                                                 D.read_recipes(recipe_paths)), out)
    views = {"paper_attacks": V.attacks_view(summary), "paper_grid": V.grid_view(summary),
             "paper_quality": V.quality_view(quality), "low_fpr": V.low_fpr_view(summary)}
    for name, cells in views.items():
        written += V.write_view(cells, name, V.VIEW_TITLES[name], V.VIEW_NOTES[name], out, V.VIEW_CORNER[name])
    expected = {str(out / f"{n}.{e}") for n in TABLE_NAMES for e in ("csv", "md")} | {
        str(out / f"{n}.tex") for n in LATEX_TABLES}
    if set(written) != expected:  # one list of names (m4i.names) for the rule and this function
        raise M4IError(f"build_tables wrote {sorted(set(written) ^ expected)} unlike TABLE_NAMES/LATEX_TABLES")
    return written


def _none_if_nan(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def headline_metrics(metrics_paths: list[str]) -> dict:
    """Small nested dict of numbers for ``dvc metrics``: per scenario x attack mean over seeds
    (ASR, AUC, TPR at the low-FPR points) and the unrestricted average ASR (%) per family."""
    rows = [attack_row(read_json(p), Path(p).as_posix()) for p in metrics_paths]
    if not rows:
        raise M4IError("headline_metrics: no metrics.json paths given")
    summary = summary_table(pd.DataFrame(rows))
    keep = ["attack_success_rate", "auc", *_tpr_columns(rows[0])]
    attacks: dict = {}
    for _, r in summary.iterrows():
        entry = {m: _none_if_nan(float(r[f"{m}_mean"])) for m in keep if f"{m}_mean" in r}
        entry["n_seeds"] = int(r["n_seeds"])
        attacks.setdefault(r["scenario"], {})[r["attack"]] = entry
    paper = paper_vs_run_table(summary, {})
    paper = paper[paper["attack"] == "(average)"].set_index("family")
    return {
        "attacks": attacks,
        "unrestricted_average_asr_pct": {
            fam: {"run": _none_if_nan(float(paper.loc[fam, "run_asr_pct"])), "paper": PAPER_ASR_PCT[fam]}
            for fam in PAPER_ASR_PCT
        },
    }
