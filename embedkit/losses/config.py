"""Validated loss settings (the ``losses:`` section of a training recipe).

These models are the only statement of the losses' bounds and defaults: the loss classes validate their
arguments through them too (:func:`loss_settings`), so a bad value reads the same -- naming the recipe key, e.g.
``losses.infonce.masking.margin`` -- whether it came from a recipe or from Python. This module needs only pydantic
(the loss classes, and torch, load when :func:`embedkit.losses.build.build_loss` turns settings into modules).

Example:
    >>> from embedkit.losses.config import LossConfig
    >>> cfg = LossConfig.model_validate({"infonce": {"temperature": 0.02, "masking": {"margin": 0.1}},
    ...                                  "listwise": {"weight": 0.5}})
    >>> cfg.needs_teacher_scores
    True
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedkit.validation import validate

_M = TypeVar("_M", bound=BaseModel)


def loss_settings(model: type[_M], key: str, **values: Any) -> _M:
    """Validate a loss class's arguments through its settings model; errors name the recipe key under ``key``.

    Example:
        >>> loss_settings(MaskingConfig, "losses.infonce.masking", margin=3.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        embedkit.errors.ConfigError: invalid value for 'losses.infonce.masking.margin': must be <= 2.0 (got 3.0) ...
    """
    return validate(model, values, prefix=key + ".")


class MaskingConfig(BaseModel):
    """:class:`FalseNegativeMasking` settings."""

    model_config = ConfigDict(extra="forbid")
    margin: float | None = Field(0.1, ge=-2.0, le=2.0)  # a cosine difference
    ratio: float | None = Field(None, gt=0.0, le=2.0)
    mask_duplicates: bool = True

    @model_validator(mode="after")
    def _has_a_rule(self) -> MaskingConfig:
        if self.margin is None and self.ratio is None and not self.mask_duplicates:
            raise ValueError("masking has no rule left (margin and ratio are null, mask_duplicates is false): set "
                             "margin or ratio, keep mask_duplicates on, or drop masking")
        return self


class MixingConfig(BaseModel):
    """:class:`HardNegativeMixing` settings."""

    model_config = ConfigDict(extra="forbid")
    num_mixed: int = Field(8, ge=0)
    hardest_k: int = Field(8, ge=1)
    mix_query: bool = False
    num_query_mixed: int | None = Field(None, ge=0)
    alpha_max: float = Field(0.5, gt=0.0, le=0.5)
    seed: int = 0


class InfoNCEConfig(BaseModel):
    """:class:`InfoNCELoss` settings plus its weight in the total."""

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(1.0, ge=0.0)
    temperature: float = Field(0.05, gt=0.0)
    symmetric: bool = False
    use_hard_negatives: bool = True
    focal_gamma: float = Field(0.0, ge=0.0)
    mixing: MixingConfig | None = None
    masking: MaskingConfig | None = None


class ListwiseConfig(BaseModel):
    """:class:`ListwiseDistillationLoss` settings plus its weight."""

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(1.0, ge=0.0)
    temperature: float = Field(0.05, gt=0.0)
    teacher_temperature: float = Field(1.0, gt=0.0)


class LossConfig(BaseModel):
    """Which losses to train with; at least one. Default: InfoNCE alone."""

    model_config = ConfigDict(extra="forbid")
    infonce: InfoNCEConfig | None = Field(default_factory=InfoNCEConfig)
    listwise: ListwiseConfig | None = None

    @model_validator(mode="after")
    def _one_loss(self) -> LossConfig:
        if self.infonce is None and self.listwise is None:
            raise ValueError("at least one of 'infonce' or 'listwise' must be set")
        return self

    @property
    def needs_teacher_scores(self) -> bool:
        return self.listwise is not None and self.listwise.weight > 0
