"""Turn a batch of :class:`~embedkit.data.schema.Pair` records into model inputs plus what the losses need.

Per batch (all rows from one data set -- see :mod:`embedkit.training.sampler`):

* queries: prompt + query text, the prompt being the record's own instruction, else the data set's, else the
  model's query prompt (:func:`embedkit.models.prompts.query_prompt_for`); ``prompt_length`` is passed so pooling
  with ``exclude_prompt`` skips the instruction tokens -- one length per row (``per_row_prompt_lengths``), since
  records' own instructions differ in length, where the model's pooling reads it per row;
* documents: per query the positive, then up to ``max_negatives`` hard negatives (ragged: ``docs_per_query``
  counts each row's documents, the loss side builds ``doc_mask``), with the model's document prompt;
* ``doc_hash``: int64 hashes of each document's normalised text (false-negative masking of duplicates);
* ``teacher_scores``: flat, aligned with the documents, ``NaN`` where unknown (listwise distillation).

Which positive and which window of negatives a record contributes rotates with the epoch (deterministically), so
multi-positive records and long mined lists are all used over a run without any randomness to checkpoint.

Example:
    >>> from embedkit.data.schema import Pair
    >>> from embedkit.training.collator import PairCollator, TrainExample
    >>> from transformers import AutoTokenizer                                  # doctest: +SKIP
    >>> col = PairCollator(AutoTokenizer.from_pretrained(path), max_length=64)  # doctest: +SKIP
    >>> batch = col([TrainExample(Pair("q", ["pos"], ["neg"]), 0)])             # doctest: +SKIP
    >>> batch["docs_per_query"].tolist()                                        # doctest: +SKIP
    [2]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from embedkit.data.schema import Pair
from embedkit.losses.base import hash_texts
from embedkit.models.prompts import query_prompt_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """Per-data-set collation settings (from the recipe's ``data.datasets`` entry)."""

    name: str
    in_batch_negatives: bool = True
    max_negatives: int = 7
    instruction: str | None = None


@dataclass(frozen=True)
class TrainExample:
    """One pair and the index of the data set it belongs to."""

    pair: Pair
    dataset: int
    epoch: int = 0


@dataclass
class PairDataset(Dataset):
    """The concatenation of several data sets' pairs (global index = offset of its data set + local index).

    ``epoch`` is set by :meth:`set_epoch` (the sampler forwards the Trainer's call), and selects which positive /
    negative window each record contributes.
    """

    datasets: list[list[Pair]]
    specs: list[DatasetSpec]
    epoch: int = 0
    offsets: list[int] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.datasets) != len(self.specs):
            raise ValueError("one spec per data set")
        self.offsets = [sum(len(d) for d in self.datasets[:i]) for i in range(len(self.datasets))]

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.datasets]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def replace(self, dataset: int, pairs: Sequence[Pair]) -> None:
        """Swap data set ``dataset``'s records for ``pairs`` (re-mined negatives, :mod:`embedkit.training.refresh`).

        The batch sampler has already laid out this epoch's batches by index, so the new list must hold the same
        records in the same order (only their negatives and teacher scores change); anything else is refused rather
        than silently training on other pairs.

        Example:
            >>> ds = PairDataset([[Pair("q", ["p"], ["old"])]], [DatasetSpec("d")])
            >>> ds.replace(0, [Pair("q", ["p"], ["new"])])
            >>> ds[0].pair.negatives
            ['new']
        """
        old = self.datasets[dataset]
        new = list(pairs)
        if len(new) != len(old) or any(a.query != b.query for a, b in zip(old, new)):
            raise ValueError(f"data set {self.specs[dataset].name!r}: the replacement has {len(new)} records, "
                             f"{len(old)} expected, in the same order (only negatives may change)")
        self.datasets[dataset] = new

    def __getitem__(self, index: int) -> TrainExample:
        if index < 0 or index >= len(self):
            raise IndexError(index)
        for d in range(len(self.datasets) - 1, -1, -1):
            if index >= self.offsets[d]:
                return TrainExample(self.datasets[d][index - self.offsets[d]], d, self.epoch)
        raise IndexError(index)  # pragma: no cover


def _rotate(items: Sequence[Any], start: int, count: int) -> list[int]:
    """Indices of a window of ``count`` items starting at ``start``, wrapping around."""
    n = len(items)
    if n == 0 or count <= 0:
        return []
    count = min(count, n)
    return [(start + i) % n for i in range(count)]


