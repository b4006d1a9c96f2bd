"""Rule caption_quality: held-out and member captions of one captioner -> utility/<id>.json."""
from m4i.data.manifest import read_manifest, split_records
from m4i.io import read_table, write_json
from m4i.models.quality import caption_quality
from m4i.workflow import run


def main(smk):
    manifest, _ = read_manifest(smk.input.manifest)
    train_records, _ = split_records(smk.input.manifest, smk.input.splits, smk.params.member_split)
    quality = caption_quality(read_table(smk.input.heldout), read_table(smk.input.members), manifest, train_records)
    write_json(quality, smk.output[0])


run(snakemake, main)  # noqa: F821
