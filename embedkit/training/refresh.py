"""Dynamic hard-negative mining (Conan-embedding): re-mine the negatives with the current weights during training.

Negatives mined before training go stale: after a few hundred steps the model no longer finds them hard, while
documents it now confuses with the positive were never mined. With ``miner.refresh_every_steps: N`` a
:class:`NegativeRefreshCallback` re-encodes the corpus with the weights being trained every ``N`` optimizer steps,
re-mines with the recipe's own ``miner:`` filters (window, TopK-PercPos, teacher scores...), and swaps the new
negatives into the training data set (:meth:`~embedkit.training.collator.PairDataset.replace`) for the steps that
follow. The encoding goes through the offline miner (:func:`embedkit.mining.mine_hard_negatives`): it is sharded over
``torchrun`` ranks, and its cache is keyed by the live weights' fingerprint, so no (weights, text) pair is encoded
twice -- a resumed run that repeats a refresh reads it from the cache.

Exact on resume: each refresh is stored as ``<stage>/mined/refresh-STEP/NAME.jsonl`` (one file per data set, like
the first mining's ``mined/NAME.jsonl``); a run resumed at step ``R`` loads the latest refresh at a step ``<= R``
before its first batch, so it trains on the negatives an uninterrupted run used at that step. A refresh whose files
exist is read, not mined again.

Cost: each refresh's seconds are logged (``refresh_seconds`` in ``training_log.json``) and summed in
:attr:`NegativeRefreshCallback.seconds`.

Example:
    >>> from embedkit.training.refresh import NegativeRefreshCallback
    >>> cb = NegativeRefreshCallback(dataset, raw_pairs, names, every_n_steps=100, mined_dir=out / "mined",
    ...                              mine_fn=mine_with_recipe_settings)                          # doctest: +SKIP
    >>> trainer = EmbeddingTrainer(..., callbacks=[cb])                                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from embedkit.data.schema import Pair
from embedkit.training.collator import PairDataset

__all__ = ["NegativeRefreshCallback", "latest_refresh", "refresh_dir"]

logger = logging.getLogger(__name__)

#: ``mine_fn(records, model, output)``: mine ``records`` with ``model`` (a live SentenceTransformer) and write the
#: mined pairs to ``output`` on the main process (every rank calls it: the corpus encoding is sharded)
MineFn = Callable[[Sequence[Pair], Any, Path], None]

_REFRESH = re.compile(r"^refresh-(\d+)$")


def refresh_dir(mined_dir: Path, step: int) -> Path:
    """Where the refresh at ``step`` stores its mined files (``mined/refresh-STEP``)."""
    return Path(mined_dir) / f"refresh-{step}"


def latest_refresh(mined_dir: Path, names: Sequence[str], step: int) -> int | None:
    """The step of the latest complete refresh at or before ``step`` (every data set's file present), or ``None``.

    Example:
        >>> latest_refresh(Path("/nonexistent"), ["debian"], 10) is None
        True
    """
    best: int | None = None
    root = Path(mined_dir)
    if not root.is_dir():
        return None
    for child in root.iterdir():
        m = _REFRESH.match(child.name)
        if m is None or not child.is_dir():
            continue
        s = int(m.group(1))
        if s <= step and all((child / f"{n}.jsonl").is_file() for n in names) and (best is None or s > best):
            best = s
    return best


class NegativeRefreshCallback(TrainerCallback):
    """Re-mine the hard negatives every ``every_n_steps`` optimizer steps and swap them into ``dataset``.

    Args:
        dataset: the training :class:`~embedkit.training.collator.PairDataset` (its data sets are replaced in place).
        records: per data set, the records to mine for (the pairs as read, before the first mining).
        names: per data set, the name of its mined file (``NAME.jsonl``).
        every_n_steps: ``miner.refresh_every_steps``.
        mined_dir: the stage's ``mined/`` folder.
        mine_fn: mines one data set with the live model (see :data:`MineFn`).
        load_fn: reads a mined file back (:func:`embedkit.data.readers.load_pairs`, by default).
        barrier: waits for every rank (the main process writes the files the others read).
    """

    def __init__(self, dataset: PairDataset, records: Sequence[Sequence[Pair]], names: Sequence[str], *,
                 every_n_steps: int, mined_dir: Path, mine_fn: MineFn,
                 load_fn: Callable[[Path, str], list[Pair]] | None = None,
                 barrier: Callable[[], None] | None = None) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.dataset = dataset
        self.records = [list(r) for r in records]
        self.names = list(names)
        self.every_n_steps = int(every_n_steps)
        self.mined_dir = Path(mined_dir)
        self.mine_fn = mine_fn
        self.load_fn = load_fn or _load
        self.barrier = barrier or (lambda: None)
        #: ``(step, seconds)`` of each refresh this run did or read back
        self.history: list[tuple[int, float]] = []
        #: the step whose negatives the data set holds now (``None``: the first mining's)
        self.current: int | None = None

    @property
    def seconds(self) -> float:
        """Total seconds spent refreshing in this run."""
        return sum(s for _, s in self.history)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        # a resumed run: the negatives an uninterrupted run trained with after its last refresh <= this step
        if state.global_step > 0:
            step = latest_refresh(self.mined_dir, self.names, state.global_step)
            if step is not None:
                self._swap(step)
                logger.info("negatives: refresh of step %d reloaded for the resume at step %d", step,
                            state.global_step)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        step = state.global_step
        if step % self.every_n_steps or (state.max_steps and step >= state.max_steps):
            return  # the last step's refresh would train nothing
        model = kwargs.get("model")
        seconds = self.refresh(model, step)
        state.log_history.append({"refresh_seconds": round(seconds, 4), "step": step})

    def refresh(self, model: Any, step: int) -> float:
        """Mine every data set with ``model``'s current weights, store ``mined/refresh-STEP/``, swap; seconds taken."""
        start = time.perf_counter()
        folder = refresh_dir(self.mined_dir, step)
        if latest_refresh(self.mined_dir, self.names, step) != step:  # files of a crashed run's refresh are reused
            was_training = bool(getattr(model, "training", False))
            model.eval()
            try:
                for records, name in zip(self.records, self.names):
                    target = folder / f"{name}.jsonl"
                    if not target.is_file():
                        self.mine_fn(records, model, target)
            finally:
                model.train(was_training)
        self.barrier()
        self._swap(step)
        seconds = time.perf_counter() - start
        self.history.append((step, seconds))
        logger.info("negatives refreshed at step %d in %.1f s", step, seconds)
        return seconds

    def _swap(self, step: int) -> None:
        folder = refresh_dir(self.mined_dir, step)
        for d, name in enumerate(self.names):
            self.dataset.replace(d, self.load_fn(folder / f"{name}.jsonl", name))
        self.current = step


def _load(path: Path, name: str) -> list[Pair]:
    from embedkit.data.readers import load_pairs

    return list(load_pairs(path, dataset=name))
