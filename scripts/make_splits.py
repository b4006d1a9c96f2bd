"""Rule splits: manifest(s) -> splits/<dataset>/<protocol>-s<k>.json."""
from m4i.data.manifest import read_manifest
from m4i.data.splits import make_splits
from m4i.io import write_json
from m4i.workflow import run


def main(smk):
    manifest, _ = read_manifest(smk.input.manifest)
    nonmembers = read_manifest(smk.input.nonmembers[0])[0] if smk.input.nonmembers else None
    splits = make_splits(
        manifest,
        smk.wildcards.dataset,
        smk.config["splits"]["sizes"],
        smk.params.seed,
        protocol=smk.wildcards.protocol,
        nonmember_manifest=nonmembers,
        nonmember_dataset=smk.params.nonmember_dataset,
    )
    write_json(splits, smk.output[0])


run(snakemake, main)  # noqa: F821
