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


def _mfe_signal_inputs(wc):
    mfe, m = MfeId.parse(wc.mfe_id), model_of(wc)
    return {
        "mfe": L.mfe(mfe),
        "captions": L.captions(m, wc.split),
        "manifest": PLAN.manifests_of(m),
        "features": PLAN.features_of(m, PLAN.mfe_features(mfe.mfe)),
    }


rule mfe_signals:
    """|f_img - f_txt| and cosine similarity of each image and its generated caption."""
    input:
        unpack(_mfe_signal_inputs),
    output:
        L.mfe_signals("{mfe_id}", "{model}", "{split}"),
    params:
        code=code("mfe_signals.py"),
    log:
        L.log("signals", "mfe", "{mfe_id}", "{model}", "{split}.log"),
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=15,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/mfe_signals.py"
