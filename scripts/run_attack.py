"""Rule attack: signal tables -> per-record scores.parquet + metrics.json (one evaluation for all)."""
from m4i.attacks import run_attack, shadow_tables
from m4i.attacks.calibrated import run_calibrated
from m4i.attacks.queries import attacker_view
from m4i.data.membership import model_members, pool_splits
from m4i.evaluation import evaluate
from m4i.identity import ModelId
from m4i.io import read_json, read_table, select_part, write_json, write_table
from m4i.workflow import run


def _paper(smk, attack, view):
    splits = read_json(smk.input.shadow_splits)
    shadows = []
    for i, key in enumerate(smk.params.shadow_models):
        model = ModelId.parse(key)
        shadows.append({"model": key, "members": model_members(model, splits)["members"],
                        "tables": [view(f"shadow{i}_{split}") for split in pool_splits(model)]})
    shadow_in, shadow_out = shadow_tables(shadows)
    return run_attack(attack, shadow_in, shadow_out, view("target_in"), view("target_out"),
                      seed=smk.params.seed)


def _calibrated(smk, attack, view, references):
    cand = read_json(smk.input.candidate_splits)["splits"]
    ref_splits = read_json(smk.input.reference_splits[0])

    def tables(name):
        return {"candidates": _concat([view(f"{name}_{s}") for s in ("target_in", "target_out")]),
                "population": view(f"{name}_heldout")}

    members = [model_members(ModelId.parse(key), ref_splits, n_refs=smk.params.n_refs)["members"]
               for key in references]
    return run_calibrated(attack, tables("target"), [tables(f"ref{i}") for i in range(len(references))], members,
                          candidates=(cand["target_in"], cand["target_out"]), population=cand["heldout"])


def _concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def main(smk):
    attack = smk.config["attacks"][smk.wildcards.attack]
    identity = smk.params.attack_id
    ev = smk.config["evaluation"]

    tables = {}  # path -> table: one captioner's table holds several inputs' parts; read it once

    def view(name):  # input `name`'s part, as an attacker asking `queries` times per record sees it
        path = smk.input[name]
        if path not in tables:
            tables[path] = read_table(path)
        return attacker_view(select_part(tables[path], where=path, **smk.params.input_rows[name]), identity["queries"])

    if identity["calibrated"]:
        online = attack["method"].endswith("_online")
        references = smk.params.reference_models if online else smk.params.shadow_models
        scores, info = _calibrated(smk, attack, view, references)
    else:
        references = smk.params.shadow_models
        scores, info = _paper(smk, attack, view)
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
            "identity": {"attack": identity, "scenario": smk.params.scenario},
            "target_model": smk.params.target_model,
            "shadow_model": smk.params.shadow_models[0],
            "shadow_models": list(smk.params.shadow_models),
            "reference_models": list(references),
            "signal": identity["signal"],
            "uses_references": identity["uses_references"],
            "decision": {"rule": "score >= threshold", "threshold": info["threshold"]},
            "info": info,
            "metrics": metrics,
        },
        smk.output.metrics,
    )


run(snakemake, main)  # noqa: F821
