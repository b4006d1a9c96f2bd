"""Rule pretrain_backbone: a synthetic pretraining set in memory -> backbones/<feat>.pt + history."""
import logging

from m4i.io import atomic_path, save_torch
from m4i.models.pretrain import pretrain_backbone
from m4i.workflow import run


def main(smk):
    spec = smk.config["features"][smk.wildcards.feat]
    state, history = pretrain_backbone(spec, spec["pretrain"], device=smk.config["device"])
    logging.getLogger("m4i.pretrain").info("last epoch: %s", history.iloc[-1].to_dict())
    save_torch(state, smk.output.weights)
    with atomic_path(smk.output.history) as tmp:
        history.to_csv(tmp, index=False)


run(snakemake, main)  # noqa: F821
