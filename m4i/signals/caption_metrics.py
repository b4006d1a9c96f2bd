"""Caption-similarity metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr, ROUGE-1/2) as corpus-level
scores and as per-record membership signals.

Why corpus-level: one pycocoevalcap ``compute_score`` call already returns a score per caption.
Scoring records one at a time is wrong for CIDEr (its IDF comes from the corpus; a one-record
corpus always scores 0.0) and slow (one JVM start per call). So every per-record value here is
taken from a computation over the whole table.

Conventions:
- Text is normalised (all whitespace, including newlines, collapsed to single spaces) and
  tokenized with pycocoevalcap's PTBTokenizer (lower-case, punctuation removed), candidates and
  references together, in one tokenizer run (one JVM start) for all strings not yet seen. The
  tokenizer works line by line, so its result for a string does not depend on the other lines:
  results are kept per process (``_TOKENS``), and a job that scores the same references again
  (one call per query, held-out + members + baseline) starts no further JVM; ``pretokenize``
  tokenizes a whole job's text in one run up front.
- One METEOR JVM is kept alive per process (created lazily, closed at exit). Loading METEOR's
  own paraphrase table (5.3 M entries, 62 MB) costs ~14 CPU-s and ~1.5 GB per JVM start, before
  it scores anything (measured). A study builds once the part of that table its captions can use
  (``write_paraphrase_table``: the entries whose every word is in the study's reference
  vocabulary; rule ``meteor_paraphrase``) and its jobs load it (``use_paraphrase_table``): under
  a second to start. Scores are the same: a paraphrase entry matches only where its phrases occur
  in the hypothesis and a reference, so an entry with a word found in neither can never match.
  Every scoring call checks that its words are in that vocabulary and uses METEOR's full table
  otherwise (logged), so the restriction never changes a score.
- Empty candidates (empty, whitespace-only or punctuation-only captions, e.g. a captioner that
  emitted ``<end>`` first) stay in the corpus, so corpus-level values count them as failures and
  CIDEr's IDF does not change, and their per-record scores are set to 0.0 explicitly rather
  than left to each scorer's edge-case behaviour.
- CIDEr's corpus statistics (document frequencies and the document count that stands for
  "ref_len") come from a FIXED corpus the attacker owns (``CiderCorpus``, built by
  ``cider_corpus`` from public references, e.g. the dataset's ``mfe`` split), never from the
  table being scored: a split file holds members only or non-members only, so an IDF computed
  over it would be a statistic of the label, and a record's score would change with the other
  records scored beside it. Without a corpus (``idf=None``) CIDEr falls back to pycocoevalcap's
  own behaviour (IDF over the scored table): right for a captioner's corpus-level quality on
  one table, wrong for per-record membership signals.
- ROUGE-1/2 come from rouge-score (F-measure, no stemming, on the PTB-tokenized text).
  rouge-score's own ROUGE-L is NOT reported: ``rougeL`` always means pycocoevalcap's ROUGE-L
  (beta 1.2, best reference), the one the captioning literature reports.
"""
from __future__ import annotations

import atexit
import contextlib
import gzip
import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from collections import defaultdict

import numpy as np
import pandas as pd

from m4i.io import M4IError, atomic_path, read_json, sha256_file, write_json
from m4i.progress import Progress
from m4i.records import lookup, unique_ids

log = logging.getLogger("m4i.metrics")

COCO_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider")
ROUGE_SCORE_METRICS = ("rouge1", "rouge2")
METRICS = COCO_METRICS + ROUGE_SCORE_METRICS


def signal_columns() -> list[str]:
    """Column names of ``metric_signals`` after ``record_id``, in output order."""
    cols = []
    for m in METRICS:
        cols += [f"{m}_mean", f"{m}_max"]
        if m in COCO_METRICS:  # "all references at once" only for pycocoevalcap metrics
            cols.append(f"{m}_multi")
    return cols


# --- METEOR: one JVM per process --------------------------------------------------------------
_meteor = None
_meteor_table: str | None = None  # the paraphrase table the running JVM loaded (None: METEOR's own)
_meteor_lock = threading.Lock()
_paraphrase: tuple[str, frozenset] | None = None  # (table, its vocabulary): use_paraphrase_table
_WORD_PART = re.compile(r"[^\W_]+")


