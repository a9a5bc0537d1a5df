"""The query syntax people type: words and images joined by + and -, each optionally weighted.

    horse + stripes          apple - fruit          ./night.jpg + snow          2:golden retriever + beach

Tokens between operators form one term (so unquoted words work); a term that names an existing file is an
image term; one that looks like a path to an image but names nothing is an error, not a sentence.

Every query, typed or arriving over HTTP, is parsed here, so its limits (length, terms, weights: see config) are
checked here once, before any term is embedded: each term costs an encoder pass under the server's query lock.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Sequence

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError, NotFound

_WEIGHTED = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.+)$", re.S)
_PATH_PREFIXES = ("./", "../", "~/", "/")


@dataclass(frozen=True)
class Term:
    value: str  # the sentence, or the image's path
    is_image: bool
    weight: float  # negative for a subtracted term


def _looks_like_path(text: str) -> bool:
    suffix = os.path.splitext(text)[1].lower()
    return text.startswith(_PATH_PREFIXES) or suffix in config.IMAGE_EXTENSIONS or suffix in config.VIDEO_EXTENSIONS


def _term(words: list[str], sign: float, files: bool) -> Term:
    text = " ".join(words).strip()
    weight = 1.0
    match = _WEIGHTED.match(text)
    if match:
        weight, text = float(match.group(1)), match.group(2).strip()
        if not math.isfinite(weight) or weight > config.MAX_TERM_WEIGHT:
            # float("9" * 400) is inf, and inf × a vector is NaN: the search would silently find nothing
            shown = match.group(1) if len(match.group(1)) <= 20 else match.group(1)[:20] + "…"
            raise ClipdexError(f"term weight {shown} is too large: use at most {config.MAX_TERM_WEIGHT:g}")
    if not text:
        raise ClipdexError("a query term is empty")
    if not files:
        return Term(text, False, sign * weight)
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        return Term(path, True, sign * weight)
    if _looks_like_path(text):
        raise NotFound(f"no such image: {text} (a term that looks like a path must name a file)")
    return Term(text, False, sign * weight)


def split_query(query: str) -> list[str]:
    """One typed string into tokens: + and - count as operators only with spaces around them."""
    return [token.strip() for token in re.split(r"\s+([+-])\s+", " " + query.strip() + " ") if token.strip()]


def command_line_tokens(arguments: Sequence[str]) -> list[str]:
    """A query's shell arguments as the tokens of one typed string: `search "red circle + blue square"` reads as
    `search red circle + blue square` does, and as the same text through Python or HTTP. An argument naming a
    file is kept whole (its name may hold " - ")."""
    tokens: list[str] = []
    for argument in arguments:
        whole = argument in ("+", "-") or os.path.isfile(argument) or not argument.strip()  # "" stays: an empty text
        tokens += [argument] if whole else split_query(argument)
    return tokens


def parse_terms(tokens: Sequence[str], files: bool = True) -> list[Term]:
    """Terms from tokens; with files=False (queries arriving over HTTP) every term is text, so a request
    can never make clipdex open a path.

    Refuses queries over config.MAX_QUERY_CHARS characters or config.MAX_QUERY_TERMS terms before any work."""
    length = sum(len(token) for token in tokens) + max(len(tokens) - 1, 0)  # as typed, one space between tokens
    if length > config.MAX_QUERY_CHARS:
        raise ClipdexError(f"the query is {length:,} characters long: at most {config.MAX_QUERY_CHARS:,} are allowed")
    operators = sum(token in ("+", "-") for token in tokens)
    if operators + 1 > config.MAX_QUERY_TERMS:
        raise ClipdexError(f"the query has {operators + 1:,} terms: at most {config.MAX_QUERY_TERMS} are allowed")
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
