"""Rule metric_signals: generated captions x references -> signals/metrics/<id>/<split>.parquet."""
from m4i.data.manifest import read_manifest
from m4i.io import read_table, write_table
from m4i.signals.caption_metrics import metric_signals
from m4i.workflow import run


def main(smk):
    manifest, _ = read_manifest(smk.input.manifest)
    write_table(metric_signals(read_table(smk.input.captions), manifest), smk.output[0])


run(snakemake, main)  # noqa: F821
