# Attack metrics + caption quality -> tables, figures and the Snakemake report.
from m4i.names import LATEX_TABLES

# The config's defenses block, recorded in the provenance of what reads it (absent: none).
_DEFENSE_KEYS = ["defenses"] if config.get("defenses") else []


def _distribution_target():
    """The first unrestricted scenario's plan (seed 0, honest split, undefended), or None."""
    return next((p for p in PLAN.scenarios(PLAN.seeds[0]) if p.id.name.startswith("unrestricted")
                 and p.id.protocol == PLAN.protocol and p.id.defense is None), None)


def _fb_mfe(wc=None):
    """The MFE whose cosine the FB distribution shows (the first FB attack's), if the target's
    MFE-signal table has both of its candidate splits under it."""
    plan, fb = _distribution_target(), PLAN.attacks_with("mfe")
    if plan is None or not fb:
        return None
    mfe = str(PLAN.mfe_id(plan, fb[0]))
    return mfe if {(mfe, "target_in"), (mfe, "target_out")} <= set(PLAN.signal_parts("mfe", plan.target)) else None


def _distribution_inputs(wc=None):
    """Per-record signal tables of the first unrestricted scenario's target (members vs non-members)."""
    plan = _distribution_target()
    if plan is None:
        return {}
    target = plan.target
    out = {}
    if {"target_in", "target_out"} <= set(PLAN.metric_splits(target)):
        out["mb"] = L.metric_signals(target)  # both splits in one table
    thresholds = [a for a in PLAN.attacks_with("metrics") if PLAN.attack(a).method == "threshold"]
    if thresholds:
        out["mb_choice"] = L.attack_metrics(plan.id, thresholds[0], plan.seed)
    if _fb_mfe():
        out["fb"] = L.mfe_signals(target)  # every MFE and split of the target in one table
    return out


def _recipes(wc=None):
    """Checkpoints of the defended targets that train differently (DP-SGD & co.): their ``recipe``
    carries the privacy accounting (achieved epsilon, delta, noise) the defenses table reports."""
    return [L.model(m) for m in PLAN.models()
            if m.role == "target" and m.defense is not None and PLAN.training_side(m)]


rule tables:
    """Tables: long-format data (CSV + Markdown) and paper-style views (+ LaTeX), each row or cell
    with an id and its source artifacts."""
    input:
        metrics=PLAN.attack_metrics(),
        utility=PLAN.utility(),
        recipes=_recipes(),
    output:
        csv=[report(L.table(t, "csv"), category="Tables", caption=f"../report/table_{t}.rst") for t in TABLE_NAMES],
        md=[L.table(t, "md") for t in TABLE_NAMES],
        tex=[L.table(t, "tex") for t in LATEX_TABLES],
        headline=L.headline(),
    params:
        results_root=R,
        settings=lambda wc: {
            "study": config["study"],
            "seeds": PLAN.seeds,
            "protocol": PLAN.protocol,
            "datasets": {d: c["kind"] for d, c in config["datasets"].items()},
            "scenarios": {n: f"{s['target']['dataset']}/{s['target']['arch']} <- {s['shadow']['dataset']}/{s['shadow']['arch']}" for n, s in config["scenarios"].items()},
        },
        defenses=lambda wc: config.get("defenses") or {},
        config=lambda wc: stage_config("study", "seeds", "evaluation", *_DEFENSE_KEYS),
        code=code("build_tables.py"),
    log:
        L.log("tables.log"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/build_tables.py"


rule figures:
    """ROC curves, attack summary, member/non-member distributions, caption quality, privacy-utility
    frontier of the defenses (PNG + PDF)."""
    input:
        unpack(_distribution_inputs),
        metrics=PLAN.attack_metrics(),
        utility=PLAN.utility(),
        recipes=_recipes(),
    output:
        png=[report(L.figure(f, "png"), category="Figures", caption=f"../report/figure_{f}.rst") for f in FIGURE_NAMES],
        pdf=[L.figure(f, "pdf") for f in FIGURE_NAMES],
    params:
        results_root=R,
        fb_mfe=_fb_mfe,
        defenses=lambda wc: config.get("defenses") or {},
        config=lambda wc: stage_config(*_DEFENSE_KEYS),
        code=code("build_figures.py"),
    log:
        L.log("figures.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/build_figures.py"
