"""Losses on embeddings: InfoNCE (in-batch + hard negatives, masking, mixing, focal, hardness weighting), listwise
and margin-MSE distillation, the spread-out regulariser, Matryoshka dims, sums.

Every loss takes an :class:`EmbeddingBatch` and returns ``(loss, stats)``; see :mod:`embedkit.losses.base` for the
batch layout and ``docs/losses.md`` for the recipes. Names are imported on first use: the settings
(``LossConfig``...) need only pydantic, the losses themselves bring in torch.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import InfoNCELoss, make_batch
    >>> q = F.normalize(torch.randn(4, 8), dim=-1); d = F.normalize(torch.randn(8, 8), dim=-1)
    >>> loss, stats = InfoNCELoss()(make_batch(q, d, docs_per_query=2))
"""

from __future__ import annotations

from embedkit.utils.lazy import lazy_exports

_LAZY: dict[str, str] = {
    "EmbeddingBatch": "embedkit.losses.base",
    "EmbeddingLoss": "embedkit.losses.base",
    "hash_texts": "embedkit.losses.base",
    "make_batch": "embedkit.losses.base",
    "normalize_text": "embedkit.losses.base",
    "stack_docs": "embedkit.losses.base",
    "CombinedLoss": "embedkit.losses.combined",
    "WeightedSum": "embedkit.losses.combined",
    "InfoNCEConfig": "embedkit.losses.config",
    "ListwiseConfig": "embedkit.losses.config",
    "LossConfig": "embedkit.losses.config",
    "MarginMSEConfig": "embedkit.losses.config",
    "MaskingConfig": "embedkit.losses.config",
    "MixingConfig": "embedkit.losses.config",
    "HardnessConfig": "embedkit.losses.config",
    "MatryoshkaConfig": "embedkit.losses.config",
    "SpreadOutConfig": "embedkit.losses.config",
    "MatryoshkaLoss": "embedkit.losses.matryoshka",
    "check_dims": "embedkit.losses.matryoshka",
    "truncate": "embedkit.losses.matryoshka",
    "SpreadOutLoss": "embedkit.losses.spread_out",
    "spread_out_moments": "embedkit.losses.spread_out",
    "build_loss": "embedkit.losses.build",
    "InfoNCELoss": "embedkit.losses.infonce",
    "ListwiseDistillationLoss": "embedkit.losses.listwise",
    "MarginMSELoss": "embedkit.losses.margin_mse",
    "FalseNegativeMasking": "embedkit.losses.masking",
    "HardNegativeMixing": "embedkit.losses.mixing",
    "MixResult": "embedkit.losses.mixing",
}


__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
