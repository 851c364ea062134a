"""Small real evaluation samples shipped inside the package (no download needed).

Example:
    >>> from embedkit.evaluation.samples import manpages_path
    >>> from embedkit.data.beir import load_beir
    >>> len(load_beir(manpages_path()).queries) > 900
    True
"""

from __future__ import annotations

from pathlib import Path

from embedkit.errors import InputError

__all__ = ["manpages_path", "samples_root"]


def samples_root() -> Path:
    """Folder holding the packaged samples (``embedkit/datasets``)."""
    return Path(__file__).resolve().parent.parent / "datasets"


def manpages_path() -> Path:
    """The Linux man-pages BEIR folder: query = a page's NAME one-liner, document = its DESCRIPTION section.

    Built by ``eval/build_manpages.py`` from the Debian ``manpages`` and ``manpages-dev`` packages; see the
    folder's ``README.md`` for licences and how to rebuild it.
    """
    path = samples_root() / "manpages"
    if not (path / "corpus.jsonl").is_file():
        raise InputError(f"the man-pages sample is missing from {path}",
                         hint="reinstall embedkit, or rebuild it with: python eval/build_manpages.py")
    return path
