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


def _attack_inputs(key):
    """Every file the attacks of scenario ``key`` read (each once), at the job's seed."""

    def inputs(wc):
        seed = int(wc.seed)
        return sorted(flat_paths(v for a in PLAN.scenario(key, seed).attacks
                                 for v in PLAN.attack_inputs(key, a, seed).values()))

    return inputs


def _attack_params(key):
    """Per attack of scenario ``key``: its identity, named inputs and their rows, config and outputs
    (each attack's provenance sidecar records its own); keys sorted (``canonical``): the order of
    the config's attacks reruns nothing."""

    def params(wc):
        seed = int(wc.seed)
        return canonical({a: {"identity": PLAN.attack(a).fields(), "inputs": PLAN.attack_inputs(key, a, seed),
                    "input_rows": PLAN.input_rows(key, a, seed), "config": stage_config(f"attacks.{a}", "evaluation"),
                    "scores": L.attack_scores(key, a, seed), "metrics": L.attack_metrics(key, a, seed)}
                for a in PLAN.scenario(key, seed).attacks})

    return params


def _scenario_param(key, value):
    """A param of scenario ``key`` at the job's seed: ``value(its ScenarioPlan)``."""
    return lambda wc: value(PLAN.scenario(key, int(wc.seed)))


# One rule per scenario (its outputs are its attacks' files, whose number differs between
# scenarios), one job per scenario and seed: fit on the shadows' members/non-members (or the
# reference models'), score the target's; per-record scores + metrics for every attack.
for _key, _attacks in PLAN.attack_jobs().items():

    rule:  # attack_<scenario>
        name:
            PLAN.attack_rule(_key)
        input:
            _attack_inputs(_key),
        output:
            [L.attack_scores(_key, a, "{seed}") for a in _attacks] + [L.attack_metrics(_key, a, "{seed}") for a in _attacks],
        params:
            seed=lambda wc: int(wc.seed),
            scenario=_scenario_param(_key, lambda plan: plan.id.fields()),
            target_model=_scenario_param(_key, lambda plan: str(plan.target)),
            shadow_models=_scenario_param(_key, lambda plan: [str(m) for m in plan.shadows]),
            reference_models=_scenario_param(_key, lambda plan: [str(m) for m in plan.refs]),
            attacks=_attack_params(_key),
            code=code("run_attack.py"),
        log:
            L.log("attacks", _key, "s{seed}.log"),
        benchmark:
            L.benchmark("attacks", _key, "s{seed}.tsv")
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        # the Slurm profile's `groups:` names rules, and these names come from the config: the
        # group is set here instead (ignored by a local run)
        group:
            "attack"
        conda:
            ENV
        script:
            "../scripts/run_attack.py"
