"""The packaged man-pages retrieval sample, by its evaluation name.

The samples themselves are listed once, in :data:`embedkit.data.samples.SAMPLES` (``sample:manpages`` in a recipe
or on the command line); this module only keeps the evaluation API's names for them.

Example:
    >>> from embedkit.evaluation.samples import manpages_path
    >>> from embedkit.data.beir import load_beir
    >>> len(load_beir(manpages_path()).queries) > 900
    True
"""

from __future__ import annotations

from pathlib import Path

from embedkit.data.samples import sample_path, samples_root

__all__ = ["manpages_path", "samples_root"]


def manpages_path() -> Path:
    """The Linux man-pages BEIR folder (``sample:manpages``): query = a page's NAME one-liner, document = its
    DESCRIPTION section.

    Built by ``eval/build_manpages.py`` from the Debian ``manpages`` and ``manpages-dev`` packages; see the
    folder's ``README.md`` for licences and how to rebuild it.
    """
    return sample_path("manpages")
