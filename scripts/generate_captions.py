"""Rule generate_captions: one captioner x one split -> captions/<id>/<split>.parquet."""
from m4i.data.manifest import split_records
from m4i.io import load_torch, write_table
from m4i.models.generate import generate_captions
from m4i.workflow import run


def main(smk):
    records, root = split_records(smk.input.manifest, smk.input.splits, smk.wildcards.split)
    features = load_torch(smk.input.features[0]) if smk.input.features else None
    checkpoint = load_torch(smk.input.model)
    decode = smk.params.config[f"captioners.{smk.params.arch}.decode"]
    table = generate_captions(checkpoint, records, root, features, decode, device=smk.config["device"])
    write_table(table, smk.output[0], meta={"model": smk.wildcards.model, "split": smk.wildcards.split})


run(snakemake, main)  # noqa: F821
