"""Evaluation: fast exact BEIR scoring, mteb runs on checkpoints (hub tasks or local BEIR / STS files), reports.

* :func:`score_beir` -- exact nDCG / Recall / MRR of one model on a BEIR split, in seconds (soups, callbacks);
  :func:`beir_score_fn` wraps it as the ``score_fn`` of a greedy :func:`embedkit.soup.soup`;
* :func:`evaluate` -- several checkpoints x mteb tasks -> mteb result JSONs + ``REPORT.md`` + chart + ``summary.json``;
* :class:`~embedkit.evaluation.callback.RetrievalEvalCallback` -- score a held-out split during training;
* :func:`manpages_path` -- the packaged Linux man-pages retrieval sample (976 queries / documents).

Heavy imports (mteb, matplotlib, transformers' Trainer) happen only when the matching name is used.

Example:
    >>> from embedkit.evaluation import evaluate, manpages_path
    >>> res = evaluate(["minilm"], beir=[manpages_path()], output_dir="eval-out")   # doctest: +SKIP
    >>> res.score("minilm", "manpages")                                               # doctest: +SKIP
    0.70...
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BeirScoreFn",
    "EvalResults",
    "RetrievalEvalCallback",
    "beir_score_fn",
    "evaluate",
    "manpages_path",
    "retrieval_metrics",
    "score_beir",
]

_LAZY = {
    "score_beir": "embedkit.evaluation.scoring",
    "beir_score_fn": "embedkit.evaluation.scoring",
    "BeirScoreFn": "embedkit.evaluation.scoring",
    "retrieval_metrics": "embedkit.evaluation.scoring",
    "evaluate": "embedkit.evaluation.runner",
    "EvalResults": "embedkit.evaluation.results",
    "RetrievalEvalCallback": "embedkit.evaluation.callback",
    "manpages_path": "embedkit.evaluation.samples",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embedkit.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
