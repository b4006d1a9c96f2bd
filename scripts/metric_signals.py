"""Rule metric_signals: generated captions x references -> signals/metrics/<id>/<split>.parquet.

CIDEr's corpus statistics come from the references of the split file's ``mfe`` split (the
attacker's own records), the same for every table scored, never from the scored split."""
from m4i.attacks.queries import map_queries
from m4i.data.manifest import read_manifests
from m4i.io import read_json, read_table, write_table
from m4i.signals.caption_metrics import attacker_corpus, metric_signals
from m4i.workflow import run


def main(smk):
    manifest, _ = read_manifests(list(smk.input.manifest))
    captions = read_table(smk.input.captions)
    # The corpus, every query's captions and their references in one tokenizer run (one JVM
    # start per job).
    refs = dict(zip(manifest["record_id"].astype(str), manifest["captions"]))
    idf = attacker_corpus(manifest, read_json(smk.input.splits),
                          also=[*captions["caption"].fillna("").astype(str),
                                *(c for r in set(captions["record_id"].astype(str)) for c in refs.get(r, []))])
    write_table(map_queries(captions, lambda c: metric_signals(c, manifest, idf)), smk.output[0])


run(snakemake, main)  # noqa: F821
