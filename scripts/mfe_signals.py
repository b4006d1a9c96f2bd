"""Rule mfe_signals: MFE x generated captions -> signals/mfe/<mfe_id>/<model>/<split>.parquet."""
from m4i.attacks.queries import map_queries
from m4i.data.manifest import read_manifests
from m4i.io import load_torch, read_table, write_table
from m4i.mfe import mfe_signals
from m4i.models.features import load_features
from m4i.workflow import run


def main(smk):
    manifest, root = read_manifests(list(smk.input.manifest))
    features = load_features(smk.input.features)
    checkpoint = load_torch(smk.input.mfe)
    table = map_queries(read_table(smk.input.captions),
                        lambda c: mfe_signals(checkpoint, c, manifest, root, features, device=smk.config["device"]))
    write_table(table, smk.output[0])


run(snakemake, main)  # noqa: F821
