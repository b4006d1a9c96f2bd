"""Rule synthetic_manifest / real_manifest: one dataset -> manifest.parquet."""
from pathlib import Path

from m4i.data.manifest import build_manifest, manifest_meta
from m4i.io import write_table
from m4i.workflow import run


def main(smk):
    dataset = smk.wildcards.dataset
    cfg = smk.config["datasets"][dataset]
    df, root = build_manifest(dataset, cfg, Path(smk.output.manifest).parent)
    write_table(df, smk.output.manifest, meta=manifest_meta(dataset, cfg, root))


run(snakemake, main)  # noqa: F821 - injected by Snakemake
