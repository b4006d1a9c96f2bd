"""Rule caption_quality: held-out and member captions of one captioner -> utility/<id>.json."""
import pandas as pd

from m4i.attacks.queries import first_query
from m4i.data.manifest import read_manifests, select
from m4i.io import read_json, read_table, write_json
from m4i.models.quality import caption_quality
from m4i.signals.caption_metrics import attacker_corpus
from m4i.workflow import run


def main(smk):
    manifest, _ = read_manifests(list(smk.input.manifest))
    members = read_json(smk.input.members)["members"]
    # A sampling captioner answers each query anew: its quality is that of one answer (query 0).
    pool = pd.concat([first_query(read_table(p)) for p in smk.input.pool], ignore_index=True)
    member_caps = pool[pool["record_id"].isin(set(members))].reset_index(drop=True)
    train_records = select(manifest, members, what=f"{smk.input.members} members")
    idf = attacker_corpus(manifest, read_json(smk.input.splits))  # the mfe split: the same for both tables
    quality = caption_quality(first_query(read_table(smk.input.heldout)), member_caps, manifest, train_records,
                              seed=smk.params.seed, idf=idf)
    write_json(quality, smk.output[0])


run(snakemake, main)  # noqa: F821