# The JVM compiles METEOR's hot code with its quick C1 compiler only, not C2 as well: a study
# runs as many jobs as it has cores, so C2's compiler threads take CPU from the other job. Four
# metric-signal jobs on 2 cores: 34-37 s -> 23-25 s, 68-71 -> 43-44 CPU-s (measured; the same
# bytes out: the JIT level does not change Java's arithmetic). Alone a job's wall time rises
# (~15 %, as C2 had a spare core there); the study is never alone.
METEOR_JVM_FLAGS = ("-XX:TieredStopAtLevel=1",)


def _close_meteor() -> None:
    global _meteor, _meteor_table
    m, _meteor, _meteor_table = _meteor, None, None
    if m is not None:
        with contextlib.suppress(Exception):
            m.meteor_p.stdin.close()
            m.meteor_p.kill()
            m.meteor_p.wait(timeout=5)


atexit.register(_close_meteor)


def _meteor_class():
    from pycocoevalcap.meteor import meteor as wrapper

    class KeptMeteor(wrapper.Meteor):
        """pycocoevalcap's METEOR wrapper, started with its own command plus ``-a <table>`` when
        a paraphrase table is given, its ``compute_score`` pipelined (below). Its ``__del__``
        (which kills the JVM) is a no-op: only ``_close_meteor`` (atexit, or after a failure)
        owns the process."""

        def __init__(self, table: str | None = None):
            # pycocoevalcap's command (meteor/meteor.py), unchanged but for the JIT flag and the table.
            self.meteor_cmd = ["java", *METEOR_JVM_FLAGS, "-jar", "-Xmx2G", wrapper.METEOR_JAR, "-", "-", "-stdio",
                               "-l", "en", "-norm"]
            if table is not None:
                self.meteor_cmd += ["-a", str(Path(table).resolve())]
            self.meteor_p = subprocess.Popen(self.meteor_cmd, cwd=os.path.dirname(os.path.abspath(wrapper.__file__)),
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.lock = threading.Lock()

        def compute_score(self, gts, res):
            """pycocoevalcap's protocol and strings (one ``SCORE`` line per item, then one
            ``EVAL`` line of their statistics), pipelined: the wrapper waits for each ``SCORE``
            answer before it sends the next line, so the JVM idles for a pipe round trip per
            item (half of METEOR's time on 600 single-reference items, measured); here a
            thread feeds every line while this one reads the answers in order. The JVM answers
            line by line, so the answers and the scores are the same."""
            assert gts.keys() == res.keys()
            ids = list(gts)
            lines = []
            for i in ids:
                assert len(res[i]) == 1
                hypothesis = res[i][0].replace("|||", "").replace("  ", " ")  # as the wrapper's _stat
                lines.append(" ||| ".join(("SCORE", " ||| ".join(gts[i]), hypothesis)) + "\n")
            pipe, failed = self.meteor_p, []

            def feed():
                try:
                    pipe.stdin.write("".join(lines).encode())
                    pipe.stdin.flush()
                except Exception as exc:  # a dead JVM: the reader sees it too; re-raised below
                    failed.append(exc)

            with self.lock:
                writer = threading.Thread(target=feed, name="meteor-feed", daemon=True)
                writer.start()
                stats = [pipe.stdout.readline().decode().strip() for _ in ids]
                writer.join()
                if failed:
                    raise failed[0]
                if not all(stats):
                    raise M4IError("METEOR's JVM ended before it answered every SCORE line")
                pipe.stdin.write(("EVAL" + "".join(f" ||| {s}" for s in stats) + "\n").encode())
                pipe.stdin.flush()
                scores = [float(pipe.stdout.readline().strip()) for _ in ids]
                score = float(pipe.stdout.readline().strip())
            return score, scores

        def __del__(self):
            pass

    return KeptMeteor


def _get_meteor(table: str | None = None):
    """The process-wide METEOR scorer on paraphrase ``table`` (None: METEOR's own); restarted if
    its JVM has died or was started on another table."""
    global _meteor, _meteor_table
    if _meteor is not None and (_meteor.meteor_p.poll() is not None or _meteor_table != table):
        _close_meteor()
    if _meteor is None:
        _meteor, _meteor_table = _meteor_class()(table), table
    return _meteor


def meteor_words(texts: Iterable[str]) -> set[str]:
    """Every word METEOR can see in ``texts`` (PTB-tokenized strings): each whitespace token,
    lower-cased, with its letter/digit runs and its other characters, so that METEOR's own
    normalisation (``-norm``: lower-case, punctuation split off) yields nothing outside it."""
    out: set[str] = set()
    for text in texts:
        for w in str(text).lower().split():
            out.add(w)
            out.update(_WORD_PART.findall(w))
            out.update(ch for ch in w if not ch.isalnum())
    return out


def meteor_paraphrase_source() -> Path:
    """METEOR's own English paraphrase table, as pycocoevalcap ships it."""
    from pycocoevalcap.meteor import meteor as wrapper

    return Path(wrapper.__file__).resolve().parent / "data" / "paraphrase-en.gz"


def write_paraphrase_table(texts: Iterable[str], table_path, vocab_path) -> dict:
    """The entries of METEOR's paraphrase table whose words (both phrases) are all among the
    words of ``texts`` (PTB-tokenized here, one tokenizer run) -> ``table_path`` (gzip, the
    source's format, bytes fixed by the input) and the vocabulary + counts -> ``vocab_path``."""
    tokens = _ptb_tokenize([str(t) for t in texts])
    vocab = meteor_words(tokens)
    source = meteor_paraphrase_source()
    with gzip.open(source, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 3:
        raise M4IError(f"{source}: {len(lines)} lines, not (probability, phrase, phrase) triples")
    keep = []
    for i in range(0, len(lines), 3):
        if vocab.issuperset(lines[i + 1].split()) and vocab.issuperset(lines[i + 2].split()):
            keep += lines[i : i + 3]
    with atomic_path(table_path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write("".join(f"{line}\n" for line in keep).encode("utf-8"))
    info = {"source": source.name, "source_sha256": sha256_file(source), "source_entries": len(lines) // 3,
            "entries": len(keep) // 3, "vocabulary": sorted(vocab)}
    write_json(info, vocab_path)
    return info


def use_paraphrase_table(table_path, vocab_path) -> None:
    """Score METEOR on the study's restricted paraphrase table (``write_paraphrase_table``) from
    now on in this process; a call with a word outside its vocabulary uses the full table."""
    global _paraphrase
    info = read_json(vocab_path)
    if not isinstance(info, dict) or not isinstance(info.get("vocabulary"), list):
        raise M4IError(f"{vocab_path}: not a paraphrase-table vocabulary (no 'vocabulary' list)")
    if not Path(table_path).is_file():
        raise M4IError(f"{table_path}: paraphrase table not found")
    _paraphrase = (str(table_path), frozenset(info["vocabulary"]))


def _meteor_table_for(gts: dict[str, list[str]], res: dict[str, list[str]]) -> str | None:
    """The restricted table when every word of this call is in its vocabulary, else None (METEOR's
    own table)."""
    if _paraphrase is None:
        return None
    table, vocab = _paraphrase
    missing = meteor_words(t for texts in (*gts.values(), *res.values()) for t in texts) - vocab
    if missing:
        log.warning("METEOR: %d word(s) outside the study's paraphrase vocabulary (e.g. %r): "
                    "scoring with METEOR's full paraphrase table", len(missing), sorted(missing)[0])
        return None
    return table


# --- tokenisation ---------------------------------------------------------------------------
_TOKENS: dict[str, str] = {}  # whitespace-normalised text -> its PTB tokenization, per process


def _ptb_run(clean: list[str]) -> list[str]:
    """One PTBTokenizer run (one JVM start) over normalised lines; order and length preserved."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # A trailing sentinel: the wrapper splits Java's output on "\n", which can lose a final
    # empty line.
    out = PTBTokenizer().tokenize({"all": [{"caption": c} for c in clean + ["sentinel"]]})["all"]
    if len(out) != len(clean) + 1:
        raise M4IError(f"PTB tokenizer returned {len(out)} lines for {len(clean) + 1} captions")
    return [t.replace("|||", " ").strip() for t in out[:-1]]  # "|||" is METEOR's field separator


def _ptb_tokenize(texts: list[str]) -> list[str]:
    """PTB-tokenize a flat list of strings, running the tokenizer (once) only for strings this
    process has not tokenized yet; order and length preserved."""
    # Collapse every kind of whitespace: the tokenizer is line-based, so a stray "\r" or
    # "\u2028" inside a caption would shift every following line.
    clean = [" ".join(str(t).split()) for t in texts]
    new = sorted(set(clean) - _TOKENS.keys())
    if new:
        _TOKENS.update(zip(new, _ptb_run(new)))
    return [_TOKENS[c] for c in clean]


def pretokenize(texts: Iterable[str]) -> None:
    """Tokenize every string of a job in one tokenizer run, before its scoring calls."""
    _ptb_tokenize(list(texts))


def clear_token_cache() -> None:
    """Forget every tokenization (benchmarks measure the per-call cost with it)."""
    _TOKENS.clear()


def _tokenize_tables(candidates: dict[str, str], references: dict[str, list[str]]):
    """Tokenize candidates and references in one tokenizer call."""
    ids = list(candidates)
    flat = [candidates[r] for r in ids]
    for r in ids:
        flat += references[r]
    tok = _ptb_tokenize(flat)
    cands = dict(zip(ids, tok[: len(ids)]))
    refs, i = {}, len(ids)
    for r in ids:
        n = len(references[r])
        refs[r] = tok[i : i + n]
        i += n
    return cands, refs


# --- CIDEr with corpus statistics from a fixed corpus -----------------------------------------
@dataclass(frozen=True)
class CiderCorpus:
    """CIDEr's corpus statistics, from a fixed corpus of PTB-tokenized reference sets:
    ``document_frequency[ngram]`` = number of documents (records) whose references contain the
    n-gram (pycocoevalcap's ``compute_doc_freq``), ``n_docs`` = number of documents (CIDEr's
    ``ref_len`` is ``log(n_docs)``)."""

    document_frequency: dict
    n_docs: int


def _cider_scorer_class():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    class _Refs(list):
        """The scorer's reference list with ``len()`` = the fixed corpus's document count:
        ``CiderScorer.compute_cider`` sets ``ref_len = log(len(self.crefs))`` (iteration, which
        pairs candidates with their references, still sees the real items)."""

        def __init__(self, items, n_docs: int):
            super().__init__(items)
            self.n_docs = n_docs

        def __len__(self):
            return self.n_docs

    class FixedCorpusCiderScorer(CiderScorer):
        """pycocoevalcap's CiderScorer (its n-gram cooking, tf-idf vectors, clipping and length
        penalty untouched) with document frequencies and ref_len from ``corpus``."""

        def __init__(self, corpus: CiderCorpus, n=4, sigma=6.0):
            super().__init__(n=n, sigma=sigma)
            self.corpus = corpus

        def compute_doc_freq(self):
            self.document_frequency = defaultdict(float, self.corpus.document_frequency)

        def compute_score(self, option=None, verbose=0):
            # pycocoevalcap asserts df <= number of scored records: true only for its own IDF.
            self.compute_doc_freq()
            crefs = self.crefs
            self.crefs = _Refs(crefs, self.corpus.n_docs)
            try:
                score = self.compute_cider()
            finally:
                self.crefs = crefs
            return float(np.mean(np.array(score))), np.array(score)

    return FixedCorpusCiderScorer


def _cider(gts: dict[str, list[str]], res: dict[str, list[str]], idf: CiderCorpus | None):
    """CIDEr (pycocoevalcap) of tokenized ``res`` against ``gts``; with ``idf`` its corpus
    statistics come from that fixed corpus instead of from ``gts``."""
    from pycocoevalcap.cider.cider import Cider

    if idf is None:
        return Cider().compute_score(gts, res)
    scorer = _cider_scorer_class()(idf)
    for r in gts:
        scorer += (res[r][0], gts[r])
    return scorer.compute_score()


def cider_corpus_tokenized(reference_sets: Iterable[list[str]]) -> CiderCorpus:
    """Corpus statistics of already PTB-tokenized reference sets (one set per document)."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    scorer = CiderScorer()
    for refs in reference_sets:
        scorer += (None, list(refs))
    if not scorer.crefs:
        raise M4IError("cider_corpus: the corpus holds no documents")
    scorer.compute_doc_freq()
    return CiderCorpus(dict(scorer.document_frequency), len(scorer.crefs))


def cider_corpus(references: dict[str, list[str]], also: Iterable[str] = ()) -> CiderCorpus:
    """CIDEr corpus statistics of raw reference captions, one document per record (tokenized
    like every scored caption: one PTB tokenizer call, which also tokenizes ``also``, the texts
    the job scores next, so that a job starts the tokenizer's JVM once)."""
    refs = {str(r): _as_refs(v, str(r)) for r, v in references.items()}
    if not refs:
        raise M4IError("cider_corpus: the corpus holds no records")
    flat = [c for r in refs for c in refs[r]]
    tok, i, sets = _ptb_tokenize(flat + [str(t) for t in also])[: len(flat)], 0, []
    for r in refs:
        sets.append(tok[i : i + len(refs[r])])
        i += len(refs[r])
    return cider_corpus_tokenized(sets)


def attacker_corpus(manifest: pd.DataFrame, splits: dict, split: str = "mfe", also: Iterable[str] = ()) -> CiderCorpus:
    """The fixed CIDEr corpus of a study: the references of the split file's ``split`` (the
    attacker's own public records, in no captioner's membership and never a candidate).
    ``also``: the job's own texts, tokenized in the same run (see ``cider_corpus``)."""
    from m4i.data.manifest import select

    ids = (splits.get("splits") or {}).get(split)
    if not ids:
        raise M4IError(f"CIDEr corpus: the split file has no (or an empty) {split!r} split")
    rows = select(manifest, list(ids), what=f"CIDEr corpus split {split}")
    return cider_corpus(dict(zip(rows["record_id"].astype(str), rows["captions"])), also)


# --- validation -----------------------------------------------------------------------------
def _as_refs(value, record_id: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise M4IError(f"record {record_id!r}: references must be a list of strings, got {type(value).__name__}")
    refs = list(value)
    if not refs:
        raise M4IError(f"record {record_id!r}: no reference captions")
    for c in refs:
        if not isinstance(c, str) or not c.strip():
            raise M4IError(f"record {record_id!r}: reference caption {c!r} is empty or not a string")
    return refs


def _check_inputs(candidates: dict, references: dict) -> tuple[dict[str, str], dict[str, list[str]]]:
    if not candidates:
        raise M4IError("corpus_scores: no candidate captions")
    missing = [r for r in candidates if r not in references]
    if missing:
        raise M4IError(f"corpus_scores: record {missing[0]!r} has no references ({len(missing)} missing)")
    cands = {}
    for r, c in candidates.items():
        if c is None or (isinstance(c, float) and np.isnan(c)):
            c = ""  # a missing caption is an empty caption
        if not isinstance(c, str):
            raise M4IError(f"record {r!r}: candidate caption must be a string, got {type(c).__name__}")
        cands[str(r)] = c
    refs = {str(r): _as_refs(references[r], str(r)) for r in candidates}
    return cands, refs


# --- scoring of tokenized text --------------------------------------------------------------
def _score_tokenized(cands: dict[str, str], refs: dict[str, list[str]],
                     idf: CiderCorpus | None = None) -> tuple[dict, pd.DataFrame]:
    """One corpus computation per pycocoevalcap metric over already tokenized text (CIDEr's
    corpus statistics from ``idf`` when given)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    ids = list(cands)
    res = {r: [cands[r]] for r in ids}
    gts = {r: list(refs[r]) for r in ids}
    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    with _meteor_lock:
        try:
            meteor, meteor_each = _get_meteor(_meteor_table_for(gts, res)).compute_score(gts, res)
        except Exception as exc:
            # The pipe protocol is out of step (and the wrapper's own lock is held): drop the JVM.
            _close_meteor()
            raise M4IError(f"METEOR scorer failed ({type(exc).__name__}: {exc})") from exc
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = _cider(gts, res, idf)
    corpus = {f"bleu{n + 1}": float(bleu[n]) for n in range(4)}
    corpus.update(meteor=float(meteor), rougeL=float(rouge), cider=float(cider))
    table = pd.DataFrame({"record_id": ids})
    for n in range(4):
        table[f"bleu{n + 1}"] = np.asarray(bleu_each[n], dtype=float)
    table["meteor"] = np.asarray(meteor_each, dtype=float)
    table["rougeL"] = np.asarray(rouge_each, dtype=float)
    table["cider"] = np.asarray(cider_each, dtype=float)
    empty = np.array([not cands[r] for r in ids])
    table.loc[empty, list(COCO_METRICS)] = 0.0  # explicit: an empty caption matches nothing
    return corpus, table


def corpus_scores(candidates: dict[str, str], references: dict[str, list[str]],
                  idf: CiderCorpus | None = None) -> tuple[dict, pd.DataFrame]:
    """Corpus-level scores and per-record scores of ``candidates`` against ``references``.

    Returns ``({"bleu1".."bleu4", "meteor", "rougeL", "cider": float}, DataFrame)`` where the
    frame has ``record_id`` plus the same seven columns, one row per candidate in input order.
    Every per-record value comes from the one corpus computation; CIDEr's IDF from ``idf`` (a
    fixed corpus) or, without it, over all records scored.
    """
    cands, refs = _check_inputs(candidates, references)
    tok_c, tok_r = _tokenize_tables(cands, refs)
    return _score_tokenized(tok_c, tok_r, idf)


# --- per-record signals ---------------------------------------------------------------------
def _rouge_score_matrix(cands: dict[str, str], refs: dict[str, list[str]], width: int) -> dict[str, np.ndarray]:
    """rouge1/rouge2 F-measure per (record, reference index); NaN where a record has fewer refs."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_SCORE_METRICS), use_stemmer=False)
    out = {m: np.full((len(cands), width), np.nan) for m in ROUGE_SCORE_METRICS}
    for i, r in enumerate(cands):
        for j, ref in enumerate(refs[r]):
            s = scorer.score(ref, cands[r])  # (target, prediction)
            for m in ROUGE_SCORE_METRICS:
                out[m][i, j] = 0.0 if not cands[r] else s[m].fmeasure
    return out


def metric_signals(captions: pd.DataFrame, manifest: pd.DataFrame, idf: CiderCorpus) -> pd.DataFrame:
    """Per-record similarity signals of generated ``captions`` to the manifest's references.

    Output: ``record_id`` + float columns ``<metric>_<agg>`` (see ``signal_columns()``), one row
    per input caption, in input order.
    - ``_multi``: the record scored against all its references at once (pycocoevalcap metrics).
    - ``_mean`` / ``_max``: mean / best over single references. For each reference index j,
      one corpus computation over the records that have a j-th reference (refs = [ref_j]). A
      record with fewer references than others is simply absent from the computations for the
      indices it lacks; its mean/max are over the references it has.
    - CIDEr's document frequencies and ref_len come from ``idf`` (``attacker_corpus``: a fixed
      corpus the attacker owns, the same for every record scored), so no signal of a record
      depends on which other records share its table (see the module docstring).
    """
    if not isinstance(idf, CiderCorpus):
        raise M4IError("metric_signals: CIDEr needs a fixed attacker-side corpus (idf=attacker_corpus(...))")
    for col, frame, what in (("record_id", captions, "captions"), ("caption", captions, "captions"),
                             ("record_id", manifest, "manifest"), ("captions", manifest, "manifest")):
        if col not in frame:
            raise M4IError(f"metric_signals: {what} table has no column {col!r}")
    if len(captions) == 0:
        raise M4IError("metric_signals: the captions table is empty")
    ids = unique_ids(captions["record_id"], "metric_signals: the captions table")
    ref_rows = lookup(manifest, ids, "metric_signals")
    cands, refs = _check_inputs(dict(zip(ids, captions["caption"].tolist())), dict(zip(ids, ref_rows["captions"])))

    tok_c, tok_r = _tokenize_tables(cands, refs)  # the only tokenizer call
    width = max(len(v) for v in tok_r.values())
    per_ref = {m: np.full((len(ids), width), np.nan) for m in COCO_METRICS}
    row = {r: i for i, r in enumerate(ids)}
    # One corpus pass per reference index, then ROUGE-1/2, then all references at once.
    progress = Progress(f"metric signals of {len(ids)} captions", width + 2, unit="pass", logger=log)
    for j in range(width):
        have = [r for r in ids if len(tok_r[r]) > j]
        _, t = _score_tokenized({r: tok_c[r] for r in have}, {r: [tok_r[r][j]] for r in have}, idf)
        rows = [row[r] for r in have]
        for m in COCO_METRICS:
            per_ref[m][rows, j] = t[m].to_numpy()
        progress.update(j + 1)
    per_ref.update(_rouge_score_matrix(tok_c, tok_r, width))
    progress.update(width + 1)
    _, multi = _score_tokenized(tok_c, tok_r, idf)
    progress.update(width + 2)

    out = {"record_id": ids}
    for m in METRICS:
        out[f"{m}_mean"] = np.nanmean(per_ref[m], axis=1)  # every row has >= 1 reference
        out[f"{m}_max"] = np.nanmax(per_ref[m], axis=1)
        if m in COCO_METRICS:
            out[f"{m}_multi"] = multi[m].to_numpy(dtype=float)
    return pd.DataFrame(out)[["record_id", *signal_columns()]]
