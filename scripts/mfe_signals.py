"""Rule mfe_signals: MFE x generated captions -> signals/mfe/<mfe_id>/<model>/<split>.parquet."""
from m4i.data.manifest import read_manifest
from m4i.io import load_torch, read_table, write_table
from m4i.mfe import mfe_signals
from m4i.workflow import run


def main(smk):
    manifest, root = read_manifest(smk.input.manifest)
    features = load_torch(smk.input.features[0]) if smk.input.features else None
    table = mfe_signals(load_torch(smk.input.mfe), read_table(smk.input.captions), manifest, root, features, device=smk.config["device"])
    write_table(table, smk.output[0])


run(snakemake, main)  # noqa: F821
