# Datasets -> manifests -> splits.


rule synthetic_manifest:
    """Generate an embedded synthetic dataset (images + five captions each) from its seed."""
    output:
        manifest=L.manifest("{dataset}"),
        images=directory(L.images("{dataset}")),
    params:
        config=lambda wc: stage_config(f"datasets.{wc.dataset}"),
        code=code("build_manifest.py"),
    wildcard_constraints:
        dataset=_alternatives(SYNTHETIC),
    log:
        L.log("data", "{dataset}.log"),
    benchmark:
        L.benchmark("data", "{dataset}.tsv")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    script:
        "../scripts/build_manifest.py"


rule real_manifest:
    """Index a real dataset in place (Flickr8k, COCO, CSV/JSONL): ids, relative paths, hashes."""
    output:
        manifest=L.manifest("{dataset}"),
    params:
        config=lambda wc: stage_config(f"datasets.{wc.dataset}"),
        code=code("build_manifest.py"),
    wildcard_constraints:
        dataset=_alternatives(REAL),
    log:
        L.log("data", "{dataset}.log"),
    benchmark:
        L.benchmark("data", "{dataset}.tsv")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/build_manifest.py"


rule splits:
    """Seeded disjoint splits (or the labelled confounded paper protocol), with content hashes."""
    input:
        manifest=lambda wc: L.manifest(wc.dataset),
        nonmembers=lambda wc: [L.manifest(d)] if (d := PLAN.nonmember_dataset(wc.dataset, wc.protocol)) else [],
    output:
        L.splits("{dataset}", "{protocol}", "{seed}"),
    params:
        seed=lambda wc: int(wc.seed),
        nonmember_dataset=lambda wc: PLAN.nonmember_dataset(wc.dataset, wc.protocol),
        # only what make_splits reads (the protocol is a wildcard): the confounded control's
        # attack list is no property of a split, and editing it must not rerun the study
        config=lambda wc: stage_config("splits.sizes"),
        code=code("make_splits.py"),
    log:
        L.log("splits", "{dataset}", "{protocol}-s{seed}.log"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/make_splits.py"


rule meteor_paraphrase:
    """METEOR's paraphrase table cut to the words of the study's reference captions, once per
    study: each METEOR start then loads it in under a second instead of ~14 CPU-s (same scores)."""
    input:
        manifests=[L.manifest(d) for d in config["datasets"]],
    output:
        table=L.meteor_table(),
        vocab=L.meteor_vocab(),
    params:
        code=code("meteor_paraphrase.py"),
    log:
        L.log("data", "meteor-paraphrase.log"),
    benchmark:
        L.benchmark("data", "meteor-paraphrase.tsv")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        ENV
    script:
        "../scripts/meteor_paraphrase.py"
