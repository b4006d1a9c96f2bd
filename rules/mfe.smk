# The attacker's multi-modal feature extractors (trained on its combination set) -> FB signals.


def _mfe_train_inputs(wc):
    m = MfeId.parse(wc.mfe_id)
    return {
        "manifest": L.manifest(m.dataset),
        "splits": L.splits(m.dataset, m.protocol, m.seed),
        "features": [L.features(f, m.dataset) for f in [PLAN.mfe_features(m.mfe)] if f],
    }


rule train_mfe:
    """Train an MFE on the `mfe` split of the shadow's dataset; image->text retrieval on `heldout`."""
    input:
        unpack(_mfe_train_inputs),
    output:
        model=L.mfe("{mfe_id}"),
        quality=L.mfe_quality("{mfe_id}"),
    params:
        seed=lambda wc: MfeId.parse(wc.mfe_id).seed,
        config=lambda wc: stage_config(f"mfe.{MfeId.parse(wc.mfe_id).mfe}", "device"),
        code=code("train_mfe.py"),
    log:
        L.log("mfe", "{mfe_id}.log"),
    benchmark:
        L.benchmark("mfe", "{mfe_id}.tsv")
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/train_mfe.py"


def _mfe_parts(wc):
    """[mfe_id, split] pairs the model's one mfe_signals job scores (Plan.signal_parts)."""
    return [[mfe, split] for mfe, split in PLAN.signal_parts("mfe", model_of(wc))]


def _mfe_features(wc):
    """Per MFE the model's job uses: the feature caches it reads (none for open_clip)."""
    m = model_of(wc)
    return {mfe: PLAN.features_of(m, PLAN.mfe_features(MfeId.parse(mfe).mfe)) for mfe, _ in _mfe_parts(wc)}


def _mfe_signal_inputs(wc):
    m, parts = model_of(wc), _mfe_parts(wc)
    return {
        "mfe": sorted({L.mfe(mfe) for mfe, _ in parts}),
        "captions": L.captions(m),
        "manifest": PLAN.manifests_of(m),
        "features": sorted({f for fs in _mfe_features(wc).values() for f in fs}),
    }


rule mfe_signals:
    """|f_img - f_txt| and cosine similarity of each image and its generated caption, under every
    MFE an FB attack reads the captioner through, for each split it reads: one job per captioner."""
    input:
        unpack(_mfe_signal_inputs),
    output:
        L.mfe_signals("{model}"),
    params:
        parts=_mfe_parts,
        mfe_paths=lambda wc: {mfe: L.mfe(mfe) for mfe, _ in _mfe_parts(wc)},
        features=_mfe_features,
        code=code("mfe_signals.py"),
    log:
        L.log("signals", "mfe", "{model}.log"),
    benchmark:
        L.benchmark("signals", "mfe", "{model}.tsv")
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=15,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/mfe_signals.py"
