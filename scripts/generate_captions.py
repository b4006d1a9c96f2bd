"""Rule generate_captions: one captioner x one split -> captions/<id>/<split>.parquet."""
from m4i.data.manifest import split_records
from m4i.identity import ModelId
from m4i.io import load_torch, write_table
from m4i.models.generate import generate_captions
from m4i.workflow import run


def main(smk):
    model = ModelId.parse(smk.wildcards.model)
    records, root = split_records(smk.input.manifest, smk.input.splits, smk.wildcards.split)
    features = load_torch(smk.input.features[0]) if smk.input.features else None
    checkpoint = load_torch(smk.input.model)
    decode = smk.config["captioners"][model.arch]["decode"]
    table = generate_captions(checkpoint, records, root, features, decode, device=smk.config["device"])
    write_table(table, smk.output[0], meta={"model": str(model), "split": smk.wildcards.split})


run(snakemake, main)  # noqa: F821
