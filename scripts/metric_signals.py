"""Rule metric_signals: generated captions x references -> signals/metrics/<id>/<split>.parquet."""
from m4i.attacks.queries import map_queries
from m4i.data.manifest import read_manifests
from m4i.io import read_table, write_table
from m4i.signals.caption_metrics import metric_signals, pretokenize
from m4i.workflow import run


def main(smk):
    manifest, _ = read_manifests(list(smk.input.manifest))
    captions = read_table(smk.input.captions)
    # Every query's captions and their references in one tokenizer run (one JVM start per job).
    refs = dict(zip(manifest["record_id"].astype(str), manifest["captions"]))
    pretokenize([*captions["caption"].fillna("").astype(str),
                 *(c for r in set(captions["record_id"].astype(str)) for c in refs.get(r, []))])
    write_table(map_queries(captions, lambda c: metric_signals(c, manifest)), smk.output[0])


run(snakemake, main)  # noqa: F821
