"""Rule loglik_signals: one captioner x one split -> signals/loglik/<id>/<split>.parquet (gray-box)."""
from m4i.data.manifest import split_records
from m4i.io import load_torch, write_table
from m4i.models.features import load_features
from m4i.signals.loglik import reference_loglik
from m4i.workflow import run


def main(smk):
    records, root = split_records(list(smk.input.manifest), smk.input.splits, smk.wildcards.split)
    table = reference_loglik(load_torch(smk.input.model), records, root, load_features(smk.input.features),
                             device=smk.config["device"])
    write_table(table, smk.output[0])


run(snakemake, main)  # noqa: F821
