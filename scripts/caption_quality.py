"""Rule caption_quality: held-out and member captions of one captioner -> utility/<id>.json."""
import pandas as pd

from m4i.attacks.queries import first_query
from m4i.data.manifest import read_manifests, select
from m4i.data.membership import pool_splits
from m4i.identity import ModelId
from m4i.io import read_json, read_table, select_part, write_json
from m4i.models.quality import caption_quality
from m4i.signals.caption_metrics import attacker_corpus, use_paraphrase_table
from m4i.workflow import run


def main(smk):
    manifest, _ = read_manifests(list(smk.input.manifest))
    use_paraphrase_table(smk.input.paraphrase, smk.input.paraphrase_vocab)
    members = read_json(smk.input.members)["members"]
    # A sampling captioner answers each query anew: its quality is that of one answer (query 0).
    captions = read_table(smk.input.captions)
    pool = pd.concat([first_query(select_part(captions, s, where=smk.input.captions))
                      for s in pool_splits(ModelId.parse(smk.wildcards.model))], ignore_index=True)
    member_caps = pool[pool["record_id"].isin(set(members))].reset_index(drop=True)
    train_records = select(manifest, members, what=f"{smk.input.members} members")
    heldout = first_query(select_part(captions, "heldout", where=smk.input.captions))
    # The fixed corpus (the mfe split: the same for both tables), tokenized in one run with
    # every caption and reference caption_quality may score (one JVM start per job).
    scored = set(heldout["record_id"].astype(str)) | set(member_caps["record_id"].astype(str))
    texts = [*heldout["caption"].fillna("").astype(str), *member_caps["caption"].fillna("").astype(str),
             *(c for caps in train_records["captions"] for c in caps),
             *(c for r, caps in zip(manifest["record_id"].astype(str), manifest["captions"]) if r in scored for c in caps)]
    idf = attacker_corpus(manifest, read_json(smk.input.splits), also=texts)
    quality = caption_quality(heldout, member_caps, manifest, train_records,
                              seed=smk.params.seed, idf=idf)
    write_json(quality, smk.output[0])


run(snakemake, main)  # noqa: F821
