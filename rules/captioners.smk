# Frozen-backbone features -> captioners (targets, shadows) -> generated captions -> quality.


rule pretrain_backbone:
    """Offline stand-in for ImageNet: train a backbone on its own synthetic scenes (no split's)."""
    output:
        weights=L.backbone("{feat}"),
        history=L.backbone_history("{feat}"),
    params:
        config=lambda wc: stage_config(f"features.{wc.feat}", "device"),
        code=code("pretrain_backbone.py"),
    log:
        L.log("backbones", "{feat}.log"),
    benchmark:
        L.benchmark("backbones", "{feat}.tsv")
    # Runs before any captioner can start, so it takes both cores of a 2-core machine (measured on
    # the quick default: 59 s with 2 threads, 113 s with 1 while a ViT-GPT-2 shadow and the CLIP
    # MFE ran beside it; the whole run was no faster, 21 min 47 s vs 21 min 18 s).
    threads: max(2, THREADS)
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/pretrain_backbone.py"


def _pretrained_backbone(wc):
    """The pretrain_backbone output a features spec starts from, if it asks for pretraining."""
    return [L.backbone(wc.feat)] if config["features"][wc.feat].get("pretrain") else []


rule features:
    """Run a frozen image backbone once per dataset; captioners and the paper MFE read this cache."""
    input:
        manifest=lambda wc: L.manifest(wc.dataset),
        backbone=_pretrained_backbone,
    output:
        L.features("{feat}", "{dataset}"),
    params:
        config=lambda wc: stage_config(f"features.{wc.feat}"),
        code=code("extract_features.py"),
    log:
        L.log("features", "{feat}", "{dataset}.log"),
    benchmark:
        L.benchmark("features", "{feat}", "{dataset}.tsv")
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
    m = model_of(wc)
    return {
        "manifest": PLAN.manifests_of(m),
        "splits": PLAN.splits_of(m),
        "features": PLAN.features_of(m, PLAN.arch_features(m.arch)),
    }


def _defense_module(m):
    return (f"m4i.defenses.{PLAN.defense(m.defense)['kind']}",) if m.defense else ()


rule train_captioner:
    """Train one captioner on its members (m4i.data.membership), with its defense if it has one;
    resumable from models/<id>.resume.pt."""
    input:
        unpack(_train_inputs),
    output:
        model=L.model("{model}"),
        loss=L.model_loss("{model}"),
        members=L.model_members("{model}"),
    params:
        resume=lambda wc: L.model_resume(wc.model),
        seed=lambda wc: model_of(wc).seed,
        n_refs=lambda wc: PLAN.n_refs(model_of(wc)),
        defense=lambda wc: canonical(PLAN.defense(model_of(wc).defense)),
        config=lambda wc: stage_config(f"captioners.{model_of(wc).arch}", "vocab", "device")
        | ({f"defenses.{model_of(wc).defense}": canonical(PLAN.defense(model_of(wc).defense))} if model_of(wc).defense else {}),
        code=lambda wc: code("train_captioner.py", *_defense_module(model_of(wc))),
    log:
        L.log("models", "{model}.log"),
    benchmark:
        L.benchmark("models", "{model}.tsv")
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
    m = model_of(wc)
    return {
        "model": L.model(PLAN.weights_of(m)),
        "manifest": PLAN.manifests_of(m),
        "splits": PLAN.splits_of(m),
        "features": PLAN.features_of(m, PLAN.arch_features(m.arch)),
    }


rule generate_captions:
    """Batched decoding of one captioner on every split read of it (``Plan.caption_splits``), one
    split at a time, in one job: caption(s) and per-token log-probs per record (with the decode
    settings the model answers with: an output-side defense's own)."""
    input:
        unpack(_generate_inputs),
    output:
        L.captions("{model}"),
    params:
        splits=lambda wc: PLAN.caption_splits(model_of(wc)),
        decode=lambda wc: canonical(PLAN.decode_of(model_of(wc))),
        config=lambda wc: stage_config(f"captioners.{model_of(wc).arch}.decode", "device"),
        code=code("generate_captions.py"),
    log:
        L.log("captions", "{model}.log"),
    benchmark:
        L.benchmark("captions", "{model}.tsv")
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=30,
        gpu=GPU,
    conda:
        ENV
    script:
        "../scripts/generate_captions.py"


def _utility_inputs(wc):
    m = model_of(wc)
    return {
        "captions": L.captions(m),  # its heldout and pool splits (members), among others
        "members": L.model_members(PLAN.weights_of(m)),
        "manifest": PLAN.manifests_of(m),
        "splits": PLAN.splits_of(m),  # its mfe split: CIDEr's fixed corpus
        "paraphrase": L.meteor_table(),
        "paraphrase_vocab": L.meteor_vocab(),
    }


rule caption_quality:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr on held-out records and on the model's own members."""
    input:
        unpack(_utility_inputs),
    output:
        L.utility("{model}"),
    params:
        seed=lambda wc: model_of(wc).seed,
        code=code("caption_quality.py"),
    log:
        L.log("utility", "{model}.log"),
    benchmark:
        L.benchmark("utility", "{model}.tsv")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/caption_quality.py"
