"""The defenses table (``tables/defenses.{csv,md,tex}``) and the privacy–utility frontier figure.

One row per (defended scenario: defense x attacker model) plus, per base scenario, the
undefended row it is compared with. Each row: the defense's kind and parameters, its ε where
one is defined (DP-SGD: the target ε from config and the ε the accountant reports, read from the
``recipe`` the defended target's checkpoint — or its utility json — carries; absent: NaN), the
MB and the FB attack the attacker would pick on its shadows (``best_by_shadow``: never chosen on
target data) with AUC [95 % CI], attack success rate and TPR at 1 % FPR, the blind baseline, and
the defended target's held-out BLEU-4 / CIDEr and member gap (its utility json; mean over seeds).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from m4i.identity import ModelId
from m4i.io import M4IError, read_json

UTILITY = (("bleu4", "heldout"), ("cider", "heldout"), ("bleu4", "gap"), ("cider", "gap"))
PRIVACY_KEYS = ("epsilon_achieved", "delta", "noise_multiplier", "max_grad_norm", "sample_rate")
NONE = "none"


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)] if v.size else v
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else float("nan"))


def read_recipes(paths) -> dict[str, dict]:
    """Model key -> the ``recipe`` a defended checkpoint (``models/<key>.pt``) or utility json
    carries ({} where it carries none). Checkpoints load with weights_only=True."""
    out = {}
    for p in paths or []:
        p = Path(p)
        if p.suffix == ".json":
            doc = read_json(p)
        else:
            from m4i.io import load_torch

            doc = load_torch(p)
        if not isinstance(doc, dict):
            raise M4IError(f"{p}: expected a mapping")
        out[p.stem] = dict(doc.get("recipe") or {})
    return out


def _utility_docs(utility_paths) -> dict[str, tuple[dict, str]]:
    return {Path(p).stem: (read_json(p), str(p)) for p in utility_paths or []}


def _attack_cols(prefix: str, best) -> dict:
    if best is None:
        return {f"{prefix}_attack": None, **{f"{prefix}_{k}": float("nan") for k in (
            "auc", "auc_sd", "auc_ci_lo", "auc_ci_hi", "asr", "asr_sd", "tpr@1%fpr", "tpr@1%fpr_sd", "shadow_cv_auc")}}
    g = lambda c: float(best[c]) if c in best and not pd.isna(best[c]) else float("nan")  # noqa: E731
    return {f"{prefix}_attack": best["attack"], f"{prefix}_auc": g("auc_mean"), f"{prefix}_auc_sd": g("auc_sd"),
            f"{prefix}_auc_ci_lo": g("auc_ci_lo"), f"{prefix}_auc_ci_hi": g("auc_ci_hi"),
            f"{prefix}_asr": g("attack_success_rate_mean"), f"{prefix}_asr_sd": g("attack_success_rate_sd"),
            f"{prefix}_tpr@1%fpr": g("tpr@1%fpr_mean"), f"{prefix}_tpr@1%fpr_sd": g("tpr@1%fpr_sd"),
            f"{prefix}_shadow_cv_auc": g("shadow_cv_auc_mean")}


def defenses_table(attacks: pd.DataFrame, utility_paths, results_root, defenses: dict | None,
                   recipes: dict[str, dict] | None = None) -> pd.DataFrame:
    """The defenses table from the per-seed attacks table (``m4i.report.tables.attacks_table``)."""
    from m4i.report.tables import _source, best_by_shadow, summary_table

    defenses = dict(defenses or {})
    recipes = dict(recipes or {})
    if "defense" not in attacks or not attacks["defense"].notna().any():
        return pd.DataFrame(columns=["row_id", "scenario", "defense", "attacker", "sources"])
    summary = summary_table(attacks)
    docs = _utility_docs(utility_paths)
    defended = attacks[attacks["defense"].notna()]
    bases = list(dict.fromkeys(defended["scenario_name"]))
    rows = []
    for base in bases:
        undefended = attacks[(attacks["scenario_name"] == base) & attacks["defense"].isna()
                             & (attacks["protocol"].fillna("disjoint") == "disjoint")]
        keys = list(dict.fromkeys([*undefended["scenario"],
                                   *defended.loc[defended["scenario_name"] == base, "scenario"]]))
        # The undefended row picks among the attacks the defended rows ran (config key
        # defense_evaluation.attacks), so that each row's "best" comes from the same menu.
        menu = set(defended.loc[defended["scenario_name"] == base, "attack"])
        for key in keys:
            per_seed = attacks[(attacks["scenario"] == key) & attacks["attack"].isin(menu)]
            if per_seed.empty:
                continue
            s = summary[(summary["scenario"] == key) & summary["attack"].isin(menu)]
            first = per_seed.iloc[0]
            name = first["defense"] if isinstance(first["defense"], str) else None
            cfg = defenses.get(name, {}) if name else {}
            if name and name not in defenses:
                raise M4IError(f"defenses table: scenario {key} names defense {name!r}, which config key "
                               f"defenses does not declare (declared: {sorted(defenses)})")
            params = {k: v for k, v in cfg.items() if k != "kind"}
            row = {"row_id": f"defense:{key}", "scenario": key, "scenario_name": base,
                   "defense": name or NONE, "kind": cfg.get("kind", NONE),
                   "params": json.dumps(params, sort_keys=True, separators=(",", ":")) if params else "",
                   "attacker": first["attacker"] if name else NONE,
                   "epsilon_target": (float("inf") if cfg.get("epsilon") is None else float(cfg["epsilon"]))
                   if cfg.get("kind") == "dp_sgd" else float("nan")}
            # the defended target's privacy accounting and utility, one value per seed
            targets = list(dict.fromkeys(per_seed["target_model"]))
            for k in PRIVACY_KEYS:
                vals = [recipes.get(t, {}).get(k) for t in targets]
                if cfg.get("kind") == "dp_sgd" and k == "epsilon_achieved":
                    # the accountant's ε is null for clipping only (no noise): infinite
                    vals = [float("inf") if (t in recipes and v is None) else v for t, v in zip(targets, vals)]
                vals = [float(v) for v in vals if isinstance(v, (int, float))]
                row[k] = (float(np.mean(vals)) if vals else float("nan"))
            srcs = list(s["sources"])
            for metric, split in UTILITY:
                vals = []
                for t in targets:
                    if t in docs:
                        doc, path = docs[t]
                        v = (doc.get(split) or {}).get(metric)
                        if v is None and split == "gap":
                            h, m = (doc.get("heldout") or {}).get(metric), (doc.get("members") or {}).get(metric)
                            v = None if h is None or m is None else m - h
                        vals.append(v)
                        if _source(path, results_root) not in srcs:
                            srcs.append(_source(path, results_root))
                row[f"{split}_{metric}"], row[f"{split}_{metric}_sd"] = _mean_sd(vals)
            for fam in ("mb", "fb"):
                row.update(_attack_cols(fam, best_by_shadow(s, fam)))
            blind = s[s["family"] == "blind"]
            row["blind_auc"] = float(blind["auc_mean"].iloc[0]) if len(blind) else float("nan")
            row["n_seeds"] = int(per_seed["seed"].nunique())
            row["targets"] = ";".join(targets)
            row["sources"] = ";".join(srcs)
            rows.append(row)
    return pd.DataFrame(rows)


def _eps_label(r) -> str | None:
    if r["kind"] != "dp_sgd":
        return None
    e = r.get("epsilon_achieved")
    e = r.get("epsilon_target") if e is None or (isinstance(e, float) and math.isnan(e)) else e
    return "ε=∞" if e is None or math.isinf(float(e)) else f"ε={float(e):.3g}"


def defenses_view(table: pd.DataFrame) -> pd.DataFrame:
    """The defenses table as a readable grid (rows: defense · attacker model)."""
    from m4i.report.views import cell, fmt

    rows = []
    for _, r in table.iterrows():
        label = "undefended" if r["defense"] == NONE else f"{r['defense']} ({r['kind']}) · {r['attacker']}"
        if r["defense"] != NONE and _eps_label(r):
            label += f" · {_eps_label(r)}"
        label = f"{r['scenario_name']}: {label}"
        cols = {"held-out CIDEr": fmt(r["heldout_cider"], r["heldout_cider_sd"]),
                "held-out BLEU-4": fmt(r["heldout_bleu4"], r["heldout_bleu4_sd"]),
                "CIDEr gap": fmt(r["gap_cider"], r["gap_cider_sd"])}
        for fam in ("mb", "fb"):
            name = r[f"{fam}_attack"]
            up = fam.upper()
            if name is None or (isinstance(name, float) and math.isnan(name)):
                cols.update({f"{up} attack": "–", f"{up} AUC": "–", f"{up} ASR": "–", f"{up} TPR@1%FPR": "–"})
                continue
            cols.update({f"{up} attack": name,
                         f"{up} AUC": fmt(r[f"{fam}_auc"], r[f"{fam}_auc_sd"], r[f"{fam}_auc_ci_lo"], r[f"{fam}_auc_ci_hi"],
                                                       bounds=(0.0, 1.0)),
                         f"{up} ASR": fmt(r[f"{fam}_asr"], r[f"{fam}_asr_sd"]),
                         f"{up} TPR@1%FPR": fmt(r[f"{fam}_tpr@1%fpr"], r[f"{fam}_tpr@1%fpr_sd"])})
        for col, text in cols.items():
            rows.append(cell("defenses_view", "Defenses: privacy and utility", label, col, text, r["sources"],
                             table_row_id=r["row_id"]))
    return pd.DataFrame(rows)


DEFENSES_NOTES = [
    "MB / FB attack: the one with the highest cross-validated shadow AUC (chosen without target data); "
    "AUC with its 95 % CI (bootstrap for one seed, t over seeds for several), attack success rate, TPR at 1 % FPR.",
    "unaware: the attacker's shadows are undefended; adaptive: trained with the same defense and parameters.",
    "ε: the DP-SGD accountant's ε at δ (tables/defenses.csv: epsilon_achieved, delta, noise_multiplier); "
    "ε=∞ is clipping only. Utility: the defended target's held-out captions; gap = members − held-out.",
]


# --------------------------------------------------------------------------- figure
def privacy_utility_figure(table: pd.DataFrame, utility_metric: str = "cider"):
    """x = held-out utility of the defended target, y = AUC (left) and TPR at 1 % FPR (right) of
    the MB (circle) and FB (square) attack picked on shadows; one point per defense and attacker
    model (filled: adaptive, open: unaware), the undefended target in black, chance dotted."""
    from m4i.report.figures import WIDTH_IN, _colors, _figure, _placeholder

    if table.empty or "heldout_cider" not in table:
        return _placeholder("This study evaluates no defense (config: defenses, defense_evaluation).")
    fig = _figure(WIDTH_IN, 3.4)
    axes = fig.subplots(1, 2)
    colors = _colors([d for d in table["defense"] if d != NONE])
    marker = {"mb": "o", "fb": "s"}
    x_col = f"heldout_{utility_metric}"
    for ax, (ycol, ylabel, chance) in zip(axes, (("auc", "Attack AUC", 0.5),
                                                 ("tpr@1%fpr", "TPR at 1 % FPR", 0.01))):
        labelled, drawn = set(), 0  # one ε label per DP defense and panel
        for _, r in table.iterrows():
            x, xerr = r[x_col], r.get(f"{x_col}_sd", float("nan"))
            for fam in ("mb", "fb"):
                y = r[f"{fam}_{ycol}"]
                if pd.isna(y) or pd.isna(x):
                    continue
                if ycol == "auc" and not pd.isna(r[f"{fam}_auc_ci_lo"]):
                    # a t-interval over few seeds can leave [0, 1]: drawn clipped to the AUC's range
                    lo, hi = max(r[f"{fam}_auc_ci_lo"], 0.0), min(r[f"{fam}_auc_ci_hi"], 1.0)
                    yerr = [[y - lo], [hi - y]]
                else:
                    sd = r[f"{fam}_{ycol}_sd"]
                    yerr = None if pd.isna(sd) else [[sd], [sd]]
                drawn += 1
                undefended = r["defense"] == NONE
                color = "black" if undefended else colors[r["defense"]]
                adaptive = r["attacker"] == "adaptive"
                ax.errorbar([x], [y], yerr=yerr, xerr=None if pd.isna(xerr) else [[xerr], [xerr]],
                            fmt=marker[fam], ms=8 if undefended else 6, color=color,
                            mfc=color if (adaptive or undefended) else "white", capsize=2, lw=0.8)
                if _eps_label(r) and r["defense"] not in labelled:
                    labelled.add(r["defense"])
                    # alternately above and below the point: DP points at ε = 1 and 8 sit close together
                    dy = 4 if len(labelled) % 2 else -10
                    ax.annotate(_eps_label(r), (x, y), textcoords="offset points", xytext=(5, dy), fontsize=6)
        if not drawn:  # e.g. TPR at 1 % FPR with fewer than 100 non-members: undefined, not 0
            ax.text(0.5, 0.5, f"{ylabel}: undefined for every point\n(too few non-members)", ha="center",
                    va="center", transform=ax.transAxes)
        ax.axhline(chance, color="grey", ls=":", lw=0.8)
        ax.set(xlabel=f"Held-out {utility_metric.upper() if utility_metric != 'cider' else 'CIDEr'} of the target",
               ylabel=ylabel)
    axes[0].set_title("AUC (95 % CI); dotted: chance")
    axes[1].set_title("TPR at 1 % FPR; dotted: chance")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color="black", ms=8, label="undefended (black)"),
               Line2D([], [], ls="", marker="o", color="grey", label="MB (filled: adaptive, open: unaware)"),
               Line2D([], [], ls="", marker="s", color="grey", label="FB"),
               *[Line2D([], [], ls="", marker="o", color=c, label=d) for d, c in colors.items()]]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4))
    return fig


def write_defenses(table: pd.DataFrame, out_dir: str | os.PathLike) -> list[str]:
    """tables/defenses.csv (the data, one row per defense x attacker model) and its .md/.tex view
    (the view's cells point back to the data rows by ``table_row_id``)."""
    from m4i.report.tables import write_csv
    from m4i.report.views import latex, markdown

    out = Path(out_dir)
    write_csv(table, out / "defenses.csv")
    view = defenses_view(table)
    notes = [*DEFENSES_NOTES, "Each row is row `defense:<scenario>` of tables/defenses.csv: "
             "`m4i provenance tables/defenses.csv defense:<scenario>` traces it."]
    title = "Defenses: attack strength and utility cost"
    from m4i.report.tables import _write_text

    if view.empty:
        text_md = f"# {title}\n\nThis study evaluates no defense.\n"
        text_tex = f"% {title}: this study evaluates no defense\n"
    else:
        text_md, text_tex = markdown(view, title, notes, "defense"), latex(view, title, notes, "defense", "defenses")
    _write_text(text_md, out / "defenses.md")
    _write_text(text_tex, out / "defenses.tex")
    return [str(out / f"defenses.{e}") for e in ("csv", "md", "tex")]
