"""Score a held-out BEIR split during training, log it, and keep the best checkpoint.

Training loss says little about retrieval quality (InfoNCE keeps falling while nDCG peaks and drops when
hard negatives hold false negatives). This callback runs :func:`embedkit.evaluation.score_beir` -- exact search,
a few seconds on ~1k documents -- every ``every_n_steps`` optimizer steps, logs ``eval_<name>_ndcg@10`` (and the
other metrics) into the trainer's log history (and to TensorBoard / W&B when attached with :meth:`attach`), and
with ``keep_best`` saves the best model so far into ``best_dir`` atomically (a crash never leaves a half-written
"best" folder), with ``best.json`` recording the metric and step.

Why not transformers' ``metric_for_best_model`` / ``load_best_model_at_end``? They only see metrics of
``Trainer.evaluate`` (which needs an eval dataset and a loss pass) and only pick among saved ``checkpoint-*``
folders, which ``save_total_limit`` may already have deleted; scoring retrieval directly and saving the best model
when it appears needs neither.

The every-N-steps scoring and logging is :class:`embedkit.training.trainer.ScoringCallback` (what ``embedkit
train`` uses with ``eval.every_steps``); this class adds the metric check, the BEIR folder loading and ``keep_best``.

Works with ``sentence_transformers.SentenceTransformerTrainer`` (the model is a ``SentenceTransformer``) and with a
plain ``transformers.Trainer`` if you pass the ``SentenceTransformer`` that wraps the trained backbone as
``model=``. In distributed runs only the main process scores and saves.

Example:
    >>> from embedkit.evaluation.callback import RetrievalEvalCallback
    >>> cb = RetrievalEvalCallback("heldout_beir/", every_n_steps=100, metric="ndcg@10", keep_best=True,
    ...                            best_dir="runs/best")                                       # doctest: +SKIP
    >>> trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)  # doctest: +SKIP
    >>> cb.attach(trainer)      # adds the callback and routes its logs through trainer.log       # doctest: +SKIP
    >>> trainer.train(); cb.best_metric, cb.best_step                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sentence_transformers import SentenceTransformer
from transformers import TrainingArguments

from embedkit.data.beir import BeirData, load_beir
from embedkit.errors import ConfigError
from embedkit.evaluation.scoring import check_metric, score_beir
from embedkit.training.trainer import ScoringCallback

logger = logging.getLogger(__name__)

__all__ = ["RetrievalEvalCallback"]


class RetrievalEvalCallback(ScoringCallback):
    """A ``TrainerCallback`` that scores retrieval on a local BEIR split every N steps.

    Args:
        beir: a BEIR folder or a :class:`~embedkit.data.beir.BeirData`.
        every_n_steps: score after every this many optimizer steps (and at the end of training).
        metric: the metric that decides "best": ``ndcg@k``, ``recall@k``, ``mrr@k`` or ``precision@k``.
        keep_best: save the model into ``best_dir`` whenever ``metric`` improves.
        best_dir: where the best model goes (default: ``<TrainingArguments.output_dir>/best-retrieval``).
        k_values: cut-offs to compute (the metric's own ``k`` is always included).
        max_queries / max_corpus: evaluate a seeded subset (see :meth:`BeirData.subset`) to keep it fast.
        batch_size: encoding batch size.
        eval_at_start: also score before the first step (the baseline).
        prefix: log key prefix (default ``eval_<dataset name>_``).
        model: the ``SentenceTransformer`` to score, when the trainer's own model is not one.
        split: qrels split of a BEIR folder.

    Attributes:
        history: ``[(step, {metric: value})]`` of every evaluation.
        best_metric / best_step: the best value of ``metric`` so far and the step it was reached at.
    """

    def __init__(
        self,
        beir: str | os.PathLike | BeirData,
        every_n_steps: int = 100,
        metric: str = "ndcg@10",
        keep_best: bool = True,
        *,
        best_dir: str | os.PathLike | None = None,
        k_values: Sequence[int] = (10,),
        max_queries: int | None = None,
        max_corpus: int | None = None,
        batch_size: int = 32,
        eval_at_start: bool = False,
        prefix: str | None = None,
        model: SentenceTransformer | None = None,
        split: str = "test",
    ) -> None:
        if every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be >= 1 (got {every_n_steps})", where="every_n_steps")
        k = check_metric(metric)
        data = beir if isinstance(beir, BeirData) else load_beir(beir, split=split)
        if max_queries is not None or max_corpus is not None:
            data = data.subset(max_queries=max_queries, max_corpus=max_corpus)
        super().__init__(data, score_beir, every_n_steps, k_values=tuple(sorted({*map(int, k_values), k})),
                         batch_size=batch_size, eval_at_start=eval_at_start,
                         prefix=prefix if prefix is not None else f"eval_{data.name}_", model=model)
        self.metric = metric
        self.keep_best = keep_best
        self.best_dir = Path(best_dir) if best_dir is not None else None
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self._improved = False

    @property
    def metric_key(self) -> str:
        """The log key of the deciding metric, e.g. ``eval_manpages_ndcg@10``."""
        return f"{self.prefix}{self.metric}"

    def _best_dir(self, args: TrainingArguments) -> Path:
        return self.best_dir if self.best_dir is not None else Path(args.output_dir) / "best-retrieval"

    def scored(self, model: SentenceTransformer, args: TrainingArguments, step: int, scores: dict[str, float],
               logs: dict[str, float]) -> None:
        value = scores[self.metric]
        self._improved = self.best_metric is None or value > self.best_metric
        if self._improved:
            self.best_metric, self.best_step = value, step
        logs[f"{self.prefix}best_{self.metric}"] = float(self.best_metric)  # type: ignore[arg-type]

    def logged(self, model: SentenceTransformer, args: TrainingArguments, step: int,
               scores: dict[str, float]) -> None:
        logger.info("step %d: %s = %.4f (best %.4f at step %s)", step, self.metric_key, scores[self.metric],
                    self.best_metric, self.best_step)
        if self._improved and self.keep_best:
            self._save_best(model, args, step, scores)

    def _save_best(self, model: SentenceTransformer, args: TrainingArguments, step: int,
                   scores: dict[str, float]) -> None:
        from embedkit.utils.io import atomic_dir

        target = self._best_dir(args)
        with atomic_dir(target, overwrite=True) as tmp:
            model.save(str(tmp))
            record = {"metric": self.metric, "value": scores[self.metric], "step": step, "scores": scores,
                      "data": self.data.name, "queries": len(self.data.queries), "documents": len(self.data.corpus)}
            (tmp / "best.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
