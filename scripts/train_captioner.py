"""Rule train_captioner: the model's members (+ feature cache) -> models/<id>.pt, loss table, members."""
from m4i import defenses
from m4i.data.manifest import read_manifests, select
from m4i.data.membership import model_members
from m4i.data.vocab import training_vocab
from m4i.identity import ModelId
from m4i.io import atomic_path, read_json, sha256_file, write_json
from m4i.models.features import load_features
from m4i.models.train import train_captioner
from m4i.seeding import train_seed
from m4i.workflow import run


def main(smk):
    model = ModelId.parse(smk.wildcards.model)
    manifest, root = read_manifests(list(smk.input.manifest))
    splits = read_json(smk.input.splits)
    membership = model_members(model, splits, n_refs=smk.params.n_refs)
    records = select(manifest, membership["members"], what=f"members of {model}")
    vocab = training_vocab(records, smk.config["vocab"]["min_count"])
    arch, recipe = smk.config["captioners"][model.arch], None
    if smk.params.defense:  # a training-side defense: its captioner settings and training pieces
        cfg = smk.params.defense
        arch = defenses.arch_for(cfg, arch)
        val_ids = splits["splits"].get("val")  # early stopping's own split; never target_out/heldout
        validation = select(manifest, val_ids, what="val split") if val_ids else None
        recipe = defenses.recipe_for(cfg, validation=validation, n_images=len(records))
    loss = train_captioner(
        arch,
        records,
        root,
        load_features(smk.input.features),
        vocab["tokens"],
        train_seed(model),
        smk.output.model,
        smk.params.resume,
        device=smk.config["device"],
        recipe=recipe,
        name=str(model),
    )
    with atomic_path(smk.output.loss) as tmp:
        loss.to_csv(tmp, index=False)
    write_json({**model.fields(), "splits": smk.input.splits, "splits_sha256": sha256_file(smk.input.splits),
                **membership, "vocab": vocab}, smk.output.members)


run(snakemake, main)  # noqa: F821
