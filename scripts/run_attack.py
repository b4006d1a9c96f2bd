"""Rule attack: shadow and target signal tables -> per-record scores.parquet + metrics.json."""
from m4i.attacks import run_attack
from m4i.evaluation import evaluate
from m4i.io import read_table, write_json, write_table
from m4i.workflow import run


def main(smk):
    attack = smk.config["attacks"][smk.wildcards.attack]
    ev = smk.config["evaluation"]
    tables = {k: read_table(smk.input[k]) for k in ("shadow_in", "shadow_out", "target_in", "target_out")}
    scores, info = run_attack(attack, seed=smk.params.seed, **tables)
    metrics = evaluate(
        scores["label"].to_numpy(),
        scores["score"].to_numpy(),
        info["threshold"],
        fpr_targets=tuple(ev["fpr_targets"]),
        n_bootstrap=ev["n_bootstrap"],
        seed=smk.params.seed,
    )
    write_table(scores, smk.output.scores)
    write_json(
        {
            "attack": smk.wildcards.attack,
            "scenario": smk.wildcards.scenario,
            "seed": smk.params.seed,
            "target_model": smk.params.target_model,
            "shadow_model": smk.params.shadow_model,
            "signal": attack["signal"],
            "uses_references": attack["signal"] in ("metrics", "blind") or "ref_cos" in str(attack["features"]),
            "decision": {"rule": "score >= threshold", "threshold": info["threshold"]},
            "info": info,
            "metrics": metrics,
        },
        smk.output.metrics,
    )


run(snakemake, main)  # noqa: F821
