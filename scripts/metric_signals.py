"""Rule metric_signals: generated captions x references -> signals/metrics/<id>.parquet.

Every split of one captioner an attack reads, in one job: METEOR's JVM spends ~15-20 CPU-s
loading its paraphrase table before it scores anything (measured), so one job per split paid
that once per split. Each split is scored on its own (``metric_signals`` per split and query, as
before), and rows carry their ``split``; readers select one with ``m4i.io.read_split``.

CIDEr's corpus statistics come from the references of the split file's ``mfe`` split (the
attacker's own records), the same for every table scored, never from the scored split."""
from m4i.attacks.queries import map_queries
from m4i.data.manifest import read_manifests
from m4i.io import M4IError, read_json, read_table, select_part, write_table
from m4i.progress import Progress
from m4i.signals.caption_metrics import attacker_corpus, metric_signals, use_paraphrase_table
from m4i.workflow import run


def main(smk):
    import pandas as pd

    splits = list(smk.params.splits)
    if not splits:
        raise M4IError(f"metric_signals {smk.wildcards.model}: no split to score")
    manifest, _ = read_manifests(list(smk.input.manifest))
    use_paraphrase_table(smk.input.paraphrase, smk.input.paraphrase_vocab)
    captions = read_table(smk.input.captions)
    tables = [select_part(captions, s, where=smk.input.captions) for s in splits]
    # The corpus, every split's and query's captions and their references in one tokenizer run
    # (one JVM start per job).
    refs = dict(zip(manifest["record_id"].astype(str), manifest["captions"]))
    texts = [t for c in tables for t in c["caption"].fillna("").astype(str)]
    ids = {r for c in tables for r in c["record_id"].astype(str)}
    idf = attacker_corpus(manifest, read_json(smk.input.splits), also=[*texts, *(c for r in sorted(ids) for c in refs.get(r, []))])
    progress = Progress(f"metric signals {smk.wildcards.model}", len(splits), unit="split")
    parts = []
    for done, (split, captions) in enumerate(zip(splits, tables), start=1):
        part = map_queries(captions, lambda c: metric_signals(c, manifest, idf))
        part.insert(0, "split", split)
        parts.append(part)
        progress.update(done, records=len(captions))
    write_table(pd.concat(parts, ignore_index=True), smk.output[0])


run(snakemake, main)  # noqa: F821
