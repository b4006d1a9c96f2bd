"""Rule attack_<scenario>: every attack of one scenario at one seed, each from its own signal
tables -> per-record scores.parquet + metrics.json (one evaluation for all) and its own provenance."""
from m4i.attacks import run_attack, shadow_tables
from m4i.attacks.calibrated import run_calibrated
from m4i.attacks.queries import attacker_view
from m4i.data.membership import model_members, pool_splits
from m4i.evaluation import evaluate
from m4i.identity import ModelId
from m4i.io import flat_paths, read_json, read_table, select_part, write_json, write_table
from m4i.progress import Progress
from m4i.workflow import run


def _paper(smk, inputs, attack, view):
    splits = read_json(inputs["shadow_splits"])
    shadows = []
    for i, key in enumerate(smk.params.shadow_models):
        model = ModelId.parse(key)
        shadows.append({"model": key, "members": model_members(model, splits)["members"],
                        "tables": [view(f"shadow{i}_{split}") for split in pool_splits(model)]})
    shadow_in, shadow_out = shadow_tables(shadows)
    return run_attack(attack, shadow_in, shadow_out, view("target_in"), view("target_out"),
                      seed=smk.params.seed)


def _calibrated(smk, inputs, attack, view, references):
    cand = read_json(inputs["candidate_splits"])["splits"]
    ref_splits = read_json(inputs["reference_splits"][0])

    def tables(name):
        return {"candidates": _concat([view(f"{name}_{s}") for s in ("target_in", "target_out")]),
                "population": view(f"{name}_heldout")}

    members = [model_members(ModelId.parse(key), ref_splits, n_refs=len(smk.params.reference_models))["members"]
               for key in references]
    return run_calibrated(attack, tables("target"), [tables(f"ref{i}") for i in range(len(references))], members,
                          candidates=(cand["target_in"], cand["target_out"]), population=cand["heldout"])


def _concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def _one(smk, name, spec, read):
    """Run attack ``name`` (its entry of ``params.attacks``), write its outputs, return its
    provenance part and its metrics."""
    attack = smk.config["attacks"][name]
    identity = spec["identity"]
    ev = smk.config["evaluation"]
    inputs = spec["inputs"]

    def view(part):  # input `part`'s rows, as an attacker asking `queries` times per record sees it
        path = inputs[part]
        return attacker_view(select_part(read(path), where=path, **spec["input_rows"][part]), identity["queries"])

    if identity["calibrated"]:
        online = attack["method"].endswith("_online")
        references = smk.params.reference_models if online else smk.params.shadow_models
        scores, info = _calibrated(smk, inputs, attack, view, references)
    else:
        references = smk.params.shadow_models
        scores, info = _paper(smk, inputs, attack, view)
    metrics = evaluate(
        scores["label"].to_numpy(),
        scores["score"].to_numpy(),
        info["threshold"],
        fpr_targets=tuple(ev["fpr_targets"]),
        n_bootstrap=ev["n_bootstrap"],
        seed=smk.params.seed,
    )
    write_table(scores, spec["scores"])
    write_json(
        {
            "attack": name,
            "scenario": smk.params.scenario["scenario"],
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
        spec["metrics"],
    )
    params = {k: smk.params[k] for k in ("seed", "scenario", "target_model", "shadow_models", "reference_models",
                                         "code")}
    params |= {"attack_id": identity, "input_rows": spec["input_rows"], "config": spec["config"]}
    part = {"outputs": [spec["scores"], spec["metrics"]], "inputs": flat_paths(inputs.values()), "params": params,
            "wildcards": {"scenario": params["scenario"]["scenario"], "attack": name, "seed": str(smk.params.seed)}}
    return part, metrics


def main(smk):
    tables = {}  # path -> table, read once: a captioner's table serves several attacks and inputs

    def read(path):
        if path not in tables:
            tables[path] = read_table(path)
        return tables[path]

    attacks = smk.params.attacks
    progress = Progress(f"attacks {smk.params.scenario['scenario']} s{smk.params.seed}", len(attacks), unit="attack")
    parts = []
    for done, (name, spec) in enumerate(attacks.items(), start=1):
        part, metrics = _one(smk, name, spec, read)
        parts.append(part)
        progress.update(done, attack=name, auc=metrics["auc"])
    return parts


run(snakemake, main)  # noqa: F821
