"""Rule train_captioner: member split + vocabulary (+ feature cache) -> models/<id>.pt and loss table."""
from m4i.data.manifest import split_records
from m4i.io import atomic_path, load_torch, read_json
from m4i.models.train import train_captioner
from m4i.seeding import derive_seed
from m4i.workflow import run


def main(smk):
    records, root = split_records(smk.input.manifest, smk.input.splits, smk.params.member_split)
    features = load_torch(smk.input.features[0]) if smk.input.features else None
    model_id = smk.output.model.rsplit("/", 1)[-1][: -len(".pt")]
    loss = train_captioner(
        smk.config["captioners"][smk.wildcards.arch],
        records,
        root,
        features,
        read_json(smk.input.vocab)["tokens"],
        derive_seed(smk.params.seed, "train", model_id),
        smk.output.model,
        smk.params.resume,
        device=smk.config["device"],
    )
    with atomic_path(smk.output.loss) as tmp:
        loss.to_csv(tmp, index=False)


run(snakemake, main)  # noqa: F821
