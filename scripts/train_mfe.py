"""Rule train_mfe: the attacker's combination set -> mfe/<id>.pt + retrieval quality."""
from m4i.data.manifest import split_records
from m4i.identity import MfeId
from m4i.io import load_torch, save_torch, write_json
from m4i.mfe import retrieval_quality, train_mfe
from m4i.seeding import mfe_seed
from m4i.workflow import run


def main(smk):
    mfe = MfeId.parse(smk.wildcards.mfe_id)
    records, root = split_records(smk.input.manifest, smk.input.splits, "mfe")
    heldout, _ = split_records(smk.input.manifest, smk.input.splits, "heldout")
    features = load_torch(smk.input.features[0]) if smk.input.features else None
    device = smk.config["device"]
    checkpoint = train_mfe(smk.config["mfe"][mfe.mfe], records, root, features, mfe_seed(mfe), device=device)
    save_torch(checkpoint, smk.output.model)
    write_json(retrieval_quality(checkpoint, heldout, root, features, device=device), smk.output.quality)


run(snakemake, main)  # noqa: F821
