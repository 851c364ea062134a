"""``training.png``: what a training run did, per step -- loss, in-batch accuracy and (where evaluated) nDCG.

Every ``embedkit train`` run writes ``OUT/training.png`` (refreshed at every checkpoint save and at the end, so a
long run can be watched) and the numbers behind it as ``training_log.json`` in the stage folder (``OUT`` for a
single-stage recipe, ``OUT/stages/NN-NAME/`` per stage of a multi-stage one). A multi-stage recipe gets one row of
panels per stage in the same ``OUT/training.png``; a resumed run keeps the steps logged before the interruption
(the Trainer restores its log history from the checkpoint).

The panels read the Trainer's log history: ``loss`` and ``accuracy`` (the in-batch top-1 accuracy of the
contrastive loss, logged every ``training.logging_steps``) and the held-out ``eval_ndcg@k`` (every
``eval.every_steps``; the score before training, when measured, is the point at step 0). matplotlib is imported
only when a plot is drawn, through its object API and the Agg canvas: no display, no global backend change.

Example:
    >>> from embedkit.training.plots import StageLog, build_figure
    >>> log = StageLog("", [{"loss": 2.0, "accuracy": 0.4, "step": 10}, {"loss": 1.5, "accuracy": 0.6, "step": 20},
    ...                     {"eval_ndcg@10": 0.71, "step": 20}], baseline={"ndcg@10": 0.65})
    >>> [ax.get_title() for ax in build_figure([log]).axes]
    ['training loss', 'in-batch accuracy', 'held-out nDCG@10']
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from embedkit.utils.io import atomic_file

__all__ = ["TRAINING_LOG", "TRAINING_PLOT", "StageLog", "TrainingPlotCallback", "build_figure", "eval_key",
           "read_stage_log", "series", "write_training_plot"]

TRAINING_PLOT = "training.png"
TRAINING_LOG = "training_log.json"
LOG_FORMAT = "embedkit-training-log/1"


@dataclass
class StageLog:
    """One stage's log: its name (``""`` for a single-stage recipe), the Trainer's ``log_history`` entries and the
    scores measured before training (``{"ndcg@10": ...}``, plotted at step 0)."""

    name: str
    history: list[dict[str, Any]]
    baseline: dict[str, float] = field(default_factory=dict)


def series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Steps and finite values of ``key`` in a log history (entries without ``step`` or the key are skipped)."""
    steps: list[int] = []
    values: list[float] = []
    for entry in history:
        v = entry.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and "step" in entry:
            steps.append(int(entry["step"]))
            values.append(float(v))
    return steps, values


def eval_key(stage: StageLog) -> str | None:
    """The held-out nDCG key of a stage's log (``eval_ndcg@10``), or ``None`` when it was never evaluated."""
    keys = sorted({k for e in stage.history for k in e if k.startswith("eval_") and "ndcg@" in k
                   and "best_" not in k})
    if keys:
        return keys[0]
    base = sorted(k for k in stage.baseline if k.startswith("ndcg@"))
    return f"eval_{base[0]}" if base else None


def _panels(stages: Sequence[StageLog]) -> list[str]:
    evaluated = any(eval_key(s) is not None for s in stages)
    return ["loss", "accuracy", *(["ndcg"] if evaluated else [])]


def build_figure(stages: Sequence[StageLog]) -> Any:
    """The ``matplotlib.figure.Figure`` of ``training.png``: one row per stage, one panel per measure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(stages)
    any_key = next((k for k in map(eval_key, stages) if k is not None), "eval_ndcg@10")
    fig = Figure(figsize=(4.2 * len(panels), 3.2 * len(stages)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(stages), len(panels), squeeze=False)
    for row, stage in zip(axes, stages):
        prefix = f"{stage.name}: " if stage.name else ""
        key = eval_key(stage) or any_key
        for ax, panel in zip(row, panels):
            if panel == "loss":
                title, xs, ys = "training loss", *series(stage.history, "loss")
            elif panel == "accuracy":
                title, xs, ys = "in-batch accuracy", *series(stage.history, "accuracy")
            else:
                metric = key[len("eval_"):]
                title = f"held-out nDCG@{metric.partition('@')[2]}"
                xs, ys = series(stage.history, key)
                if metric in stage.baseline:
                    xs, ys = [0, *xs], [float(stage.baseline[metric]), *ys]
            ax.set_title(prefix + title, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.2)
            else:
                ax.text(0.5, 0.5, "not logged yet\n(fewer steps than training.logging_steps)"
                        if panel != "ndcg" else "not evaluated in this stage",
                        ha="center", va="center", fontsize=8, color="0.4", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def write_training_plot(stages: Sequence[StageLog], path: str | os.PathLike) -> Path:
    """Draw :func:`build_figure` into ``path`` (PNG), atomically: a reader never sees half a file."""
    fig = build_figure(stages)
    target = Path(path)
    with atomic_file(target) as tmp:
        fig.savefig(tmp, format="png")
    return target


def write_stage_log(stage: StageLog, path: str | os.PathLike) -> None:
    """``training_log.json`` of one stage (atomic)."""
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps({"format": LOG_FORMAT, **asdict(stage)}, indent=1) + "\n", encoding="utf-8")


def read_stage_log(path: str | os.PathLike) -> StageLog | None:
    """The :class:`StageLog` saved at ``path``; ``None`` when it is missing or unreadable (the plot then lacks
    that stage, training goes on)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return StageLog(str(raw["name"]), list(raw["history"]), dict(raw.get("baseline") or {}))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class TrainingPlotCallback(TrainerCallback):
    """Redraw ``training.png`` (and save ``training_log.json``) at every checkpoint save; :meth:`finish` at the end.

    Args:
        plot: the PNG to write (``OUT/training.png``).
        log: this stage's ``training_log.json``.
        stage: the stage's name (``""`` for a single-stage recipe).
        previous: the logs of the stages before this one (their rows come first).
        baseline: scores measured before training (``{"ndcg@10": ...}``); when empty, those of an earlier
            ``log`` of this stage are kept (a resumed run does not measure the baseline again).
    """

    def __init__(self, plot: str | os.PathLike, log: str | os.PathLike, *, stage: str = "",
                 previous: Sequence[StageLog] = (), baseline: Mapping[str, float] | None = None) -> None:
        self.plot = Path(plot)
        self.log = Path(log)
        self.stage = stage
        self.previous = list(previous)
        earlier = read_stage_log(self.log) if not baseline else None
        self.baseline = dict(baseline or (earlier.baseline if earlier else {}))

    def stage_log(self, history: Sequence[Mapping[str, Any]]) -> StageLog:
        return StageLog(self.stage, [dict(e) for e in history], dict(self.baseline))

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        current = self.stage_log(history)
        write_stage_log(current, self.log)
        write_training_plot([*self.previous, current], self.plot)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.write(state.log_history)

    def finish(self, state: TrainerState, final_scores: Mapping[str, float] | None = None,
               prefix: str = "eval_") -> StageLog:
        """Write the final plot; ``final_scores`` (measured after training) become the last step's point unless
        the log already holds a score at that step. Returns this stage's log."""
        history = [dict(e) for e in state.log_history]
        if final_scores:
            step = state.global_step
            if not any(e.get("step") == step and any(k.startswith(prefix) for k in e) for e in history):
                history.append({**{f"{prefix}{k}": float(v) for k, v in final_scores.items()}, "step": step})
        self.write(history)
        return self.stage_log(history)
