"""Rule generate_captions: one captioner x one split -> captions/<id>/<split>.parquet."""
from m4i.data.manifest import split_records
from m4i.identity import ModelId
from m4i.io import load_torch, write_table
from m4i.models.features import load_features
from m4i.models.generate import generate_captions
from m4i.seeding import decode_seed
from m4i.workflow import run


def main(smk):
    model = ModelId.parse(smk.wildcards.model)
    records, root = split_records(list(smk.input.manifest), smk.input.splits, smk.wildcards.split)
    decode = dict(smk.params.decode)
    seed = decode_seed(model) if decode.get("method") == "sample" else None
    table = generate_captions(load_torch(smk.input.model), records, root, load_features(smk.input.features), decode,
                              device=smk.config["device"], seed=seed)
    write_table(table, smk.output[0], meta={"model": str(model), "split": smk.wildcards.split})


run(snakemake, main)  # noqa: F821
