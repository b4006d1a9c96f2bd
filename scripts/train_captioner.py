"""Rule train_captioner: the model's members (+ feature cache) -> models/<id>.pt, loss table, members."""
from m4i.data.manifest import read_manifest, select
from m4i.data.membership import model_members
from m4i.data.vocab import training_vocab
from m4i.identity import ModelId
from m4i.io import atomic_path, load_torch, read_json, sha256_file, write_json
from m4i.models.train import train_captioner
from m4i.seeding import train_seed
from m4i.workflow import run


def main(smk):
    model = ModelId.parse(smk.wildcards.model)
    manifest, root = read_manifest(smk.input.manifest)
    membership = model_members(model, read_json(smk.input.splits))
    records = select(manifest, membership["members"], what=f"members of {model}")
    vocab = training_vocab(records, smk.config["vocab"]["min_count"])
    features = load_torch(smk.input.features[0]) if smk.input.features else None
    loss = train_captioner(
        smk.config["captioners"][model.arch],
        records,
        root,
        features,
        vocab["tokens"],
        train_seed(model),
        smk.output.model,
        smk.params.resume,
        device=smk.config["device"],
        name=str(model),
    )
    with atomic_path(smk.output.loss) as tmp:
        loss.to_csv(tmp, index=False)
    write_json({**model.fields(), "splits": smk.input.splits, "splits_sha256": sha256_file(smk.input.splits),
                **membership, "vocab": vocab}, smk.output.members)


run(snakemake, main)  # noqa: F821
