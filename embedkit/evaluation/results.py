"""What an evaluation measured: checkpoints, tasks and per-task scores (``EvalResults``), and their JSON form.

These types sit below both :mod:`embedkit.evaluation.runner` (which fills them) and
:mod:`embedkit.evaluation.report` (which renders them), so neither imports the other's module back.

Example:
    >>> from embedkit.evaluation.results import CheckpointInfo, EvalResults, TaskScore
    >>> ck = [CheckpointInfo("base", "minilm", "embedkit/base", "r1")]
    >>> res = EvalResults(ck, [{"name": "t", "type": "Retrieval", "main_score": "ndcg_at_10", "source": "-",
    ...                         "revision": "-"}], {"base": {"t": TaskScore("t", "Retrieval", "ndcg_at_10", 0.5)}})
    >>> res.score("base", "t")
    0.5
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from embedkit.errors import InputError

__all__ = ["SUMMARY_FORMAT", "CheckpointInfo", "EvalResults", "TaskScore"]

SUMMARY_FORMAT = "embedkit-eval/1"


@dataclass
class CheckpointInfo:
    """One evaluated checkpoint: its report label, where it came from and the mteb model name/revision used."""

    label: str
    source: str
    model_name: str
    revision: str
    #: the embedding dimension scored (``evaluate(..., dims=[...])``: truncated and re-normalised); ``None`` = full
    dim: int | None = None
    #: the checkpoint's label without the ``@dim`` suffix (``None`` when no dims were asked)
    checkpoint: str | None = None


@dataclass
class TaskScore:
    """Scores of one checkpoint on one task (from mteb's result)."""

    task: str
    task_type: str
    main_metric: str
    main_score: float | None
    metrics: dict[str, float | None] = field(default_factory=dict)
    result_file: str | None = None


@dataclass
class EvalResults:
    """Everything an :func:`evaluate` call measured; ``scores[label][task]`` is a :class:`TaskScore`."""

    checkpoints: list[CheckpointInfo]
    tasks: list[dict[str, str]]
    scores: dict[str, dict[str, TaskScore]]
    split: str = "test"
    output_dir: str | None = None
    created: str = ""
    run_key: str = ""
    #: who computed the scores (named in REPORT.md): ``mteb`` for :func:`evaluate`; benchmark scripts that score
    #: with :func:`~embedkit.evaluation.scoring.score_beir` (equal to mteb's nDCG within 1e-4, tested) say so
    scorer: str = "mteb"
    #: the dims every checkpoint was scored at (largest first), or ``None`` (full dimension only)
    dims: list[int] | None = None

    def dim_curve(self, checkpoint: str, task: str) -> list[tuple[int, float | None]]:
        """``[(dim, main score), ...]`` of one checkpoint (its label without ``@dim``) on a task, largest dim
        first; empty when the run asked for no dims."""
        return [(c.dim, self.scores[c.label][task].main_score) for c in self.checkpoints
                if c.dim is not None and c.checkpoint == checkpoint]

    def score(self, checkpoint: str, task: str, metric: str | None = None) -> float | None:
        """Main score (or ``metric``, e.g. ``"ndcg@10"``) of a checkpoint label on a task."""
        try:
            ts = self.scores[checkpoint][task]
        except KeyError:
            raise InputError(f"no result for checkpoint '{checkpoint}' on task '{task}'",
                             hint=f"checkpoints: {list(self.scores)}; tasks: {[t['name'] for t in self.tasks]}") from None
        return ts.main_score if metric is None else ts.metrics.get(metric)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes ``None``) -- the content of ``summary.json``."""
        import embedkit

        try:
            import mteb

            mteb_version = mteb.__version__
        except Exception:  # pragma: no cover - mteb is a dependency
            mteb_version = None
        return _nan_to_none({
            "format": SUMMARY_FORMAT,
            "created": self.created,
            "embedkit_version": embedkit.__version__,
            "mteb_version": mteb_version,
            "run_key": self.run_key,
            "scorer": self.scorer,
            "split": self.split,
            "dims": self.dims,
            "checkpoints": [asdict(c) for c in self.checkpoints],
            "tasks": self.tasks,
            "scores": {lab: {t: asdict(s) for t, s in per.items()} for lab, per in self.scores.items()},
        })


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj
