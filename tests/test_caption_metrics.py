"""Corpus-level caption metrics and per-record metric signals (starts Java: PTB tokenizer, METEOR)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from m4i.io import M4IError
from m4i.signals import caption_metrics as cm
from m4i.signals.caption_metrics import attacker_corpus, cider_corpus, corpus_scores, metric_signals, signal_columns

REFS = {
    "d:0": ["a red circle on the left", "a small red circle at the left side"],
    "d:1": ["a blue square in the middle", "the blue square is centred"],
    "d:2": ["a green star at the top", "one green star near the top edge"],
    "d:3": ["a big yellow triangle", "a yellow triangle that is large"],
}
CANDS = {"d:0": "a red circle on the left", "d:1": "a blue square at the top",
         "d:2": "a green star on the left", "d:3": "a yellow triangle"}
# The attacker's own corpus (in the workflow: the mfe split's references), none of the scored records.
PUBLIC = {
    "p:0": ["a red square on the left", "a red square at the left side"],
    "p:1": ["a blue circle in the middle", "one blue circle near the centre"],
    "p:2": ["a green triangle at the top", "the green triangle is at the top"],
    "p:3": ["a small yellow star", "a yellow star that is small"],
    "p:4": ["a big red star on the right", "one red star at the right"],
}
PER_RECORD_SAFE = ["bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL"]


@pytest.fixture(scope="module")
def corpus():
    return corpus_scores(CANDS, REFS)


def test_corpus_scores_layout(corpus):
    values, table = corpus
    assert set(values) == set(cm.COCO_METRICS) and all(type(v) is float for v in values.values())
    assert list(table.columns) == ["record_id", *cm.COCO_METRICS]
    assert table["record_id"].tolist() == list(CANDS)
    exact = table.set_index("record_id").loc["d:0"]
    assert exact["bleu1"] == pytest.approx(1.0) and exact["rougeL"] == pytest.approx(1.0)
    assert 0 < values["cider"] and (table[list(cm.COCO_METRICS)] >= 0).all().all()


def test_per_record_equals_corpus_except_cider(corpus):
    # BLEU, METEOR and ROUGE-L of one record do not depend on the rest of the corpus, so the
    # corpus-level per-record output equals a one-record computation. CIDEr does: its IDF comes
    # from the corpus, and a one-record corpus always scores 0.0 (why we never score per record).
    _, table = corpus
    table = table.set_index("record_id")
    for r in ("d:0", "d:1"):
        _, single = corpus_scores({r: CANDS[r]}, {r: REFS[r]})
        row = single.set_index("record_id").loc[r]
        for m in PER_RECORD_SAFE:
            assert row[m] == pytest.approx(table.loc[r, m], abs=1e-9), (r, m)
        assert row["cider"] == 0.0 and table.loc[r, "cider"] > 0.0


def test_empty_candidates_score_zero_without_crashing():
    cands = {**CANDS, "d:1": "", "d:2": " ... "}  # empty and punctuation-only
    values, table = corpus_scores(cands, REFS)
    t = table.set_index("record_id")
    assert (t.loc[["d:1", "d:2"], list(cm.COCO_METRICS)] == 0.0).all().all()
    assert t.loc["d:0", "bleu1"] == pytest.approx(1.0) and values["bleu1"] > 0


def test_meteor_jvm_is_kept_alive(corpus):
    first = cm._get_meteor()
    corpus_scores({"d:0": "a red circle"}, {"d:0": REFS["d:0"]})
    assert cm._get_meteor() is first and first.meteor_p.poll() is None


@pytest.fixture(scope="module")
def signals(idf):
    # input order differs from the manifest order; d:3 has a single reference
    manifest = pd.DataFrame({"record_id": list(REFS), "image": [f"{i}.png" for i in range(4)],
                             "captions": [REFS[r] if r != "d:3" else REFS[r][:1] for r in REFS]})
    ids = ["d:2", "d:0", "d:3", "d:1"]
    captions = pd.DataFrame({"record_id": ids, "caption": [CANDS[r] for r in ids], "tokens": [[]] * 4})
    return manifest, captions, metric_signals(captions, manifest, idf)


@pytest.fixture(scope="module")
def idf():
    return cider_corpus(PUBLIC)


def test_metric_signals_columns_and_keys(signals):
    _, captions, out = signals
    assert list(out.columns) == ["record_id", *signal_columns()]
    assert out["record_id"].tolist() == captions["record_id"].tolist()
    want = {f"{m}_{a}" for m in ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider")
            for a in ("mean", "max", "multi")} | {f"{m}_{a}" for m in ("rouge1", "rouge2") for a in ("mean", "max")}
    assert set(signal_columns()) == want
    assert all(out[c].dtype == np.float64 for c in want) and out[list(want)].notna().all().all()


def test_metric_signals_aggregates(signals, idf):
    manifest, captions, out = signals
    out = out.set_index("record_id")
    refs = dict(zip(manifest["record_id"], manifest["captions"]))
    cands = dict(zip(captions["record_id"], captions["caption"]))
    # _multi is the corpus computation with all references
    _, multi = corpus_scores(cands, refs, idf)
    for m in cm.COCO_METRICS:
        assert out.loc[list(cands), f"{m}_multi"].to_numpy() == pytest.approx(multi[m].to_numpy(), abs=1e-9)
    # _mean/_max: one corpus computation per reference index, over the records that have it
    per_j = [corpus_scores({r: cands[r] for r in cands if len(refs[r]) > j},
                           {r: [refs[r][j]] for r in cands if len(refs[r]) > j}, idf)[1].set_index("record_id")
             for j in range(2)]
    for r in cands:
        vals = {m: [t.loc[r, m] for t in per_j if r in t.index] for m in cm.COCO_METRICS}
        for m, v in vals.items():
            assert out.loc[r, f"{m}_mean"] == pytest.approx(np.mean(v), abs=1e-9), (r, m)
            assert out.loc[r, f"{m}_max"] == pytest.approx(np.max(v), abs=1e-9), (r, m)
    # METEOR against several references is its best single-reference score
    assert out["meteor_multi"].to_numpy() == pytest.approx(out["meteor_max"].to_numpy(), abs=1e-9)
    # the exact copy of reference 0 maxes out the n-gram overlaps, the mean is lower
    for m in ("bleu1", "rouge1", "rouge2", "rougeL"):
        assert out.loc["d:0", f"{m}_max"] == pytest.approx(1.0), m
        assert out.loc["d:0", f"{m}_mean"] < 1.0
    assert out.loc["d:3", "rouge1_mean"] == out.loc["d:3", "rouge1_max"]  # one reference


def test_metric_signals_bad_input(signals, idf):
    manifest, captions, _ = signals
    with pytest.raises(M4IError, match="'zz:1' is not in the manifest"):
        metric_signals(pd.concat([captions, pd.DataFrame({"record_id": ["zz:1"], "caption": ["x"]})]), manifest, idf)
    no_refs = manifest.copy()
    no_refs.at[1, "captions"] = []
    with pytest.raises(M4IError, match="'d:1'.*no reference"):
        metric_signals(captions, no_refs, idf)
    with pytest.raises(M4IError, match="duplicate record id 'd:2'"):
        metric_signals(pd.concat([captions, captions.iloc[:1]]), manifest, idf)
    with pytest.raises(M4IError, match="no column 'caption'"):
        metric_signals(captions.drop(columns="caption"), manifest, idf)
    with pytest.raises(M4IError, match="fixed attacker-side corpus"):
        metric_signals(captions, manifest, None)
    with pytest.raises(M4IError, match="'d:9' has no references"):
        corpus_scores({"d:9": "x"}, REFS)


# --- CIDEr's corpus statistics from a fixed corpus ------------------------------------------------
def test_fixed_corpus_equal_to_the_table_is_pycocoevalcap_cider(corpus):
    # With the scored table itself as the "fixed" corpus, the fixed-corpus scorer must give
    # exactly pycocoevalcap's own CIDEr: the plumbing changes where df/ref_len come from, nothing else.
    own, table = corpus
    fixed, ftable = corpus_scores(CANDS, REFS, cider_corpus(REFS))
    assert fixed["cider"] == pytest.approx(own["cider"], abs=1e-12)
    assert ftable["cider"].to_numpy() == pytest.approx(table["cider"].to_numpy(), abs=1e-12)


def test_cider_corpus_counts_documents(idf):
    # document frequency counts records (a word in both references of a record counts once)
    assert idf.n_docs == len(PUBLIC)
    assert idf.document_frequency[("red",)] == 2 and idf.document_frequency[("a",)] == 5
    assert idf.document_frequency[("red", "square")] == 1 and ("purple",) not in idf.document_frequency


def test_record_signal_does_not_depend_on_its_split_file(idf):
    """A record's signals are the same whichever other records share its table (the old
    per-split IDF made them a statistic of the members or of the non-members)."""
    manifest = pd.DataFrame({"record_id": list(REFS), "image": [f"{i}.png" for i in range(4)],
                             "captions": list(REFS.values())})

    def table(ids, cands=CANDS):
        caps = pd.DataFrame({"record_id": ids, "caption": [cands[r] for r in ids]})
        return metric_signals(caps, manifest, idf).set_index("record_id")

    full = table(["d:0", "d:1", "d:2", "d:3"])
    other = {**CANDS, "d:1": "a red circle on the left", "d:2": "a red circle"}  # neighbours change
    for t in (table(["d:0"]), table(["d:0", "d:3"]), table(["d:0", "d:1", "d:2"], other)):
        assert t.loc["d:0"].to_numpy() == pytest.approx(full.loc["d:0"].to_numpy(), abs=1e-12)
    assert full.loc["d:0", "cider_multi"] > 0  # a one-record table no longer scores CIDEr 0.0
    # the per-table IDF would have changed it
    _, alone = corpus_scores({"d:0": CANDS["d:0"]}, {"d:0": REFS["d:0"]})
    assert alone["cider"].iloc[0] == 0.0


def test_attacker_corpus_reads_the_mfe_split():
    manifest = pd.DataFrame({"record_id": list(PUBLIC) + list(REFS),
                             "captions": list(PUBLIC.values()) + list(REFS.values())})
    splits = {"splits": {"mfe": list(PUBLIC), "target_in": list(REFS)}}
    got = attacker_corpus(manifest, splits)
    want = cider_corpus(PUBLIC)
    assert got == want
    with pytest.raises(M4IError, match="'mfe' split"):
        attacker_corpus(manifest, {"splits": {"target_in": list(REFS)}})


def test_tokenizer_runs_once_per_new_text_and_cache_changes_nothing(monkeypatch):
    # The cache must give exactly what a fresh tokenizer run gives, and texts seen before must
    # not start the tokenizer's JVM again (one run per job, not one per corpus call).
    cm.clear_token_cache()
    fresh = corpus_scores(CANDS, REFS)
    runs = []
    real = cm._ptb_run
    monkeypatch.setattr(cm, "_ptb_run", lambda lines: runs.append(list(lines)) or real(lines))
    again = corpus_scores(CANDS, REFS)
    assert runs == []
    assert fresh[0] == again[0] and fresh[1].equals(again[1])
    cm.pretokenize(["A Blue circle!", "a red circle on the left"])
    assert runs == [["A Blue circle!"]]  # only the unseen text, once
    corpus_scores({"d:0": "A Blue circle!"}, {"d:0": REFS["d:0"]})
    assert len(runs) == 1
    assert cm._ptb_tokenize(["A  Blue\ncircle!"]) == ["a blue circle"]  # whitespace-normalised key


def test_attacker_corpus_tokenizes_the_jobs_texts_in_the_same_run(monkeypatch):
    # A metric_signals job: the corpus and everything it scores next in one tokenizer run, and
    # the corpus statistics the same as without the extra texts.
    manifest = pd.DataFrame({"record_id": list(PUBLIC) + list(REFS),
                             "captions": list(PUBLIC.values()) + list(REFS.values())})
    splits = {"splits": {"mfe": list(PUBLIC), "target_in": list(REFS)}}
    cm.clear_token_cache()
    alone = attacker_corpus(manifest, splits)
    cm.clear_token_cache()
    runs = []
    real = cm._ptb_run
    monkeypatch.setattr(cm, "_ptb_run", lambda lines: runs.append(list(lines)) or real(lines))
    also = [*CANDS.values(), *(c for cs in REFS.values() for c in cs)]
    idf = attacker_corpus(manifest, splits, also=also)
    assert idf == alone and len(runs) == 1
    assert set(also) <= set(runs[0])
    captions = pd.DataFrame({"record_id": list(CANDS), "caption": list(CANDS.values())})
    metric_signals(captions, manifest, idf)
    assert len(runs) == 1  # scoring starts no second tokenizer JVM


# --- METEOR's paraphrase table cut to a study's words ---------------------------------------
# Pairs METEOR matches only through its paraphrase table ("is sitting" / "is seated", "a lot of"
# / "much"), beside plain ones.
PARA_REFS = {"q:0": ["a man is seated on a bench"], "q:1": ["there is much snow on the hill"],
             "q:2": ["a red circle on the left"], "q:3": ["a dog runs on the grass"]}
PARA_CANDS = {"q:0": "a man is sitting on a bench", "q:1": "there is a lot of snow on the hill",
              "q:2": "a red circle at the left", "q:3": "a dog is running on grass"}


@pytest.fixture
def meteor_state():
    """Leave the module's METEOR as the other tests expect it: METEOR's own table."""
    yield
    cm._paraphrase = None
    cm._close_meteor()


def _meteor(cands, refs):
    tok_c, tok_r = cm._tokenize_tables(cands, refs)
    return cm._score_tokenized(tok_c, tok_r)[1].set_index("record_id")["meteor"]


def test_restricted_paraphrase_table_scores_like_the_full_one(tmp_path, meteor_state):
    texts = [*(c for v in PARA_REFS.values() for c in v), *PARA_CANDS.values()]
    info = cm.write_paraphrase_table(texts, tmp_path / "p.gz", tmp_path / "p.json")
    assert 0 < info["entries"] < info["source_entries"] / 1000  # a small part of 5.3 M entries
    import gzip

    lines = gzip.open(tmp_path / "p.gz", "rt", encoding="utf-8").read().split("\n")[:-1]
    phrases = {(lines[i + 1], lines[i + 2]) for i in range(0, len(lines), 3)}
    assert ("is sitting", "is seated") in phrases and ("a lot of", "much") in phrases
    assert all(set(f"{a} {b}".split()) <= set(info["vocabulary"]) for a, b in phrases)

    full = _meteor(PARA_CANDS, PARA_REFS)  # METEOR's own table: the independent computation
    cm.use_paraphrase_table(tmp_path / "p.gz", tmp_path / "p.json")
    restricted = _meteor(PARA_CANDS, PARA_REFS)
    assert cm._meteor_table == str(tmp_path / "p.gz")
    assert restricted.tolist() == full.tolist()
    # The paraphrase module really scored: with an empty table, the paraphrased pairs score otherwise.
    empty = tmp_path / "empty.gz"
    with gzip.GzipFile(empty, "wb", mtime=0):
        pass
    cm._paraphrase = (str(empty), frozenset(info["vocabulary"]))
    none = _meteor(PARA_CANDS, PARA_REFS)
    assert none["q:0"] != full["q:0"] and none["q:1"] != full["q:1"]
    assert none["q:2"] == full["q:2"]


def test_word_outside_the_table_vocabulary_uses_the_full_table(tmp_path, meteor_state, caplog):
    cm.write_paraphrase_table([*(c for v in PARA_REFS.values() for c in v)], tmp_path / "p.gz", tmp_path / "p.json")
    cm.use_paraphrase_table(tmp_path / "p.gz", tmp_path / "p.json")
    with caplog.at_level("WARNING", logger="m4i.metrics"):
        got = _meteor(PARA_CANDS, PARA_REFS)  # "sitting", "lot", "running" are in no reference
    assert cm._meteor_table is None and "full paraphrase table" in caplog.text
    cm._paraphrase = None
    assert got.tolist() == _meteor(PARA_CANDS, PARA_REFS).tolist()


def test_paraphrase_table_bytes_are_fixed_by_its_input(tmp_path):
    texts = ["a man is seated on a bench", "a man is sitting on a bench"]
    cm.write_paraphrase_table(texts, tmp_path / "a.gz", tmp_path / "a.json")
    cm.write_paraphrase_table(list(reversed(texts)), tmp_path / "b.gz", tmp_path / "b.json")
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_use_paraphrase_table_names_a_bad_file(tmp_path):
    (tmp_path / "v.json").write_text('{"entries": 3}')
    with pytest.raises(M4IError, match="v.json"):
        cm.use_paraphrase_table(tmp_path / "p.gz", tmp_path / "v.json")
    (tmp_path / "w.json").write_text('{"vocabulary": ["a"]}')
    with pytest.raises(M4IError, match="p.gz"):
        cm.use_paraphrase_table(tmp_path / "p.gz", tmp_path / "w.json")


def test_meteor_words_cover_what_meteor_splits_off():
    assert cm.meteor_words(["Don't t-shirt 3,000"]) >= {"don't", "don", "t", "'", "t-shirt", "shirt", "-", "3,000", "3", "000", ","}


def _empty_table_and_items(tmp_path, n: int, seed: int):
    """A paraphrase table with no paraphrases (a JVM that starts in well under a second) and n
    random items of 1-5 references and one hypothesis each, over a small vocabulary."""
    import gzip
    import random

    empty = tmp_path / "empty.gz"
    with gzip.GzipFile(empty, "wb", mtime=0):
        pass
    words = "a the red blue green small large circle square triangle dog man on left right of near".split()
    rng = random.Random(seed)

    def sentence():
        return " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))

    gts = {f"r{i}": [sentence() for _ in range(rng.randint(1, 5))] for i in range(n)}
    return str(empty), gts, {r: [sentence()] for r in gts}


def test_pipelined_meteor_answers_like_the_wrappers_own_protocol(tmp_path, meteor_state):
    """KeptMeteor.compute_score (every SCORE line sent at once) against pycocoevalcap's own
    compute_score (one round trip per line) on the same JVM: the same statistics, scores and
    corpus score, on more text than a pipe buffer holds both ways (64 KiB)."""
    from pycocoevalcap.meteor.meteor import Meteor

    empty, gts, res = _empty_table_and_items(tmp_path, 3000, seed=3)
    res["r0"] = [gts["r0"][0]]  # a perfect match
    res["r1"] = [""]  # an empty hypothesis: still one answer line
    assert sum(len(" ||| ".join(v)) for v in gts.values()) > 4 * 65536  # SCOREs in; ~70 bytes of statistics each out
    meteor = cm._get_meteor(empty)
    piped = meteor.compute_score(gts, res)
    assert piped == Meteor.compute_score(meteor, gts, res)  # the wrapper's protocol, unbound
    assert piped[1][0] == pytest.approx(1.0, abs=0.01) and len(piped[1]) == 3000
    assert meteor.meteor_p.poll() is None  # the JVM is still in step: it scores again
    assert meteor.compute_score({"x": ["a red circle"]}, {"x": ["a red circle"]})[1][0] > 0.9


def test_meteor_jit_flag_changes_no_score(tmp_path, meteor_state, monkeypatch):
    """The study's METEOR JVM runs with METEOR_JVM_FLAGS (C1-only JIT, for speed); a JVM started
    without them (the JDK's default tiered JIT) gives the same statistics and scores."""
    empty, gts, res = _empty_table_and_items(tmp_path, 2000, seed=5)
    flagged = cm._get_meteor(empty)
    assert cm.METEOR_JVM_FLAGS and all(f in flagged.meteor_p.args for f in cm.METEOR_JVM_FLAGS)
    monkeypatch.setattr(cm, "METEOR_JVM_FLAGS", ())
    plain = cm._meteor_class()(empty)
    try:
        assert not any(a.startswith("-XX:") for a in plain.meteor_p.args)
        assert flagged.compute_score(gts, res) == plain.compute_score(gts, res)
    finally:
        plain.meteor_p.stdin.close()
        plain.meteor_p.kill()
        plain.meteor_p.wait(timeout=5)
