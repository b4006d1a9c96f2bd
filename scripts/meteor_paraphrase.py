"""Rule meteor_paraphrase: the study's manifests -> METEOR's paraphrase table cut to their words.

Every METEOR start (one per metric-signal and caption-quality job) otherwise loads METEOR's own
table, 5.3 M entries, for ~14 CPU-s and ~1.5 GB before scoring anything; the entries whose words
the study's captions never use cannot match (see ``m4i.signals.caption_metrics``). The words: every
reference caption of every dataset, as written and as the captioners' vocabulary tokenizes it (what
a generated caption is made of), and ``<unk>``. A job scoring a word outside them uses the full
table, so no score depends on this cut."""
from m4i.data.manifest import read_manifests
from m4i.signals.caption_metrics import write_paraphrase_table
from m4i.text import UNK, tokenize
from m4i.workflow import run


def main(smk):
    import logging

    manifest, _ = read_manifests(list(smk.input.manifests))
    refs = [str(c) for caps in manifest["captions"] for c in caps]
    texts = [*refs, *(" ".join(tokenize(c)) for c in refs), UNK]
    info = write_paraphrase_table(texts, smk.output.table, smk.output.vocab)
    logging.getLogger("m4i.meteor_paraphrase").info(
        "kept %d of %d paraphrase entries (%d words)", info["entries"], info["source_entries"], len(info["vocabulary"]))


run(snakemake, main)  # noqa: F821
