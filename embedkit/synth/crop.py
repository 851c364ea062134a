"""The no-LLM fallback (``--method crop``): pseudo-queries cut from the document itself.

Why: a machine without a usable generator can still adapt an encoder to its corpus. Contriever trains on
*independent cropping* (a random span of a document as the query, the document as the positive); a document's
title -- or, without one, its first line, removed from the positive as in the inverse cloze task -- is a natural
extra pseudo-query. Each document's crops come from its own seeded generator (seed and document id), so they do
not depend on batching or on where a resumed run started.

Example:
    >>> from embedkit.synth.corpus import Document
    >>> from embedkit.synth.crop import crop_queries
    >>> doc = Document("ls", "List information about the FILEs (the current directory by default).", title="ls")
    >>> [(q.query_type, q.query) for q in crop_queries(doc, 1, seed=0)]
    [('title', 'ls')]
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from embedkit.synth.corpus import Document

__all__ = ["Candidate", "crop_queries"]


@dataclass(frozen=True)
class Candidate:
    """One query made for a document, with the positive it should be paired with."""

    query: str
    query_type: str
    positive: str
    #: who made it: the cropper (spans of the document by design: never "copied") or the generator
    source: Literal["crop", "llm"] = "crop"


def _first_line(text: str) -> tuple[str, str]:
    """The first line (or sentence) of ``text`` and the rest; the rest is empty when there is one line only."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1:
        return lines[0], " ".join(lines[1:])
    head, dot, tail = text.partition(". ")
    if dot and tail.strip():
        return head.strip() + ".", tail.strip()
    return text.strip(), ""


def crop_queries(doc: Document, n: int, *, seed: int = 0, min_ratio: float = 0.1,
                 max_ratio: float = 0.5) -> list[Candidate]:
    """``n`` pseudo-queries for ``doc``: first its title (or first line), then random word spans.

    A span holds ``round(U(min_ratio, max_ratio) x words)`` words (at least one) at a uniform start; its positive
    is the whole document (Contriever's crops overlap their positive too).
    """
    rng = random.Random(f"crop:{seed}:{doc.id}")
    out: list[Candidate] = []
    if doc.title:
        out.append(Candidate(doc.title, "title", doc.text))
    else:
        head, rest = _first_line(doc.text)
        if rest:
            out.append(Candidate(head, "title", rest))
    tokens = doc.full_text.split()
    while len(out) < n:
        length = max(1, round(rng.uniform(min_ratio, max_ratio) * len(tokens)))
        start = rng.randrange(0, len(tokens) - length + 1)
        out.append(Candidate(" ".join(tokens[start:start + length]), "crop", doc.full_text))
    return out[:n]
