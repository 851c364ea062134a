"""The one text-equality key: when are two texts "the same document"?

Two places ask it and must agree: the miner's duplicate filter (:mod:`embedkit.mining.filters`: a candidate whose
text equals a positive's is not a negative) and the loss's duplicate mask (:func:`embedkit.losses.base.hash_texts`:
a negative whose text hash equals the positive's is masked). With two rules, a pair one rule calls a duplicate and
the other does not is first kept by the miner as a hard negative and then masked by the loss -- or the reverse.
Both import :func:`normalize_text` from here, the lowest layer (no embedkit imports).

The key folds what does not change what a reader sees or searches for:

* Unicode compatibility forms (NFKC): full-width letters, ligatures (``\\ufb01`` -> ``fi``), superscripts,
  combining accents vs precomposed letters;
* case, with full case folding (``Straße`` = ``STRASSE``); NFKC is applied again after folding, so the key is
  itself normalised (``normalize_text(normalize_text(t)) == normalize_text(t)``);
* invisible format characters (Unicode category Cf: zero-width space, soft hyphen, a stray byte-order mark,
  direction marks);
* whitespace: runs collapse to one space, ends are stripped.

Punctuation is kept: ``ls -l`` and ``ls –l`` or ``C++`` and ``C`` are different texts. Folding more makes both users
drop more (a negative dropped or masked is lost, not mislabelled), folding less lets duplicates through as negatives.

Example:
    >>> from embedkit.data.normalize import normalize_text
    >>> normalize_text("  \\uff2c\\uff33  lists\\u200b FILES ")
    'ls lists files'
    >>> normalize_text("ls -l") == normalize_text("ls \\u2013l")
    False
"""

from __future__ import annotations

import functools
import sys
import unicodedata

__all__ = ["normalize_text"]


@functools.cache
def _drop_format_chars() -> dict[int, None]:
    """``str.translate`` table deleting every Unicode format character (category Cf); built once, on first use."""
    return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf"}


def normalize_text(text: str) -> str:
    """The text-equality key (see the module docstring): NFKC, case-folded, format characters dropped, whitespace
    collapsed. ASCII text takes a fast path with the same result (lower-case, collapsed whitespace)."""
    if text.isascii():
        return " ".join(text.lower().split())
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.translate(_drop_format_chars()).split())
