# Datasets -> manifests -> splits -> vocabularies.


rule synthetic_manifest:
    """Generate an embedded synthetic dataset (images + five captions each) from its seed."""
    output:
        manifest=f"{R}/data/{{dataset}}/manifest.parquet",
        images=directory(f"{R}/data/{{dataset}}/images"),
    params:
        config=lambda wc: stage_config(f"datasets.{wc.dataset}"),
    wildcard_constraints:
        dataset=_alternatives(SYNTHETIC),
    log:
        f"{R}/logs/data/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}.tsv"
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
        manifest=f"{R}/data/{{dataset}}/manifest.parquet",
    params:
        config=lambda wc: stage_config(f"datasets.{wc.dataset}"),
    wildcard_constraints:
        dataset=_alternatives(REAL),
    log:
        f"{R}/logs/data/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}.tsv"
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
        manifest=lambda wc: manifest(wc.dataset),
        nonmembers=lambda wc: [manifest(d)] if (d := nonmember_dataset(wc.dataset, wc.protocol)) else [],
    output:
        f"{R}/splits/{{dataset}}/{{protocol}}-s{{seed}}.json",
    params:
        seed=lambda wc: int(wc.seed),
        nonmember_dataset=lambda wc: nonmember_dataset(wc.dataset, wc.protocol),
        config=lambda wc: stage_config("splits"),
    log:
        f"{R}/logs/splits/{{dataset}}/{{protocol}}-s{{seed}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/make_splits.py"


rule vocab:
    """Vocabulary of one training split (JSON, count threshold from config)."""
    input:
        manifest=lambda wc: manifest(wc.dataset),
        splits=f"{R}/splits/{{dataset}}/{{protocol}}-s{{seed}}.json",
    output:
        f"{R}/vocab/{{dataset}}/{{protocol}}-s{{seed}}-{{split}}.json",
    params:
        config=lambda wc: stage_config("vocab"),
    log:
        f"{R}/logs/vocab/{{dataset}}/{{protocol}}-s{{seed}}-{{split}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/build_vocab.py"
