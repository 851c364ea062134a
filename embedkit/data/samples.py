"""Paths of the small real data sets that ship inside the embedkit package (no download, no apt).

``debian-train`` is a JSONL file of (synopsis -> long description) training pairs from Debian package
descriptions; ``debian-beir`` is a BEIR folder of held-out packages (other source families) whose corpus also holds
the training documents, so retrieval runs against ~11k realistic documents. See
``embedkit/datasets/debian/README.md`` for the licence and how ``eval/build_debian.py`` built them.

``manpages`` is the Linux man-pages BEIR folder (one-line NAME summary -> DESCRIPTION, 1,006 pages; its only qrels
split is ``test``; ``embedkit/datasets/manpages/README.md``): a second task from another source, which
``recipes/nv-embed-two-stage.yaml`` blends into stage 2 (``split: test`` named explicitly; that recipe evaluates on
``debian-beir``, so it never trains on what it scores).

Recipes, ``embedkit mine --pairs`` / ``--corpus``, ``embedkit mntp --data`` and every other data path accept
``sample:NAME`` for a sample (:func:`resolve_data_path`); :data:`SAMPLES` is the one list of them.

Example:
    >>> from embedkit.data.samples import resolve_data_path, sample_path
    >>> resolve_data_path("sample:manpages") == sample_path("manpages")
    True
    >>> from embedkit.data.readers import load_pairs
    >>> pairs = load_pairs(sample_path("debian-train"))
    >>> len(pairs) > 1000
    True
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from embedkit.errors import InputError

__all__ = ["SAMPLES", "SAMPLE_PREFIX", "resolve_data_path", "sample_path", "samples_root"]

#: a data path that starts with this names a packaged sample: ``sample:debian-train``
SAMPLE_PREFIX = "sample:"

_ROOT = Path(__file__).resolve().parent.parent / "datasets"

#: name -> path relative to ``embedkit/datasets``
SAMPLES: dict[str, str] = {
    "debian-train": "debian/train.jsonl.gz",
    "debian-beir": "debian/beir",
    "manpages": "manpages",
}


def sample_path(name: str) -> Path:
    """The packaged file or folder of sample ``name`` (one of :data:`SAMPLES`)."""
    if name not in SAMPLES:
        close = difflib.get_close_matches(name, sorted(SAMPLES), n=1, cutoff=0.6)
        did = f" (did you mean 'sample:{close[0]}'?)" if close else ""
        raise InputError(f"unknown sample '{name}'{did}", hint=f"use one of {', '.join(sorted(SAMPLES))}")
    path = _ROOT / SAMPLES[name]
    if not path.exists():
        raise InputError(f"sample '{name}' is missing from the installation ({path})",
                         hint="reinstall embedkit; the package data was not installed")
    return path


def samples_root() -> Path:
    """The folder holding the packaged samples (``embedkit/datasets``)."""
    return _ROOT


def resolve_data_path(path: str | os.PathLike[str]) -> Path:
    """``sample:NAME`` -> the packaged sample (:func:`sample_path`); anything else -> that path (``~`` expanded).

    Example:
        >>> resolve_data_path("pairs.jsonl")
        PosixPath('pairs.jsonl')
    """
    text = os.fspath(path)
    if text.startswith(SAMPLE_PREFIX):
        return sample_path(text[len(SAMPLE_PREFIX):])
    return Path(text).expanduser()
