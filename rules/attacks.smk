# Per-record signals (caption metrics, log-likelihoods, blind statistics, MFE features) -> attacks.


rule metric_signals:
    """Caption-similarity metrics of each generated caption against its references (corpus-level),
    for every split of one captioner an attack reads, in one job (one METEOR JVM)."""
    input:
        captions=lambda wc: L.captions(wc.model),
        manifest=lambda wc: PLAN.manifests_of(model_of(wc)),
        splits=lambda wc: PLAN.splits_of(model_of(wc)),  # its mfe split: CIDEr's fixed corpus
        paraphrase=L.meteor_table(),
        paraphrase_vocab=L.meteor_vocab(),
    output:
        L.metric_signals("{model}"),
    params:
        splits=lambda wc: PLAN.metric_splits(model_of(wc)),
        code=code("metric_signals.py"),
    log:
        L.log("signals", "metrics", "{model}.log"),
    benchmark:
        L.benchmark("signals", "metrics", "{model}.tsv")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/metric_signals.py"


def _loglik_inputs(wc):
    m = model_of(wc)
    return {
        "model": L.model(PLAN.weights_of(m)),
        "manifest": PLAN.manifests_of(m),
        "splits": PLAN.splits_of(m),
        "features": PLAN.features_of(m, PLAN.arch_features(m.arch)),
    }


rule loglik_signals:
    """Gray-box: teacher-forced mean token log-likelihood of each reference caption of each record,
    for every split of one captioner a gray-box attack reads, in one job."""
    input:
        unpack(_loglik_inputs),
    output:
        L.loglik_signals("{model}"),
    params:
        splits=lambda wc: [split for _, split in PLAN.signal_parts("loglik", model_of(wc))],
        code=code("loglik_signals.py"),
    log:
        L.log("signals", "loglik", "{model}.log"),
    benchmark:
        L.benchmark("signals", "loglik", "{model}.tsv")
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=15,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/loglik_signals.py"


def _blind_inputs(wc):
    nonmember = PLAN.nonmember_dataset(wc.dataset, wc.protocol)
    return {
        "splits": L.splits(wc.dataset, wc.protocol, wc.seed),
        "manifests": [L.manifest(wc.dataset)] + ([L.manifest(nonmember)] if nonmember else []),
    }


rule blind_signals:
    """Statistics of the image and its reference captions only: the captioner is never queried."""
    input:
        unpack(_blind_inputs),
    output:
        L.blind_signals("{dataset}", "{protocol}", "{seed}", "{split}"),
    params:
        code=code("blind_signals.py"),
    log:
        L.log("signals", "blind", "{dataset}", "{protocol}-s{seed}", "{split}.log"),
    benchmark:
        L.benchmark("signals", "blind", "{dataset}", "{protocol}-s{seed}", "{split}.tsv")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    script:
        "../scripts/blind_signals.py"


def _scenario(wc):
    return PLAN.scenario(wc.scenario, int(wc.seed))


rule attack:
    """Fit on the shadows' members/non-members, score the target's; per-record scores + metrics."""
    input:
        unpack(lambda wc: PLAN.attack_inputs(wc.scenario, wc.attack, int(wc.seed))),
    output:
        scores=L.attack_scores("{scenario}", "{attack}", "{seed}"),
        metrics=L.attack_metrics("{scenario}", "{attack}", "{seed}"),
    params:
        seed=lambda wc: int(wc.seed),
        scenario=lambda wc: _scenario(wc).id.fields(),
        attack_id=lambda wc: PLAN.attack(wc.attack).fields(),
        input_rows=lambda wc: PLAN.input_rows(wc.scenario, wc.attack, int(wc.seed)),
        target_model=lambda wc: str(_scenario(wc).target),
        shadow_models=lambda wc: [str(m) for m in _scenario(wc).shadows],
        reference_models=lambda wc: [str(m) for m in _scenario(wc).refs],
        n_refs=lambda wc: len(_scenario(wc).refs),
        config=lambda wc: stage_config(f"attacks.{wc.attack}", "evaluation"),
        code=code("run_attack.py"),
    log:
        L.log("attacks", "{scenario}", "{attack}", "s{seed}.log"),
    benchmark:
        L.benchmark("attacks", "{scenario}", "{attack}", "s{seed}.tsv")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    script:
        "../scripts/run_attack.py"
