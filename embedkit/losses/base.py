"""What every embedkit loss sees: a batch of *embeddings* (never texts or token ids).

Losses work on embeddings only so that :class:`~embedkit.training.gradcache.GradCache` can cache them: it encodes
the texts chunk by chunk without a graph, hands the loss leaf tensors, and replays the encoder afterwards with the
gradients the loss produced. Anything a loss needs from the texts (text-equality for false-negative masking, teacher
scores for distillation) therefore travels as tensors aligned with the documents.

Layout (``B`` queries, ``N`` hard negatives per query, ``D`` dimensions):

* ``q`` -- ``(B, D)`` query embeddings (L2-normalised by the model pipeline, so dot products are cosines);
* ``docs`` -- ``(B, 1 + N, D)``: the positive at ``[:, 0]``, then the query's own hard negatives;
* ``doc_mask`` -- ``(B, 1 + N)`` bool, ``False`` for padding slots of rows that have fewer negatives (ragged);
* ``doc_hash`` -- ``(B, 1 + N)`` int64 hash of each document's normalised text (:func:`hash_texts`);
* ``teacher_scores`` -- ``(B, 1 + N)`` teacher scores for listwise distillation (``NaN`` = unknown);
* ``in_batch_negatives`` -- also use the other rows' documents as negatives (turn off for datasets where another
  row's document may well be relevant, e.g. classification or clustering data);
* ``local_rows`` -- with cross-device negatives the batch holds every rank's rows, but each rank computes the
  loss for its own rows only (the others are extra negatives); ``None`` means all rows.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from embedkit.losses import InfoNCELoss, make_batch
    >>> q = F.normalize(torch.randn(4, 8), dim=-1)
    >>> d = F.normalize(torch.randn(4 * 3, 8), dim=-1)     # per query: positive + 2 negatives, flattened
    >>> batch = make_batch(q, d, docs_per_query=3)
    >>> loss, stats = InfoNCELoss(temperature=0.05)(batch)
    >>> loss.shape, sorted(stats)[:2]
    (torch.Size([]), ['accuracy', 'loss'])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from embedkit.data.normalize import normalize_text
from embedkit.errors import ConfigError, InputError

__all__ = ["EmbeddingBatch", "EmbeddingLoss", "hash_texts", "make_batch", "normalize_text", "stack_docs"]


@dataclass
class EmbeddingBatch:
    """One training batch as embeddings; see the module docstring for shapes.

    Attributes:
        q: ``(B, D)`` query embeddings.
        docs: ``(B, 1 + N, D)`` documents; positive at ``[:, 0]``; ``N`` may be 0.
        doc_mask: ``(B, 1 + N)`` bool or ``None`` (all slots valid). The positive slot must be valid.
        doc_hash: ``(B, 1 + N)`` int64 text hashes or ``None`` (no text-equality masking).
        teacher_scores: ``(B, 1 + N)`` float teacher scores or ``None``.
        in_batch_negatives: score each query against every row's documents (``True``) or only its own.
        local_rows: the rows this process computes the loss for (cross-device negatives); ``None`` = all rows.
    """

    q: Tensor
    docs: Tensor
    doc_mask: Tensor | None = None
    doc_hash: Tensor | None = None
    teacher_scores: Tensor | None = None
    in_batch_negatives: bool = True
    local_rows: slice | None = None

    def __post_init__(self) -> None:
        self.validate()

    # -- shape helpers -------------------------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        """Rows (queries) in the batch, all ranks included."""
        return int(self.q.shape[0])

    @property
    def docs_per_query(self) -> int:
        """``1 + N``: slots per row (positive + hard negatives, padding included)."""
        return int(self.docs.shape[1])

    @property
    def rows(self) -> slice:
        """The rows whose loss is computed here (``local_rows`` or all rows)."""
        if self.local_rows is None:
            return slice(0, self.num_rows)
        start, stop, _ = self.local_rows.indices(self.num_rows)
        return slice(start, stop)

    def valid_mask(self) -> Tensor:
        """``(B, 1 + N)`` bool: ``doc_mask`` or all-true."""
        if self.doc_mask is None:
            return torch.ones(self.docs.shape[:2], dtype=torch.bool, device=self.docs.device)
        return self.doc_mask

    def teacher_rows(self, key: str, what: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(q, docs, teacher)`` of the local rows in float32, for a distillation loss at recipe key ``key``.

        Raises a one-line :class:`~embedkit.errors.ConfigError` naming ``key`` when the batch has no teacher scores.
        """
        if self.teacher_scores is None:
            raise ConfigError(
                f"{what} needs teacher scores in the batch", where=key,
                hint=f"mine negatives with a teacher (positive_scores / negative_scores) or remove {key}",
            )
        rows = self.rows
        q = self.q[rows].float()
        return q, self.docs[rows].float(), self.teacher_scores[rows].float().to(q.device)

    def with_local_rows(self, rows: slice | None) -> EmbeddingBatch:
        """A shallow copy whose loss is computed for ``rows`` only."""
        return replace(self, local_rows=rows)

    def validate(self) -> None:
        """Check shapes and dtypes; raises :class:`~embedkit.errors.InputError` naming the field."""
        q, docs = self.q, self.docs
        if q.dim() != 2:
            raise InputError(f"q must be (B, D), got shape {tuple(q.shape)}", where="EmbeddingBatch.q")
        if docs.dim() != 3 or docs.shape[0] != q.shape[0] or docs.shape[2] != q.shape[1] or docs.shape[1] < 1:
            raise InputError(
                f"docs must be (B, 1+N, D) = ({q.shape[0]}, >=1, {q.shape[1]}), got {tuple(docs.shape)}",
                where="EmbeddingBatch.docs",
                hint="put the positive at docs[:, 0] and the hard negatives after it",
            )
        for name in ("doc_mask", "doc_hash", "teacher_scores"):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != tuple(docs.shape[:2]):
                raise InputError(
                    f"{name} must be aligned with docs, shape {tuple(docs.shape[:2])}, got {tuple(t.shape)}",
                    where=f"EmbeddingBatch.{name}",
                )
        if self.doc_mask is not None:
            if self.doc_mask.dtype != torch.bool:
                raise InputError("doc_mask must be a bool tensor", where="EmbeddingBatch.doc_mask")
            if not bool(self.doc_mask[:, 0].all()):
                raise InputError(
                    "every row needs a positive: doc_mask[:, 0] must be True", where="EmbeddingBatch.doc_mask"
                )
        if self.doc_hash is not None and self.doc_hash.dtype != torch.int64:
            raise InputError("doc_hash must be an int64 tensor (see hash_texts)", where="EmbeddingBatch.doc_hash")


