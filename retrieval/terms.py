"""The query syntax people type: words and images joined by + and -, each optionally weighted.

    horse + stripes          apple - fruit          ./night.jpg + snow          2:golden retriever + beach

Tokens between operators form one term (so unquoted words work); a term that names an existing file is an
image term; one that looks like a path to an image but names nothing is an error, not a sentence.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Sequence

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError

_WEIGHTED = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.+)$", re.S)
_PATH_PREFIXES = ("./", "../", "~/", "/")


@dataclass(frozen=True)
class Term:
    value: str  # the sentence, or the image's path
    is_image: bool
    weight: float  # negative for a subtracted term


def _looks_like_path(text: str) -> bool:
    return text.startswith(_PATH_PREFIXES) or os.path.splitext(text)[1].lower() in config.IMAGE_EXTENSIONS


def _term(words: list[str], sign: float, files: bool) -> Term:
    text = " ".join(words).strip()
    weight = 1.0
    match = _WEIGHTED.match(text)
    if match:
        weight, text = float(match.group(1)), match.group(2).strip()
    if not text:
        raise ClipdexError("a query term is empty")
    if not files:
        return Term(text, False, sign * weight)
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        return Term(path, True, sign * weight)
    if _looks_like_path(text):
        raise ClipdexError(f"no such image: {text} (a term that looks like a path must name a file)")
    return Term(text, False, sign * weight)


def split_query(query: str) -> list[str]:
    """One typed string into tokens: + and - count as operators only with spaces around them."""
    return [token.strip() for token in re.split(r"\s+([+-])\s+", " " + query.strip() + " ") if token.strip()]


def parse_terms(tokens: Sequence[str], files: bool = True) -> list[Term]:
    """Terms from tokens; with files=False (queries arriving over HTTP) every term is text, so a request
    can never make clipdex open a path."""
    if tokens and not any(token.strip() for token in tokens):
        raise ClipdexError("the query text is empty")
    terms: list[Term] = []
    words: list[str] = []
    sign = 1.0
    for token in tokens:
        if token in ("+", "-"):
            if not words:
                raise ClipdexError(f"'{token}' must stand between two terms, e.g. \"apple\" {token} \"fruit\"")
            terms.append(_term(words, sign, files))
            words, sign = [], (1.0 if token == "+" else -1.0)
        else:
            words.append(token)
    if not words:
        raise ClipdexError("the query is empty" if not terms else "the query ends with an operator")
    terms.append(_term(words, sign, files))
    return terms
