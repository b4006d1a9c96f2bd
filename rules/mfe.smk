# The attacker's multi-modal feature extractors (trained on its combination set) -> FB signals.


def _mfe_train_inputs(wc):
    feat = config["mfe"][wc.mfe].get("features") if config["mfe"][wc.mfe]["kind"] == "paper" else None
    return {
        "manifest": manifest(wc.dataset),
        "splits": splits_file(wc.dataset, wc.seed),
        "features": features_for(wc.dataset, feat),
    }


rule train_mfe:
    """Train an MFE on the `mfe` split of the shadow's dataset; image->text retrieval on `heldout`."""
    input:
        unpack(_mfe_train_inputs),
    output:
        model=f"{R}/mfe/{{mfe}}-{{dataset}}-s{{seed}}.pt",
        quality=f"{R}/mfe/{{mfe}}-{{dataset}}-s{{seed}}.quality.json",
    params:
        seed=lambda wc: int(wc.seed),
        config=lambda wc: stage_config(f"mfe.{wc.mfe}", "device"),
    log:
        f"{R}/logs/mfe/{{mfe}}-{{dataset}}-s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/mfe/{{mfe}}-{{dataset}}-s{{seed}}.tsv"
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
    mfe_name = wc.mfe_id.split("-")[0]
    mid = parse_model_id(wc.model)
    feat = config["mfe"][mfe_name].get("features") if config["mfe"][mfe_name]["kind"] == "paper" else None
    return {
        "mfe": f"{R}/mfe/{wc.mfe_id}.pt",
        "captions": captions(wc.model, wc.split),
        "manifest": manifest(mid["dataset"]),
        "features": features_for(mid["dataset"], feat),
    }


rule mfe_signals:
    """|f_img - f_txt| and cosine similarity of each image and its generated caption."""
    input:
        unpack(_mfe_signal_inputs),
    output:
        f"{R}/signals/mfe/{{mfe_id}}/{{model}}/{{split}}.parquet",
    wildcard_constraints:
        mfe_id="[A-Za-z0-9]+-[A-Za-z0-9]+-s[0-9]+",
    log:
        f"{R}/logs/signals/mfe/{{mfe_id}}/{{model}}/{{split}}.log",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/mfe_signals.py"
