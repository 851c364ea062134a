"""Evaluation: fast exact BEIR scoring, mteb runs on checkpoints (hub tasks or local BEIR / STS files), reports.

* :func:`score_beir` -- exact nDCG / Recall / MRR of one model on a BEIR split, in seconds (soups, callbacks);
  :func:`beir_score_fn` wraps it as the ``score_fn`` of a greedy :func:`embedkit.soup.soup`;
  :func:`score_beir_at_dims` scores several Matryoshka dims from one encoding pass;
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

from embedkit.utils.lazy import lazy_exports

_LAZY = {
    "score_beir": "embedkit.evaluation.scoring",
    "score_beir_at_dims": "embedkit.evaluation.scoring",
    "beir_score_fn": "embedkit.evaluation.scoring",
    "BeirScoreFn": "embedkit.evaluation.scoring",
    "retrieval_metrics": "embedkit.evaluation.scoring",
    "evaluate": "embedkit.evaluation.runner",
    "rerank_beir": "embedkit.evaluation.rerank",
    "EvalResults": "embedkit.evaluation.results",
    "RetrievalEvalCallback": "embedkit.evaluation.callback",
    "manpages_path": "embedkit.evaluation.samples",
}


__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
