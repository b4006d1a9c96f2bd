"""Rule features: a frozen backbone over every image of a dataset -> features/<feat>/<dataset>.pt."""
from m4i.data.manifest import read_manifest
from m4i.io import save_torch
from m4i.models.features import extract_features
from m4i.seeding import features_seed
from m4i.workflow import run


def main(smk):
    manifest, root = read_manifest(smk.input.manifest)
    feat = smk.wildcards.feat
    spec = dict(smk.config["features"][feat], device=smk.config["device"])
    if smk.input.backbone:  # a pretrained backbone replaces the spec's starting weights
        spec["weights"] = smk.input.backbone[0]
    save_torch(extract_features(manifest, root, spec, features_seed(feat, spec)), smk.output[0])


run(snakemake, main)  # noqa: F821
