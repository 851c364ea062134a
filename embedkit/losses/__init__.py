"""Losses on embeddings: InfoNCE (in-batch + hard negatives, masking, mixing, focal), listwise distillation, sums.

Every loss takes an :class:`EmbeddingBatch` and returns ``(loss, stats)``; see :mod:`embedkit.losses.base` for the
batch layout and ``docs/losses.md`` for the recipes.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import InfoNCELoss, make_batch
    >>> q = F.normalize(torch.randn(4, 8), dim=-1); d = F.normalize(torch.randn(8, 8), dim=-1)
    >>> loss, stats = InfoNCELoss()(make_batch(q, d, docs_per_query=2))
"""

from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss, hash_texts, make_batch, normalize_text, stack_docs
from embedkit.losses.combined import CombinedLoss, WeightedSum
from embedkit.losses.config import InfoNCEConfig, ListwiseConfig, LossConfig, MaskingConfig, MixingConfig, build_loss
from embedkit.losses.infonce import InfoNCELoss
from embedkit.losses.listwise import ListwiseDistillationLoss
from embedkit.losses.masking import FalseNegativeMasking
from embedkit.losses.mixing import HardNegativeMixing, MixResult

__all__ = [
    "CombinedLoss",
    "EmbeddingBatch",
    "EmbeddingLoss",
    "FalseNegativeMasking",
    "HardNegativeMixing",
    "InfoNCEConfig",
    "InfoNCELoss",
    "ListwiseConfig",
    "ListwiseDistillationLoss",
    "LossConfig",
    "MaskingConfig",
    "MixResult",
    "MixingConfig",
    "WeightedSum",
    "build_loss",
    "hash_texts",
    "make_batch",
    "normalize_text",
    "stack_docs",
]
