"""Filters for synthetic queries, each counted: empty, over-long, copied from the document, duplicate, and
round-trip consistency.

Why each: small generators return empty strings or ramble (empty, over-long); they copy a sentence of the document
instead of asking about it (copied -- a verbatim span teaches the encoder string matching, not retrieval); they
repeat themselves (duplicate); and a query that the source document does not answer better than the rest of the
corpus is noise (round trip, as in PAQ / InPars-v2: keep a query only if an encoder ranks its document in the
top-k).

The copy rule looks at the longest word span the query shares verbatim with the document: a short keyword query
("list files") naturally appears in its document and is kept; "the ls command lists directory contents" lifted
whole is dropped. The default: a span of at least 4 words covering at least 80 % of the query.

Example:
    >>> from embedkit.synth.filters import is_copied, round_trip_keep
    >>> doc = "The ls command lists directory contents in long or short form."
    >>> is_copied("list files", doc), is_copied("The ls command lists directory contents", doc)
    (False, True)
    >>> import numpy as np
    >>> round_trip_keep(np.array([[1.0, 0.0], [0.0, 1.0]]), np.eye(2), [0, 0], k=1).tolist()
    [True, False]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FILTERS", "FilterStats", "duplicate_mask", "first_failing", "is_copied", "is_empty", "is_too_long",
           "normalize", "round_trip_keep", "words"]

#: every filter, in the order they apply (and the summary lists them)
FILTERS = ("empty", "too_long", "copied", "duplicate", "round_trip")

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Casefolded word tokens (letters, digits, underscore): what the filters compare."""
    return _WORD.findall(text.casefold())


def normalize(text: str) -> str:
    """The key two queries are duplicates under: their words, casefolded, joined by single spaces."""
    return " ".join(words(text))


def is_empty(query: str) -> bool:
    """No word at all (blank, or only punctuation)."""
    return not words(query)


def is_too_long(query: str, max_words: int) -> bool:
    return len(words(query)) > max_words


def _longest_common_span(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest run of words ``a`` and ``b`` share (dynamic programming, O(len a x len b))."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def is_copied(query: str, doc: str, *, min_words: int = 4, max_ratio: float = 0.8) -> bool:
    """True when the query shares a verbatim span of ``>= min_words`` words with ``doc`` covering
    ``>= max_ratio`` of the query's words (the whole query copied counts once it has ``min_words`` words)."""
    q = words(query)
    if len(q) < min_words:
        return False
    span = _longest_common_span(q, words(doc))
    return span >= min_words and span / len(q) >= max_ratio


def first_failing(query: str, doc: str, *, max_words: int, copy_min_words: int, copy_max_ratio: float,
                  check_copied: bool = True) -> str | None:
    """The name of the first per-document filter ``query`` fails (empty, too_long, copied), or None."""
    if is_empty(query):
        return "empty"
    if is_too_long(query, max_words):
        return "too_long"
    if check_copied and is_copied(query, doc, min_words=copy_min_words, max_ratio=copy_max_ratio):
        return "copied"
    return None


def duplicate_mask(queries: Sequence[str]) -> list[bool]:
    """``True`` for the first occurrence of each normalised query, ``False`` for its repeats (input order)."""
    seen: set[str] = set()
    keep = []
    for q in queries:
        key = normalize(q)
        keep.append(key not in seen)
        seen.add(key)
    return keep


def round_trip_keep(query_emb: np.ndarray, doc_emb: np.ndarray, sources: Sequence[int], *, k: int) -> np.ndarray:
    """Keep query ``i`` iff its source document ``sources[i]`` is in its top ``k`` by dot product.

    The rank is the number of documents scoring *strictly* higher than the source, so ties favour the source.
    Embeddings are compared as given (normalise them for cosine).
    """
    if len(sources) == 0:
        return np.zeros(0, dtype=bool)
    scores = np.asarray(query_emb, dtype=np.float32) @ np.asarray(doc_emb, dtype=np.float32).T
    src = np.asarray(sources, dtype=np.int64)
    own = scores[np.arange(len(src)), src]
    rank = (scores > own[:, None]).sum(axis=1)
    return rank < k


@dataclass
class FilterStats:
    """Counts: queries generated, removed by each filter, and kept."""

    documents: int = 0
    generated: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {name: 0 for name in FILTERS})
    kept: int = 0

    def summary(self) -> str:
        parts = ", ".join(f"{name} {self.removed.get(name, 0)}" for name in FILTERS)
        return (f"{self.documents} documents, {self.generated} queries generated, {self.kept} kept "
                f"(removed: {parts})")