class EmbeddingLoss(torch.nn.Module):
    """Base class of embedkit losses: ``loss, stats = loss_fn(batch)``.

    ``forward`` returns a scalar loss (mean over the batch's local rows) and a dict of plain floats for logging
    (always ``"loss"``; e.g. ``"accuracy"``, ``"masked_false_negatives"``). Losses must be deterministic functions
    of the batch (and of an explicit seed/step for random ones) so that GradCache gives the same gradients as the
    uncached computation.
    """

    def forward(self, batch: EmbeddingBatch) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover - abstract
        raise NotImplementedError


# -- helpers to build batches ---------------------------------------------------------------------------------------


def hash_texts(texts: Sequence[str]) -> Tensor:
    """``(len(texts),)`` int64 hashes of :func:`~embedkit.data.normalize.normalize_text` (stable across processes,
    unlike ``hash()``) -- the same key the miner's duplicate filter compares, so both judge a pair alike.

    Example:
        >>> h = hash_texts(["Hello  World", "hello world", "other"])
        >>> bool(h[0] == h[1]), bool(h[0] == h[2])
        (True, False)
    """
    out = [
        int.from_bytes(hashlib.blake2b(normalize_text(t).encode("utf-8"), digest_size=8).digest(), "little", signed=True)
        for t in texts
    ]
    return torch.tensor(out, dtype=torch.int64)


def stack_docs(doc_emb: Tensor, docs_per_query: int | Sequence[int]) -> tuple[Tensor, Tensor | None]:
    """Reshape flat document embeddings ``(sum(counts), D)`` into ``(B, 1 + N_max, D)`` plus a ragged mask.

    ``docs_per_query`` is one count for every row (no mask needed) or one count per row (positive included);
    documents must be ordered row by row, positive first.
    """
    if isinstance(docs_per_query, int):
        if docs_per_query < 1 or doc_emb.shape[0] % docs_per_query:
            raise InputError(
                f"{doc_emb.shape[0]} documents cannot be split into rows of {docs_per_query}",
                where="make_batch.docs_per_query",
            )
        return doc_emb.reshape(-1, docs_per_query, doc_emb.shape[-1]), None
    counts = [int(c) for c in docs_per_query]
    if any(c < 1 for c in counts) or sum(counts) != doc_emb.shape[0]:
        raise InputError(
            f"per-row document counts {counts} do not add up to {doc_emb.shape[0]} documents (each >= 1)",
            where="make_batch.docs_per_query",
        )
    width = max(counts)
    b = len(counts)
    counts_t = torch.tensor(counts, device=doc_emb.device)
    mask = torch.arange(width, device=doc_emb.device).unsqueeze(0) < counts_t.unsqueeze(1)
    docs = doc_emb.new_zeros(b, width, doc_emb.shape[-1])
    docs = docs.masked_scatter(mask.unsqueeze(-1), doc_emb)  # differentiable w.r.t. doc_emb
    return docs, mask


def make_batch(
    q: Tensor,
    doc_emb: Tensor,
    docs_per_query: int | Sequence[int],
    *,
    doc_hash: Tensor | None = None,
    teacher_scores: Tensor | None = None,
    in_batch_negatives: bool = True,
) -> EmbeddingBatch:
    """Build an :class:`EmbeddingBatch` from flat embeddings (what a ``build_batch`` callback usually does).

    Args:
        q: ``(B, D)`` query embeddings.
        doc_emb: ``(sum(counts), D)`` document embeddings, row by row, positive first.
        docs_per_query: ``1 + N`` for every row, or a list of per-row counts (ragged rows get a ``doc_mask``).
        doc_hash / teacher_scores: flat ``(sum(counts),)`` tensors aligned with ``doc_emb`` (or already
            ``(B, 1 + N)``); padded like the documents.
        in_batch_negatives: see :class:`EmbeddingBatch`.
    """

    def _shape(t: Tensor | None, fill: float | int) -> Tensor | None:
        if t is None or t.dim() == 2:
            return t
        flat = t.to(doc_emb.device)
        if isinstance(docs_per_query, int):
            return flat.reshape(-1, docs_per_query)
        assert mask is not None
        out = torch.full(mask.shape, fill, dtype=flat.dtype, device=flat.device)
        out[mask] = flat
        return out

    docs, mask = stack_docs(doc_emb, docs_per_query)
    return EmbeddingBatch(
        q=q,
        docs=docs,
        doc_mask=mask,
        doc_hash=_shape(doc_hash, 0),
        teacher_scores=_shape(teacher_scores, float("nan")),
        in_batch_negatives=in_batch_negatives,
    )
