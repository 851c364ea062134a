"""False-negative masking: drop "negatives" that are probably relevant before they are pushed away.

In-batch negatives are other queries' positives, and mined hard negatives are close to the query by construction;
some of them answer the query as well as the labelled positive does (duplicate documents, paraphrases, a second
valid answer). Training against them teaches the model to separate relevant documents -- a well-known source of
noise (NV-Retriever's positive-aware mining, Qwen3-Embedding / KaLM-V2 in-batch masking). This module finds them
*online*, on the current embeddings, and the loss removes them from the softmax (score -> ``-inf``):

* similarity rule: a negative whose cosine exceeds the positive's by more than ``margin`` (``score > positive +
  margin``; ``margin=0.1`` as in Qwen3-Embedding's in-batch mask), or exceeds ``ratio * positive`` (``ratio=0.95`` is
  NV-Retriever's TopK-PercPos rule applied in the batch); either or both may be set. A negative margin masks
  negatives *below* the positive too (``-0.1``: anything within 0.1 of it) -- on the Debian quality benchmark that
  removes the hardest true negatives and costs accuracy (BENCHMARKS.md), so the default only masks negatives the
  current model already ranks clearly above the labelled positive;
* text rule: a negative whose text hash (:func:`~embedkit.losses.base.hash_texts`) equals the row's positive's
  (the same document appearing as another row's positive, or mined back as a negative).

The positive itself and padding slots are never counted. Decisions use detached scores (a mask, no gradient).
The losses report the number of masked entries per step as ``stats["masked_false_negatives"]``.

Example:
    >>> import torch
    >>> from embedkit.losses import FalseNegativeMasking
    >>> scores = torch.tensor([[0.7, 0.85, 0.75, 0.2]])          # positive at column 0
    >>> FalseNegativeMasking(margin=0.1).find(scores, torch.tensor([0])).tolist()
    [[False, True, False, False]]
"""

from __future__ import annotations

import torch
from torch import Tensor

from embedkit.losses.config import MaskingConfig, loss_settings


class FalseNegativeMasking:
    """Decide which negatives to mask (see module docstring).

    Args:
        margin: mask negatives with ``score > positive_score + margin`` (``None`` turns the rule off; a negative
            value also masks negatives just below the positive).
        ratio: mask negatives with ``score > ratio * positive_score`` (``None`` = off).
        mask_duplicates: mask negatives whose text hash equals the positive's (needs ``doc_hash`` in the batch).
    """

    def __init__(self, margin: float | None = 0.1, ratio: float | None = None, mask_duplicates: bool = True) -> None:
        cfg = loss_settings(MaskingConfig, "losses.infonce.masking", margin=margin, ratio=ratio,
                            mask_duplicates=mask_duplicates)  # the bounds live in MaskingConfig
        self.margin = cfg.margin
        self.ratio = cfg.ratio
        self.mask_duplicates = cfg.mask_duplicates

    def __repr__(self) -> str:
        return f"FalseNegativeMasking(margin={self.margin}, ratio={self.ratio}, mask_duplicates={self.mask_duplicates})"

    @torch.no_grad()
    def find(
        self,
        scores: Tensor,
        labels: Tensor,
        valid: Tensor | None = None,
        col_hash: Tensor | None = None,
        pos_hash: Tensor | None = None,
    ) -> Tensor:
        """``(b, C)`` bool: the entries to mask.

        Args:
            scores: ``(b, C)`` cosine scores (before temperature).
            labels: ``(b,)`` column of each row's positive (never masked).
            valid: ``(b, C)`` bool, entries that exist (padding is never counted as masked).
            col_hash: ``(b, C)`` or ``(C,)`` text hash of every column's document.
            pos_hash: ``(b,)`` text hash of each row's positive.
        """
        scores = scores.detach()
        b, c = scores.shape
        rows = torch.arange(b, device=scores.device)
        pos = scores[rows, labels].unsqueeze(1)
        out = torch.zeros_like(scores, dtype=torch.bool)
        if self.margin is not None:
            out |= scores > pos + self.margin
        if self.ratio is not None:
            out |= scores > pos * self.ratio
        if self.mask_duplicates and col_hash is not None and pos_hash is not None:
            ch = col_hash if col_hash.dim() == 2 else col_hash.unsqueeze(0).expand(b, c)
            out |= ch == pos_hash.unsqueeze(1)
        out[rows, labels] = False
        if valid is not None:
            out &= valid
        return out
