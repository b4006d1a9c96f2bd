"""Caption quality of a captioner: held-out vs member scores, a fixed-caption baseline, and
(on synthetic data) whether the generated captions name the right colours and shapes.

Every caption is unique in these datasets, so "the most frequent caption" is no baseline. The
baseline is the single training caption that, given as the answer for every training record,
scores the best corpus BLEU-4 there (picked from a seeded sample of training captions), scored
on the held-out records like a model would be. A captioner that does not beat it has learnt
the language, not the images.

The member-vs-held-out gap compares like with like: both corpora have the same size (a seeded
subsample of the larger one) and CIDEr's IDF comes from one fixed corpus (``idf``, the
dataset's ``mfe`` split in the workflow) for both, not from each table's own records.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from m4i.io import M4IError
from m4i.records import lookup, unique_ids
from m4i.seeding import derive_seed
from m4i.text import tokenize


def _references(manifest: pd.DataFrame, ids, what: str) -> dict[str, list[str]]:
    rows = lookup(manifest, ids, what)
    return {str(r): [str(c) for c in cs] for r, cs in zip(rows["record_id"], rows["captions"])}


def _candidates(caps: pd.DataFrame, what: str) -> dict[str, str]:
    for col in ("record_id", "caption"):
        if col not in caps:
            raise M4IError(f"{what}: missing column {col!r}")
    if len(caps) == 0:
        raise M4IError(f"{what}: no captions")
    ids = unique_ids(caps["record_id"], what)
    return dict(zip(ids, caps["caption"].fillna("").astype(str)))


def _corpus(candidates: dict[str, str], references: dict[str, list[str]], idf=None) -> dict[str, float]:
    from m4i.signals.caption_metrics import corpus_scores

    corpus, _ = corpus_scores(candidates, references, idf=idf)
    return {k: float(v) for k, v in corpus.items()}


def fixed_caption_bleu4(captions: list[str], refs: dict[str, list[str]]) -> list[float]:
    """Corpus BLEU-4 of each caption given as the answer for every record of ``refs``.

    pycocoevalcap's BleuScorer, fed as its ``Bleu.compute_score`` feeds it, except that each
    record's references are cooked (n-gram counts) once for all captions instead of once per
    caption: they are the same every time, and cooking them was 3/4 of a caption_quality job
    (50 candidates x every training record's 5 references; measured).
    """
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer, cook_refs, cook_test

    norm = lambda c: " ".join(tokenize(c))  # noqa: E731 - same word split as everywhere else
    cooked = [cook_refs([norm(c) for c in cs]) for cs in refs.values()]
    out = []
    for caption in captions:
        scorer, test = BleuScorer(n=4), norm(caption)
        scorer.crefs = list(cooked)
        scorer.ctest = [cook_test(test, c) for c in cooked]
        score, _ = scorer.compute_score(option="closest", verbose=0)  # Bleu.compute_score's option
        out.append(float(score[3]))
    return out


def best_fixed_caption(train_records: pd.DataFrame, n_candidates: int = 50, seed: int = 0) -> tuple[str, float]:
    """The sampled training caption with the best corpus BLEU-4 on the training records."""
    pool = sorted({str(c) for caps in train_records["captions"] for c in caps})
    if not pool:
        raise M4IError("caption_quality: the training records hold no captions")
    rng = np.random.default_rng(derive_seed(seed, "baseline-caption"))
    sample = [pool[i] for i in sorted(rng.choice(len(pool), size=min(n_candidates, len(pool)), replace=False))]
    refs = {str(r): [str(c) for c in caps] for r, caps in zip(train_records["record_id"], train_records["captions"])}
    scored = list(zip(fixed_caption_bleu4(sample, refs), sample))
    best = max(scored, key=lambda sc: sc[0])  # first of equals, in sorted caption order
    return best[1], best[0]


def _content(candidates: dict[str, str], attributes: dict[str, dict]) -> dict[str, float]:
    from m4i.data.synthetic import content_accuracy

    per = [content_accuracy(candidates[r], attributes[r]) for r in candidates if attributes.get(r)]
    if not per:
        return {}
    keys = sorted({k for d in per for k in d})
    return {k: float(np.mean([d[k] for d in per if k in d])) for k in keys}


def _subsample(captions: dict[str, str], n: int, seed: int, what: str) -> dict[str, str]:
    """``n`` of ``captions`` (all when there are no more), drawn with a seed of their own."""
    if len(captions) <= n:
        return captions
    ids = sorted(captions)
    rng = np.random.default_rng(derive_seed(seed, "quality-subsample", what))
    return {r: captions[r] for r in sorted(ids[i] for i in rng.choice(len(ids), size=n, replace=False))}


def caption_quality(heldout_caps: pd.DataFrame, member_caps: pd.DataFrame, manifest: pd.DataFrame,
                    train_records: pd.DataFrame, *, n_candidates: int = 50, seed: int = 0, idf=None) -> dict:
    """Corpus BLEU-1..4, METEOR, ROUGE-L, CIDEr on held-out and member records (one corpus
    call per table, equal sizes, CIDEr's IDF from the fixed corpus ``idf``), their gap
    (members - heldout), the fixed-caption baseline on held-out, and content accuracy where the
    manifest has scene attributes (``{}`` otherwise)."""
    held_all = _candidates(heldout_caps, "held-out captions")
    memb_all = _candidates(member_caps, "member captions")
    n = min(len(held_all), len(memb_all))
    held = _subsample(held_all, n, seed, "heldout")
    memb = _subsample(memb_all, n, seed, "members")
    held_refs = _references(manifest, held, "held-out captions")
    memb_refs = _references(manifest, memb, "member captions")
    caption, train_bleu4 = best_fixed_caption(train_records, n_candidates, seed)
    from m4i.signals.caption_metrics import pretokenize

    # Everything the three corpus calls below score, in one tokenizer run (one JVM start).
    pretokenize([*held.values(), *memb.values(), caption,
                 *(c for refs in (held_refs, memb_refs) for cs in refs.values() for c in cs)])
    heldout = _corpus(held, held_refs, idf)
    members = _corpus(memb, memb_refs, idf)
    fixed = {r: caption for r in held}
    baseline = {"caption": caption, "train_bleu4": train_bleu4, "n_candidates": n_candidates,
                "heldout": _corpus(fixed, held_refs, idf)}
    attrs = {str(r): json.loads(a) if isinstance(a, str) else dict(a or {})
             for r, a in zip(manifest["record_id"], manifest.get("attributes", pd.Series([], dtype=object)))}
    content = {}
    if any(attrs.get(r) for r in list(held) + list(memb)):
        content = {"heldout": _content(held, attrs), "members": _content(memb, attrs),
                   "baseline_fixed_caption": _content(fixed, attrs)}
    return {
        "heldout": heldout,
        "members": members,
        "gap": {k: members[k] - heldout[k] for k in heldout if k in members},
        "baseline_fixed_caption": baseline,
        "content_accuracy": content,
        "n_heldout": len(held),
        "n_members": len(memb),
        "n_heldout_total": len(held_all),
        "n_members_total": len(memb_all),
        "cider_idf": "fixed corpus" if idf is not None else "scored table",
    }
