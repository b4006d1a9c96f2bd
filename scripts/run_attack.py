"""Rule attack: shadow and target signal tables -> per-record scores.parquet + metrics.json."""
from m4i.attacks import run_attack, shadow_tables
from m4i.data.membership import model_members, pool_splits
from m4i.evaluation import evaluate
from m4i.identity import ModelId
from m4i.io import read_json, read_table, write_json, write_table
from m4i.workflow import run


def main(smk):
    attack = smk.config["attacks"][smk.wildcards.attack]
    ev = smk.config["evaluation"]
    splits = read_json(smk.input.shadow_splits)
    shadows = []
    for i, key in enumerate(smk.params.shadow_models):
        model = ModelId.parse(key)
        shadows.append({"model": key, "members": model_members(model, splits)["members"],
                        "tables": [read_table(smk.input[f"shadow{i}_{split}"]) for split in pool_splits(model)]})
    shadow_in, shadow_out = shadow_tables(shadows)
    target_in, target_out = read_table(smk.input.target_in), read_table(smk.input.target_out)
    scores, info = run_attack(attack, shadow_in, shadow_out, target_in, target_out, seed=smk.params.seed)
    metrics = evaluate(
        scores["label"].to_numpy(),
        scores["score"].to_numpy(),
        info["threshold"],
        fpr_targets=tuple(ev["fpr_targets"]),
        n_bootstrap=ev["n_bootstrap"],
        seed=smk.params.seed,
    )
    write_table(scores, smk.output.scores)
    identity = smk.params.attack_id
    write_json(
        {
            "attack": smk.wildcards.attack,
            "scenario": smk.wildcards.scenario,
            "seed": smk.params.seed,
            "identity": {"attack": identity, "scenario": smk.params.scenario},
            "target_model": smk.params.target_model,
            "shadow_model": smk.params.shadow_models[0],
            "shadow_models": list(smk.params.shadow_models),
            "signal": identity["signal"],
            "uses_references": identity["uses_references"],
            "decision": {"rule": "score >= threshold", "threshold": info["threshold"]},
            "info": info,
            "metrics": metrics,
        },
        smk.output.metrics,
    )


run(snakemake, main)  # noqa: F821
