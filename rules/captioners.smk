# Frozen-backbone features -> captioners (target, shadows) -> generated captions -> quality.


rule pretrain_backbone:
    """Offline stand-in for ImageNet: train a backbone on its own synthetic scenes (no split's)."""
    output:
        weights=f"{R}/backbones/{{feat}}.pt",
        history=f"{R}/backbones/{{feat}}.pretrain.csv",
    params:
        config=lambda wc: stage_config(f"features.{wc.feat}", "device"),
    log:
        f"{R}/logs/backbones/{{feat}}.log",
    benchmark:
        f"{R}/benchmarks/backbones/{{feat}}.tsv"
    # Runs before any captioner can start, so it takes both cores of a 2-core machine.
    threads: max(2, THREADS)
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/pretrain_backbone.py"


rule features:
    """Run a frozen image backbone once per dataset; captioners and the paper MFE read this cache."""
    input:
        manifest=lambda wc: manifest(wc.dataset),
        backbone=lambda wc: pretrained_backbone(wc.feat),
    output:
        f"{R}/features/{{feat}}/{{dataset}}.pt",
    params:
        seed=0,
        config=lambda wc: stage_config(f"features.{wc.feat}"),
    log:
        f"{R}/logs/features/{{feat}}/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/features/{{feat}}/{{dataset}}.tsv"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/extract_features.py"


def _train_inputs(wc):
    role = wc.role.rstrip("0123456789")
    split = MEMBER_SPLIT[role]
    return {
        "manifest": manifest(wc.dataset),
        "splits": splits_file(wc.dataset, wc.seed),
        "vocab": f"{R}/vocab/{wc.dataset}/{PROTOCOL}-s{wc.seed}-{split}.json",
        "features": features_for(wc.dataset, arch_features(wc.arch)),
    }


rule train_captioner:
    """Train one captioner on its member split; resumable from models/<id>.resume.pt."""
    input:
        unpack(_train_inputs),
    output:
        model=f"{R}/models/{{dataset}}-{{arch}}-{{role}}-s{{seed}}.pt",
        loss=f"{R}/models/{{dataset}}-{{arch}}-{{role}}-s{{seed}}.loss.csv",
    params:
        seed=lambda wc: int(wc.seed),
        member_split=lambda wc: MEMBER_SPLIT[wc.role.rstrip("0123456789")],
        resume=lambda wc: f"{R}/models/{wc.dataset}-{wc.arch}-{wc.role}-s{wc.seed}.resume.pt",
        config=lambda wc: stage_config(f"captioners.{wc.arch}", "device"),
    log:
        f"{R}/logs/models/{{dataset}}-{{arch}}-{{role}}-s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/models/{{dataset}}-{{arch}}-{{role}}-s{{seed}}.tsv"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/train_captioner.py"


def _generate_inputs(wc):
    mid = parse_model_id(wc.model)
    return {
        "model": f"{R}/models/{wc.model}.pt",
        "manifest": manifest(mid["dataset"]),
        "splits": splits_file(mid["dataset"], mid["seed"]),
        "features": features_for(mid["dataset"], arch_features(mid["arch"])),
    }


rule generate_captions:
    """Batched decoding of one captioner on one split: caption and per-token log-probs per record."""
    input:
        unpack(_generate_inputs),
    output:
        f"{R}/captions/{{model}}/{{split}}.parquet",
    params:
        arch=lambda wc: parse_model_id(wc.model)["arch"],
        config=lambda wc: stage_config(f"captioners.{parse_model_id(wc.model)['arch']}.decode", "device"),
    log:
        f"{R}/logs/captions/{{model}}/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/captions/{{model}}/{{split}}.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/generate_captions.py"


def _utility_inputs(wc):
    mid = parse_model_id(wc.model)
    return {
        "heldout": captions(wc.model, "heldout"),
        "members": captions(wc.model, MEMBER_SPLIT[mid["role"]]),
        "manifest": manifest(mid["dataset"]),
        "splits": splits_file(mid["dataset"], mid["seed"]),
    }


rule caption_quality:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr on held-out records and on the model's own members."""
    input:
        unpack(_utility_inputs),
    output:
        f"{R}/utility/{{model}}.json",
    params:
        member_split=lambda wc: MEMBER_SPLIT[parse_model_id(wc.model)["role"]],
    log:
        f"{R}/logs/utility/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/utility/{{model}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/caption_quality.py"
