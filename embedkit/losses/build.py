"""Turn the ``losses:`` settings (:class:`~embedkit.losses.config.LossConfig`) into the loss module training runs.

Above both the settings and the loss classes (which validate their own arguments through the settings models),
so neither imports the other back.

Example:
    >>> from embedkit.losses.build import build_loss
    >>> type(build_loss({"infonce": {"temperature": 0.02}, "listwise": {"weight": 0.5}})).__name__
    'CombinedLoss'
    >>> tamber = build_loss({"listwise": {"weight": 1.0, "temperature": 0.05, "teacher_temperature": 0.3},
    ...                      "infonce": {"weight": 0.1, "teacher_mask_ratio": 0.9}})
    >>> tamber.weights, tamber.losses["infonce"].teacher_mask_ratio
    ({'infonce': 0.1, 'listwise': 1.0}, 0.9)
    >>> mrl = build_loss({"infonce": {}, "spread_out": {"weight": 0.1}, "matryoshka": {"dims": [384, 128]}})
    >>> type(mrl).__name__, mrl.dims, mrl.inner.weights
    ('MatryoshkaLoss', [384, 128], {'infonce': 1.0, 'spread_out': 0.1})
"""

from __future__ import annotations

from embedkit.losses.base import EmbeddingLoss
from embedkit.losses.combined import CombinedLoss
from embedkit.losses.config import LossConfig
from embedkit.losses.infonce import InfoNCELoss
from embedkit.losses.listwise import ListwiseDistillationLoss
from embedkit.losses.margin_mse import MarginMSELoss
from embedkit.losses.masking import FalseNegativeMasking
from embedkit.losses.matryoshka import MatryoshkaLoss
from embedkit.losses.mixing import HardNegativeMixing
from embedkit.losses.spread_out import SpreadOutLoss
from embedkit.validation import validate


def build_loss(cfg: LossConfig | dict) -> EmbeddingLoss:
    """The loss module a :class:`LossConfig` describes (a single loss when only one is set).

    ``spread_out`` joins the sum as one more weighted component; ``matryoshka`` wraps the whole sum, so every
    component -- the regulariser included -- is repeated at each truncated dim."""
    if isinstance(cfg, dict):
        cfg = validate(LossConfig, cfg, prefix="losses.")
    parts: dict[str, tuple[EmbeddingLoss, float]] = {}
    if cfg.infonce is not None:
        c = cfg.infonce
        parts["infonce"] = (
            InfoNCELoss(
                temperature=c.temperature,
                symmetric=c.symmetric,
                use_hard_negatives=c.use_hard_negatives,
                focal_gamma=c.focal_gamma,
                mixing=HardNegativeMixing(**c.mixing.model_dump()) if c.mixing else None,
                masking=FalseNegativeMasking(**c.masking.model_dump()) if c.masking else None,
                teacher_mask_ratio=c.teacher_mask_ratio,
                hardness=c.hardness,
            ),
            c.weight,
        )
    if cfg.listwise is not None:
        c2 = cfg.listwise
        parts["listwise"] = (ListwiseDistillationLoss(c2.temperature, c2.teacher_temperature), c2.weight)
    if cfg.margin_mse is not None:
        parts["margin_mse"] = (MarginMSELoss(scale=cfg.margin_mse.scale), cfg.margin_mse.weight)
    if cfg.spread_out is not None:
        c3 = cfg.spread_out
        parts["spread_out"] = (SpreadOutLoss(over=c3.over, form=c3.form), c3.weight)
    inner: EmbeddingLoss = CombinedLoss(parts)
    if len(parts) == 1:
        ((loss, weight),) = parts.values()
        if weight == 1.0:
            inner = loss
    if cfg.matryoshka is not None:
        return MatryoshkaLoss(inner, cfg.matryoshka.dims, cfg.matryoshka.weights)
    return inner
