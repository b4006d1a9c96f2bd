"""Caption tokenisation and the vocabulary, shared by captioners, MFEs and signals."""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = [PAD, START, END, UNK]

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(caption: str) -> list[str]:
    """Lower-case word tokens; punctuation is dropped (NLTK's punkt is not available offline)."""
    return _TOKEN.findall(caption.lower())


def build_vocab(captions: Iterable[str], min_count: int) -> list[str]:
    """Specials first, then words seen at least ``min_count`` times, by count then alphabetically."""
    counts = Counter(tok for c in captions for tok in tokenize(c))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return SPECIALS + words


class Vocab:
    """Index <-> token mapping over a token list whose first four entries are SPECIALS."""

    def __init__(self, tokens: list[str]):
        if tokens[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.start, self.end, self.unk = (self.index[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, caption: str) -> list[int]:
        """<start> w1 ... wn <end> as ids; unknown words map to <unk>."""
        return [self.start] + [self.index.get(t, self.unk) for t in tokenize(caption)] + [self.end]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first <end>, specials dropped."""
        out = []
        for i in ids:
            if i == self.end:
                break
            if i in (self.pad, self.start):
                continue
            out.append(self.tokens[i])
        return " ".join(out)
