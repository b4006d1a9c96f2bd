"""Figures (PNG + PDF) of the study: ROC curves, ASR/AUC with CIs, score distributions,
caption quality. Built on matplotlib's object API with the Agg canvas (no pyplot global
state) and with metadata that carries no timestamps, so the same inputs give the same bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from m4i.io import M4IError, atomic_path, read_json, read_table, select_part
from m4i.names import FIGURE_NAMES
from m4i.report.tables import CAPTION_METRICS

# No dates, no version strings: identical inputs -> identical files.
PNG_META = {"Software": None}
PDF_META = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}
RC = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "pdf.fonttype": 42, "svg.hashsalt": "m4i",
    "axes.grid": True, "grid.alpha": 0.3,
}
LINESTYLE = {"mb": "-", "fb": "--", "blind": ":", "other": "-."}
WIDTH_IN = 6.5  # a printed page's text width


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, out_dir: str | os.PathLike, name: str) -> list[str]:
    """Write <name>.png (200 dpi) and <name>.pdf atomically; return both paths."""
    paths = []
    for ext, meta in (("png", PNG_META), ("pdf", PDF_META)):
        path = Path(out_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=200, metadata=meta)
        paths.append(str(path))
    return paths


def _load_metrics(metrics_paths: list[str]) -> list[dict]:
    docs = []
    for p in metrics_paths:
        doc = read_json(p)
        for key in ("attack", "scenario", "seed", "metrics"):
            if key not in doc:
                raise M4IError(f"{p}: missing key {key!r}")
        doc["_path"] = str(p)
        docs.append(doc)
    if not docs:
        raise M4IError("build_figures: no metrics.json paths given")
    return docs


def _colors(names: list[str]) -> dict:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(dict.fromkeys(names))}


# --------------------------------------------------------------------------- ROC
def _grid(fig, n: int):
    cols = min(max(n, 1), 2)
    rows = -(-max(n, 1) // cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _roc_panel(ax, docs: list[dict], scenario: str, loglog: bool, colors: dict) -> None:
    """Every attack of one scenario (each seed a line, one legend entry per attack)."""
    docs = [d for d in docs if d["scenario"] == scenario]
    aucs = pd.DataFrame([(d["attack"], d["metrics"].get("auc")) for d in docs], columns=["a", "auc"])
    aucs = aucs.assign(auc=aucs["auc"].astype(float)).groupby("a", sort=False)["auc"].agg(["mean", "size"])
    labelled, floor = set(), 1e-3
    for d in sorted(docs, key=lambda d: (list(colors).index(d["attack"]), d["seed"])):
        roc = d["metrics"].get("roc")
        if not roc or not roc.get("fpr"):
            continue  # ROC undefined (one class only): metrics.json says why
        fpr, tpr = np.asarray(roc["fpr"], float), np.asarray(roc["tpr"], float)
        auc, k = aucs.loc[d["attack"]]
        label = None if d["attack"] in labelled else (
            f"{d['attack']} (AUC {auc:.2f}" + (f", {int(k)} seeds)" if k > 1 else ")"))
        labelled.add(d["attack"])
        if loglog:  # log axes cannot show FPR = 0 or TPR = 0
            keep = (fpr > 0) & (tpr > 0)
            fpr, tpr = fpr[keep], tpr[keep]
            if fpr.size:
                floor = min(floor, fpr.min())
        ax.plot(fpr, tpr, label=label, color=colors[d["attack"]],
                ls=LINESTYLE.get(d["identity"]["attack"]["family"], LINESTYLE["other"]), lw=1.2)
    if loglog:
        grid = np.logspace(np.log10(floor), 0, 50)
        ax.plot(grid, grid, color="grey", lw=0.8, ls=":", label="chance")
        ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1))
    else:
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"{scenario}" + (" (log-log: low FPR)" if loglog else ""))
    ax.set_xlabel("False positive rate (non-members flagged)")
    ax.set_ylabel("True positive rate (members found)")
    ax.legend(loc="lower right")


def roc_figure(docs: list[dict], loglog: bool = False):
    """One ROC panel per scenario, on linear or log-log axes, with the chance diagonal.

    Every attack of the scenario is drawn: the paper's (MB solid, FB dashed), the blind baseline
    (dotted) and the calibrated ones (LiRA, RMIA: dash-dotted) side by side. Defended scenarios
    are left to the privacy–utility figure (one panel each would drown the undefended ones).
    """
    docs = [d for d in docs if not (d.get("identity", {}).get("scenario") or {}).get("defense")]
    scenarios = list(dict.fromkeys(d["scenario"] for d in docs))
    rows = -(-len(scenarios) // 2)
    fig = _figure(WIDTH_IN, 3.2 * rows)
    colors = _colors([d["attack"] for d in docs])  # one colour per attack across panels
    for ax, scenario in zip(_grid(fig, len(scenarios)), scenarios):
        _roc_panel(ax, docs, scenario, loglog, colors)
    return fig


# --------------------------------------------------------------------------- ASR / AUC
def asr_auc_figure(summary: pd.DataFrame):
    """Grouped bars: ASR and AUC per scenario and attack, with 95 % CI error bars."""
    scenarios = list(dict.fromkeys(summary["scenario"]))
    attacks = list(dict.fromkeys(summary["attack"]))
    family = dict(zip(summary["attack"], summary["family"]))
    colors = _colors(attacks)
    fig = _figure(WIDTH_IN, 5.2)
    axes = fig.subplots(2, 1, sharex=True)
    width = 0.8 / max(len(attacks), 1)
    for ax, metric, label in ((axes[0], "attack_success_rate", "Attack success rate"),
                              (axes[1], "auc", "AUC")):
        for j, attack in enumerate(attacks):
            sub = summary[summary["attack"] == attack].set_index("scenario")
            xs, ys, err = [], [], [[], []]
            for i, s in enumerate(scenarios):
                if s not in sub.index:
                    continue
                r = sub.loc[s]
                mean, lo, hi = r[f"{metric}_mean"], r[f"{metric}_ci_lo"], r[f"{metric}_ci_hi"]
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(mean)
                # No CI known -> no bar, rather than a misleading zero-width one.
                err[0].append(0.0 if pd.isna(lo) else mean - lo)
                err[1].append(0.0 if pd.isna(hi) else hi - mean)
            ax.bar(xs, ys, width, yerr=err, capsize=2, color=colors[attack],
                   hatch={"fb": "//", "blind": ".."}.get(family[attack], ""),
                   label=attack if ax is axes[0] else None, edgecolor="black", linewidth=0.4)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(ylim=(0, 1), ylabel=label)
    axes[1].set_xticks(range(len(scenarios)), scenarios, rotation=15)
    axes[1].set_xlabel("Scenario (dotted line: chance)")
    axes[0].set_title("Attack success rate (95 % CI)")
    axes[1].set_title("AUC (95 % CI)")
    fig.legend(loc="outside upper center", ncol=min(len(attacks), 5))
    return fig


# --------------------------------------------------------------------------- distributions
def load_distribution(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Member and non-member values of one column.

    ``spec``: {"column", "title", and either "path" (a table with a ``label`` column, e.g.
    scores.parquet) or "members" + "nonmembers" (per-record signal tables; of a table of several
    parts, the rows ``m4i.io.select_part`` selects with "members_rows" / "nonmembers_rows", e.g.
    {"split": "target_in", "mfe": "clip-shapes-s0"})}.
    """
    col = spec.get("column")
    if not col:
        raise M4IError(f"distribution input {spec}: needs a 'column'")

    tables = {}  # members and non-members may be parts of one table: read it once

    def values(path, label_filter=None, rows=None):
        if path not in tables:
            tables[path] = read_table(path)
        df = tables[path] if rows is None else select_part(tables[path], where=path, **rows)
        if col not in df.columns:
            raise M4IError(f"{path}: no column {col!r}; columns are {list(df.columns)}")
        if label_filter is None:
            return df[col]
        if "label" not in df.columns:
            raise M4IError(f"{path}: no 'label' column to split members from non-members")
        return df.loc[df["label"] == label_filter, col]

    def arr(s):
        v = np.asarray(s.tolist(), dtype=float)
        if v.ndim != 1:
            raise M4IError(f"distribution input {spec.get('title', col)}: column {col!r} is not scalar")
        return v

    if "path" in spec:
        return arr(values(spec["path"], 1)), arr(values(spec["path"], 0))
    if "members" in spec and "nonmembers" in spec:
        return (arr(values(spec["members"], rows=spec.get("members_rows"))),
                arr(values(spec["nonmembers"], rows=spec.get("nonmembers_rows"))))
    raise M4IError(f"distribution input {spec}: give 'path' or 'members' and 'nonmembers'")


