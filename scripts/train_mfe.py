"""Rule train_mfe: the attacker's combination set -> mfe/<id>.pt + retrieval quality."""
from m4i.data.manifest import split_records
from m4i.io import load_torch, save_torch, write_json
from m4i.mfe import retrieval_quality, train_mfe
from m4i.seeding import derive_seed
from m4i.workflow import run


def main(smk):
    records, root = split_records(smk.input.manifest, smk.input.splits, "mfe")
    heldout, _ = split_records(smk.input.manifest, smk.input.splits, "heldout")
    features = load_torch(smk.input.features[0]) if smk.input.features else None
    device = smk.config["device"]
    seed = derive_seed(smk.params.seed, "mfe", smk.wildcards.mfe, smk.wildcards.dataset)
    checkpoint = train_mfe(smk.config["mfe"][smk.wildcards.mfe], records, root, features, seed, device=device)
    save_torch(checkpoint, smk.output.model)
    write_json(retrieval_quality(checkpoint, heldout, root, features, device=device), smk.output.quality)


run(snakemake, main)  # noqa: F821
