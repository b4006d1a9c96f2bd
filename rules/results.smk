# Attack metrics + caption quality -> tables, figures and the Snakemake report.

TABLES = ["attacks", "summary", "quality", "blind", "paper_vs_run"]
FIGURES = ["roc_linear", "roc_loglog", "attack_summary", "distributions", "quality"]


def _distribution_inputs(wc=None):
    """Per-record signal tables of the first unrestricted scenario's target (members vs non-members)."""
    name = next((n for n in config["scenarios"] if n.startswith("unrestricted")), None)
    if name is None:
        return {}
    scn, seed = scenarios()[name], SEEDS[0]
    tmid, _ = scenario_models(scn, seed)
    out = {
        "mb_in": f"{R}/signals/metrics/{tmid}/target_in.parquet",
        "mb_out": f"{R}/signals/metrics/{tmid}/target_out.parquet",
    }
    thresholds = [a for a, c in config["attacks"].items() if c["signal"] == "metrics" and c["method"] == "threshold"]
    if thresholds:
        out["mb_choice"] = f"{attack_dir(name, thresholds[0], seed)}/metrics.json"
    fb = [c["mfe"] for c in config["attacks"].values() if c["signal"] == "mfe"]
    if fb:
        mid = mfe_id(fb[0], scn, seed)
        out["fb_in"] = f"{R}/signals/mfe/{mid}/{tmid}/target_in.parquet"
        out["fb_out"] = f"{R}/signals/mfe/{mid}/{tmid}/target_out.parquet"
    return out


rule tables:
    """Paper-style tables (CSV + Markdown), each row with an id and its source artifacts."""
    input:
        metrics=all_attack_metrics(),
        utility=all_utility(),
    output:
        csv=[report(f"{R}/tables/{t}.csv", category="Tables", caption=f"../report/table_{t}.rst") for t in TABLES],
        md=[f"{R}/tables/{t}.md" for t in TABLES],
        headline=f"{R}/metrics.json",
    params:
        settings=lambda wc: {
            "study": STUDY,
            "seeds": SEEDS,
            "protocol": PROTOCOL,
            "datasets": {d: c["kind"] for d, c in config["datasets"].items()},
            "scenarios": {n: f"{s['target']['dataset']}/{s['target']['arch']} <- {s['shadow']['dataset']}/{s['shadow']['arch']}" for n, s in config["scenarios"].items()},
        },
        config=lambda wc: stage_config("study", "seeds", "evaluation"),
    log:
        f"{R}/logs/tables.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/build_tables.py"


rule figures:
    """ROC curves, attack summary, member/non-member distributions, caption quality (PNG + PDF)."""
    input:
        unpack(_distribution_inputs),
        metrics=all_attack_metrics(),
        utility=all_utility(),
    output:
        png=[report(f"{R}/figures/{f}.png", category="Figures", caption=f"../report/figure_{f}.rst") for f in FIGURES],
        pdf=[f"{R}/figures/{f}.pdf" for f in FIGURES],
    log:
        f"{R}/logs/figures.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/build_figures.py"