class PairCollator:
    """Tokenise a task-homogeneous list of :class:`TrainExample` into one training batch.

    Args:
        tokenizer: the model's tokenizer.
        specs: per-data-set settings, indexed like ``TrainExample.dataset``.
        max_length: truncation length (the model's ``max_seq_length``).
        query_prompt / document_prompt: the model's role prompts (``model.prompts``).
        prompt_style: the recipe's prompt style; decides whether instructions become query prompts.
        per_row_prompt_lengths: pass ``prompt_length`` as one length per row, shape ``(batch,)``, so records whose
            own instructions differ in length each drop exactly their instruction. Set it only when every module of
            the model reads per-row lengths -- ``enable_per_row_prompt_lengths(model)``
            (:mod:`embedkit.models.pooling`) makes sure of that and says whether it holds. sentence-transformers'
            ``Pooling`` with ``include_prompt=False`` reads ``prompt_length[0]`` for every row; for it (the default,
            ``False``) the batch's shortest prompt length is passed, shape ``(1,)``: the tail of longer instructions
            is pooled (never a row's own query tokens), and a warning says so once.
    """

    def __init__(
        self,
        tokenizer: Any,
        specs: Sequence[DatasetSpec] = (DatasetSpec("default"),),
        *,
        max_length: int = 512,
        query_prompt: str = "",
        document_prompt: str = "",
        prompt_style: str = "none",
        per_row_prompt_lengths: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.specs = list(specs)
        self.max_length = int(max_length)
        self.query_prompt = query_prompt or ""
        self.document_prompt = document_prompt or ""
        self.prompt_style = prompt_style
        self.per_row_prompt_lengths = bool(per_row_prompt_lengths)
        self._prompt_len_cache: dict[str, int] = {}
        self._warned_shared_length = False

    # -- helpers -------------------------------------------------------------------------------------------------
    def prompt_length(self, prompt: str) -> int:
        """Tokens the prompt occupies at the start of a tokenised text (closing special token excluded)."""
        if not prompt:
            return 0
        if prompt not in self._prompt_len_cache:
            ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
            n = len(ids)
            sep = {getattr(self.tokenizer, "sep_token_id", None), getattr(self.tokenizer, "eos_token_id", None)}
            if ids and ids[-1] in sep - {None}:
                n -= 1
            self._prompt_len_cache[prompt] = n
        return self._prompt_len_cache[prompt]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return dict(enc)

    def query_prompt_for(self, pair: Pair, spec: DatasetSpec) -> str:
        instruction = pair.instruction or spec.instruction
        return query_prompt_for(instruction, self.prompt_style, self.query_prompt)

    def _query_prompt_length(self, lengths: list[int]) -> torch.Tensor:
        """``prompt_length`` for the queries: per row ``(batch,)``, or the shortest as ``(1,)`` (see the class)."""
        if self.per_row_prompt_lengths:
            # GradCache slices a tensor whose first dimension is the batch with the rows, so chunks keep theirs
            return torch.tensor(lengths, dtype=torch.long)
        if len(set(lengths)) > 1 and not self._warned_shared_length:
            self._warned_shared_length = True
            logger.warning(
                "records' instructions differ in token length (%d to %d) but the model's pooling reads one prompt "
                "length per batch: the shortest is used, so the tail of longer instructions is pooled; "
                "embedkit.models.pooling.enable_per_row_prompt_lengths(model) fixes that", min(lengths), max(lengths))
        # shape (1,), not a 0-dim tensor: sentence-transformers' Pooling reads ``prompt_length[0]``
        return torch.tensor([min(lengths)], dtype=torch.long)

    # -- collation -----------------------------------------------------------------------------------------------
    def __call__(self, examples: Sequence[TrainExample]) -> dict[str, Any]:
        if not examples:
            raise ValueError("empty batch")
        ds = examples[0].dataset
        if any(e.dataset != ds for e in examples):
            raise ValueError("a batch mixes data sets; use TaskBatchSampler")
        spec = self.specs[ds]
        queries: list[str] = []
        prompt_lengths: list[int] = []
        docs: list[str] = []
        counts: list[int] = []
        teacher: list[float] = []
        has_teacher = False
        for ex in examples:
            p = ex.pair
            prompt = self.query_prompt_for(p, spec)
            queries.append(prompt + p.query)
            prompt_lengths.append(self.prompt_length(prompt))
            pi = ex.epoch % len(p.positives)
            neg_idx = _rotate(p.negatives, ex.epoch * spec.max_negatives, spec.max_negatives)
            docs.append(self.document_prompt + p.positives[pi])
            docs.extend(self.document_prompt + p.negatives[j] for j in neg_idx)
            counts.append(1 + len(neg_idx))
            pos_s = p.positive_scores[pi] if p.positive_scores else math.nan
            teacher.append(float(pos_s))
            for j in neg_idx:
                teacher.append(float(p.negative_scores[j]) if p.negative_scores else math.nan)
            has_teacher = has_teacher or bool(p.positive_scores) or bool(p.negative_scores)
        q_feats = self.tokenize(queries)
        if any(prompt_lengths):
            q_feats["prompt_length"] = self._query_prompt_length(prompt_lengths)
        d_feats = self.tokenize(docs)
        doc_plen = self.prompt_length(self.document_prompt)
        if doc_plen:
            d_feats["prompt_length"] = torch.tensor([doc_plen])
        raw_docs = [d[len(self.document_prompt):] for d in docs]
        return {
            "query": q_feats,
            "docs": d_feats,
            "docs_per_query": torch.tensor(counts, dtype=torch.long),
            "doc_hash": hash_texts(raw_docs),
            "teacher_scores": torch.tensor(teacher, dtype=torch.float32) if has_teacher else None,
            "in_batch_negatives": spec.in_batch_negatives,
            "dataset": spec.name,
        }
