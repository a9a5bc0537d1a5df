"""CLIP's byte-pair tokenizer written as a `tokenizers` tokenizer.json, so a model folder carries its own
tokenizer and runs without open_clip (whose merges file it is made from, once, when a folder is exported).

The pieces are those Hugging Face's CLIP tokenizer uses: NFC, whitespace collapsed, lower case; words split as
CLIP splits them, bytes mapped to printable characters, merges with a word-end suffix; start and end tokens
around every text. Export checks its ids against open_clip's own tokenizer on probe sentences.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

START, END = "<start_of_text>", "<end_of_text>"
_MERGE_COUNT = 49152 - 256 - 2  # open_clip's vocabulary: 256 bytes ×2 (plain, word-final), merges, specials
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _byte_symbols() -> list[str]:
    """One printable character per byte, in CLIP's vocabulary order (printable bytes stand for themselves, the
    rest are moved past 255, so merges never see whitespace or control characters)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    alphabet = [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]
    return sorted(alphabet, key=ord)


def clip_tokenizer(merges_file: Path):
    """A `tokenizers.Tokenizer` giving open_clip's ids for CLIP's merges file."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    with gzip.open(merges_file) as f:
        lines = f.read().decode("utf-8").split("\n")[1 : _MERGE_COUNT + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = _byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), START, END]
    ids = {token: i for i, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.BPE(vocab=ids, merges=merges, end_of_word_suffix="</w>", unk_token=None,
                                     fuse_unk=False, continuing_subword_prefix=""))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_WORDS), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, ids[START]), (END, ids[END])]
    )
    tokenizer.add_special_tokens([START, END])
    return tokenizer


def save_tokenizer(tokenizer, path: Path) -> None:
    """Write tokenizer.json compact, with each merge as one "a b" string (the form every reader of the format
    takes, unambiguous here: no CLIP token holds a space): a query's process reads it in 0.04 s instead of 0.06 s."""
    data = json.loads(tokenizer.to_str())
    merges = data["model"]["merges"]
    if all(isinstance(pair, list) and not any(" " in token for token in pair) for pair in merges):
        data["model"]["merges"] = [" ".join(pair) for pair in merges]
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