def _placeholder(text: str):
    """A declared figure whose inputs this study does not have: say so instead of failing."""
    fig = _figure(WIDTH_IN, 1.5)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def distributions_figure(distribution_inputs: list[dict]):
    """One histogram panel per input: members vs non-members on shared bins."""
    if not distribution_inputs:
        return _placeholder("No member/non-member signal tables were given for this study.")
    n = len(distribution_inputs)
    fig = _figure(WIDTH_IN, 2.6 * -(-n // 2))
    for ax, spec in zip(_grid(fig, n), distribution_inputs):
        mem, non = load_distribution(spec)
        both = np.concatenate([mem, non])
        both = both[np.isfinite(both)]
        lo, hi = (both.min(), both.max()) if both.size else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
        ax.hist(non[np.isfinite(non)], bins=bins, density=True, alpha=0.55, color="tab:blue",
                label=f"non-members (n={len(non)})")
        # Members as a thick outline: the two stay apart in greyscale print too.
        ax.hist(mem[np.isfinite(mem)], bins=bins, density=True, color="tab:red", linewidth=1.6,
                label=f"members (n={len(mem)})", histtype="step")
        ax.set(title=spec.get("title") or spec.get("label") or spec["column"],
               xlabel=spec.get("xlabel", spec["column"]), ylabel="Density")
        ax.legend()
    return fig


# --------------------------------------------------------------------------- caption quality
def _quality_panels(utility_paths: list[str]) -> list[str]:
    """The captioners the quality figure shows: undefended ones of the first seed (every seed and
    every defended target would make dozens of panels; those are in tables/quality.csv and the
    privacy-utility figure)."""
    from m4i.identity import ModelId

    models = {p: ModelId.parse(Path(p).stem) for p in utility_paths}
    if not models:
        return []
    first = min(m.seed for m in models.values())
    return [p for p, m in models.items() if m.defense is None and m.seed == first]


def caption_quality_figure(utility_paths: list[str]):
    """Per captioner: members vs held-out vs the fixed-caption baseline on each metric."""
    utility_paths = _quality_panels(list(utility_paths))
    if not utility_paths:
        return _placeholder("No caption-quality (utility) files were given for this study.")
    n = len(utility_paths)
    fig = _figure(WIDTH_IN, 2.6 * -(-n // 2))
    for ax, path in zip(_grid(fig, n), utility_paths):
        doc = read_json(path)
        if "heldout" not in doc or "members" not in doc:
            raise M4IError(f"{path}: needs 'heldout' and 'members'")
        held, mem = doc["heldout"], doc["members"]
        base = doc.get("baseline_fixed_caption", {}).get("heldout", {})
        metrics = [m for m in CAPTION_METRICS if m in held]
        x = np.arange(len(metrics))
        for k, (vals, label, color) in enumerate(((mem, "members", "tab:red"),
                                                 (held, "held-out", "tab:blue"),
                                                 (base, "fixed caption (held-out)", "tab:grey"))):
            ys = [float(vals.get(m, np.nan)) for m in metrics]
            ax.bar(x - 0.27 + 0.27 * k, ys, 0.27, label=label, color=color)
        ax.set_xticks(x, metrics, rotation=30)
        ax.set(title=Path(path).stem, ylabel="Score", xlabel="Caption metric")
        ax.legend()
    return fig


# --------------------------------------------------------------------------- all figures
def build_figures(metrics_paths: list[str], utility_paths: list[str],
                  distribution_inputs: list[dict], out_dir: str | os.PathLike,
                  defenses: dict | None = None, recipe_paths=None, results_root=None) -> list[str]:
    """Write the figures of FIGURE_NAMES as PNG + PDF under ``out_dir``; return the written paths.

    Stems (FIGURE_NAMES, as rules/results.smk declares them): roc_linear, roc_loglog,
    attack_summary, distributions, quality, privacy_utility. A figure without inputs says so on
    its canvas. ``defenses`` / ``recipe_paths``: as for ``m4i.report.tables.build_tables``.
    """
    from matplotlib import rc_context

    from m4i.identity import Layout
    from m4i.report import defenses as D
    from m4i.report.tables import attack_row, summary_table

    docs = _load_metrics(list(metrics_paths))
    root = results_root if results_root is not None else Layout.root_of(docs[0]["_path"])
    with rc_context(RC):
        per_seed = pd.DataFrame([attack_row(d, Path(d["_path"]).resolve().relative_to(Path(root).resolve()).as_posix())
                                 for d in docs])
        summary = summary_table(per_seed)
        figures = {
            "roc_linear": lambda: roc_figure(docs, loglog=False),
            "roc_loglog": lambda: roc_figure(docs, loglog=True),
            "attack_summary": lambda: asr_auc_figure(summary[summary["defense"].isna()]),
            "distributions": lambda: distributions_figure(list(distribution_inputs or [])),
            "quality": lambda: caption_quality_figure(list(utility_paths or [])),
            "privacy_utility": lambda: D.privacy_utility_figure(
                D.defenses_table(per_seed, utility_paths, root, defenses, D.read_recipes(recipe_paths))),
        }
        written: list[str] = []
        for name in FIGURE_NAMES:
            written += save(figures[name](), out_dir, name)
    return written
