"""Rule blind_signals: image + reference captions only -> signals/blind/<dataset>/<protocol>-s<k>/<split>.parquet."""
import pandas as pd

from m4i.attacks.blind import blind_signals
from m4i.data.manifest import read_manifest
from m4i.io import read_json, write_table
from m4i.workflow import run


def main(smk):
    ids = read_json(smk.input.splits)["splits"][smk.wildcards.split]
    tables = []
    # The confounded protocol mixes two datasets (two image roots): score each part against its own.
    for path in smk.input.manifests:
        manifest, root = read_manifest(path)
        own = [r for r in ids if r in set(manifest["record_id"])]
        if own:
            tables.append(blind_signals(manifest, root, own))
    table = pd.concat(tables, ignore_index=True).set_index("record_id").loc[ids].reset_index()
    write_table(table, smk.output[0])


run(snakemake, main)  # noqa: F821
