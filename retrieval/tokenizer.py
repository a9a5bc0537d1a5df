"""CLIP's byte-pair tokenizer without torch, so a query in a fresh process needs neither torch nor open_clip.

It reads the merges file open_clip ships and must give the very ids open_clip's own tokenizer gives (a test
compares them); only the query path uses it, next to the exported text tower.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from pathlib import Path

import numpy as np
import regex

from clipdex.retrieval import config

SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_MERGE_COUNT = 49152 - 256 - 2  # open_clip's vocabulary: 256 bytes ×2 (plain, word-final), merges, specials
_WORD = regex.compile(
    "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def default_merges_file() -> Path | None:
    """open_clip's merges file, found without importing open_clip (which would import torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


def _byte_alphabet() -> list[str]:
    """One printable character per byte value: printable bytes stand for themselves, the rest are moved
    past 255, so merges never see whitespace or control characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


_PLAIN = regex.compile(r"[\x20-\x25\x27-\x7e]*")  # printable ASCII without '&'


def _clean(text: str) -> str:
    """open_clip's default ('lower') text cleaning: fix mojibake, unescape HTML twice, collapse whitespace.

    ftfy changes nothing in printable ASCII without '&' (nothing to fix, no entity to unescape), and importing
    it costs a cold query ~0.1 s, so most typed queries skip it."""
    if not _PLAIN.fullmatch(text):
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class BpeTokenizer:
    def __init__(self, merges_file: Path, context_length: int = 77) -> None:
        with gzip.open(merges_file) as f:
            lines = f.read().decode("utf-8").split("\n")[1 : _MERGE_COUNT + 1]
        merges = [tuple(line.split()) for line in lines]
        alphabet = _byte_alphabet()
        printable_order = sorted(range(256), key=lambda b: ord(alphabet[b]))
        symbols = [alphabet[b] for b in printable_order]
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.alphabet = alphabet
        self.context_length = context_length
        self.sot, self.eot = self.ids[SPECIAL_TOKENS[0]], self.ids[SPECIAL_TOKENS[1]]
        self._specials = {token: (self.ids[token],) for token in SPECIAL_TOKENS}
        # Words repeat, so their pieces are remembered; but a long-running server sees endless new words (every
        # query is untrusted text), so only the most recently used ones are kept.
        self._cached_merge = functools.lru_cache(maxsize=config.TOKENIZER_CACHE_WORDS)(self._merge)

    def _word_ids(self, word: str) -> tuple[int, ...]:
        return self._specials.get(word) or self._cached_merge(word)

    def _merge(self, word: str) -> tuple[int, ...]:
        """Apply merges lowest rank first until none applies: the ids of the word's byte-pair pieces."""
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            ranks = [self.ranks.get(pair) for pair in zip(parts, parts[1:])]
            best = min((r for r in ranks if r is not None), default=None)
            if best is None:
                break
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(parts) and self.ranks.get((parts[i], parts[i + 1])) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(self.ids[p] for p in parts)

    def encode(self, text: str) -> list[int]:
        """Token ids of the text alone, without start/end tokens or truncation."""
        ids: list[int] = []
        for word in _WORD.findall(_clean(text)):
            ids.extend(self._word_ids("".join(self.alphabet[b] for b in word.encode("utf-8"))))
        return ids

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(N, L) int64 ids padded with 0 only up to the longest text: L ≤ context_length, end token kept last."""
        rows = []
        for text in texts:
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length - 1] + [self.eot]
            rows.append(ids)
        tokens = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
        for i, ids in enumerate(rows):
            tokens[i, : len(ids)] = ids
        return tokens
