# Per-record signals (caption metrics, blind statistics, MFE features) -> attacks -> evaluation.


def _metric_signal_inputs(wc):
    mid = parse_model_id(wc.model)
    return {"captions": captions(wc.model, wc.split), "manifest": manifest(mid["dataset"])}


rule metric_signals:
    """Caption-similarity metrics of each generated caption against its references (corpus-level)."""
    input:
        unpack(_metric_signal_inputs),
    output:
        f"{R}/signals/metrics/{{model}}/{{split}}.parquet",
    log:
        f"{R}/logs/signals/metrics/{{model}}/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/signals/metrics/{{model}}/{{split}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/metric_signals.py"


def _blind_inputs(wc):
    nonmember = nonmember_dataset(wc.dataset, wc.protocol)
    return {
        "splits": splits_file(wc.dataset, wc.seed, wc.protocol),
        "manifests": [manifest(wc.dataset)] + ([manifest(nonmember)] if nonmember else []),
    }


rule blind_signals:
    """Statistics of the image and its reference captions only: the captioner is never queried."""
    input:
        unpack(_blind_inputs),
    output:
        f"{R}/signals/blind/{{dataset}}/{{protocol}}-s{{seed}}/{{split}}.parquet",
    log:
        f"{R}/logs/signals/blind/{{dataset}}/{{protocol}}-s{{seed}}/{{split}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    script:
        "../scripts/blind_signals.py"


def _attack_inputs(wc):
    return signal_tables(wc.attack, scenarios()[wc.scenario], int(wc.seed))


def _attack_models(wc):
    scn = scenarios()[wc.scenario]
    return scenario_models(scn, int(wc.seed)) if scn["target"]["arch"] else (None, None)


rule attack:
    """Fit on the shadow's members/non-members, score the target's; per-record scores + metrics."""
    input:
        unpack(_attack_inputs),
    output:
        scores=f"{R}/attacks/{{scenario}}/{{attack}}/s{{seed}}/scores.parquet",
        metrics=f"{R}/attacks/{{scenario}}/{{attack}}/s{{seed}}/metrics.json",
    params:
        seed=lambda wc: int(wc.seed),
        target_model=lambda wc: _attack_models(wc)[0],
        shadow_model=lambda wc: _attack_models(wc)[1],
        config=lambda wc: stage_config(f"attacks.{wc.attack}", "evaluation"),
    log:
        f"{R}/logs/attacks/{{scenario}}/{{attack}}/s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/attacks/{{scenario}}/{{attack}}/s{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    script:
        "../scripts/run_attack.py"
