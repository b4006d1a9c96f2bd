"""Rule vocab: the captions of one training split -> vocabulary JSON."""
from m4i.data.manifest import read_manifest, select
from m4i.data.vocab import vocab_for_split
from m4i.io import read_json, sha256_file, write_json
from m4i.workflow import run


def main(smk):
    manifest, _ = read_manifest(smk.input.manifest)
    splits = read_json(smk.input.splits)
    split = smk.wildcards.split
    records = select(manifest, splits["splits"][split], what=f"{smk.input.splits} split {split}")
    vocab = vocab_for_split(records, split, sha256_file(smk.input.splits), smk.config["vocab"]["min_count"])
    write_json(vocab, smk.output[0])


run(snakemake, main)  # noqa: F821
