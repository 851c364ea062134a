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
    >>> LossConfig.model_validate({"listwise": {}, "infonce": {"weight": 0.1, "teacher_mask_ratio": 0.9},
    ...                            "margin_mse": {"weight": 0.5}}).teacher_score_keys()
    ['losses.infonce.teacher_mask_ratio', 'losses.listwise', 'losses.margin_mse']
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class HardnessConfig(BaseModel):
    """Hardness weighting of InfoNCE's negative logits (LLaVE, Lan et al. 2025); see :mod:`embedkit.losses.infonce`.

    ``mode`` picks the negatives that are weighted: ``all_negatives`` (default), ``hard_negatives`` (the row's own
    mined negatives only; EmbeddingGemma) or ``in_batch_negatives`` (other rows' documents only; LLaVE).
    ``strength`` is ``alpha`` in ``w = exp(alpha * detached cosine)`` (LLaVE uses 9, EmbeddingGemma 5); the weights
    are normalised to mean 1 over each row's weighted negatives unless ``normalize`` is false (then the plain
    LLaVE / sentence-transformers ``hardness_mode`` form, whose loss grows with ``strength``).
    """

    model_config = ConfigDict(extra="forbid")
    mode: Literal["all_negatives", "hard_negatives", "in_batch_negatives"] = "all_negatives"
    strength: float = Field(5.0, gt=0.0, le=50.0)
    normalize: bool = True


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
    # teacher-aware masking (Tamber et al. 2025): a row's own candidate whose teacher score is above this fraction of
    # its positive's teacher score leaves the contrastive denominator; same bounds as masking.ratio
    teacher_mask_ratio: float | None = Field(None, gt=0.0, le=2.0)
    # logit hardness weighting of the negatives (LLaVE); None = off
    hardness: HardnessConfig | None = None


class ListwiseConfig(BaseModel):
    """:class:`ListwiseDistillationLoss` settings plus its weight.

    ``teacher_temperature`` defaults to 0.3 (Tamber et al. 2025): the teachers embedkit loads score in ``(0, 1)``
    (a one-label ``CrossEncoder`` applies a sigmoid in ``predict``; a bi-encoder teacher gives cosines), and at 1.0
    such scores make an almost flat teacher distribution (the best and worst candidate differ by at most ``e``).
    """

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(1.0, ge=0.0)
    temperature: float = Field(0.05, gt=0.0)
    teacher_temperature: float = Field(0.3, gt=0.0)


class MarginMSEConfig(BaseModel):
    """:class:`MarginMSELoss` settings plus its weight.

    ``scale`` multiplies the student's cosines before the margins are taken, to bring them to the teacher's units:
    1.0 for the teachers embedkit loads (sigmoid cross-encoder scores in ``(0, 1)``, or cosines); for a teacher
    whose scores are raw logits (a spread of ~10-20) use about half that spread, e.g. 10.
    """

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(1.0, ge=0.0)
    scale: float = Field(1.0, gt=0.0)


class SpreadOutConfig(BaseModel):
    """The spread-out (global orthogonal) regulariser's settings; see :mod:`embedkit.losses.spread_out`.

    ``over``: ``queries`` or ``queries_and_positives`` (default: the two terms are added). ``form``:
    ``second_moment`` (EmbeddingGemma: the mean squared off-diagonal cosine) or ``gor`` (Zhang et al. 2017: the
    squared mean plus ``max(0, second moment - 1/d)``).
    """

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(1.0, ge=0.0)
    over: Literal["queries", "queries_and_positives"] = "queries_and_positives"
    form: Literal["second_moment", "gor"] = "second_moment"


class MatryoshkaConfig(BaseModel):
    """Matryoshka training (Kusupati et al. 2022): every loss summed over truncated, re-normalised embeddings.

    ``dims`` are prefix lengths (each at most the model's dimension; include the full dimension to train it too);
    ``weights`` one per dim (default 1 each). See :mod:`embedkit.losses.matryoshka`.
    """

    model_config = ConfigDict(extra="forbid")
    dims: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    weights: list[Annotated[float, Field(ge=0.0)]] | None = None

    @field_validator("dims")
    @classmethod
    def _distinct(cls, dims: list[int]) -> list[int]:
        if len(set(dims)) != len(dims):
            twice = sorted({d for d in dims if dims.count(d) > 1})
            raise ValueError(f"dims must not repeat: {', '.join(map(str, twice))} given more than once")
        return dims

    @model_validator(mode="after")
    def _check(self) -> MatryoshkaConfig:
        if self.weights is not None:
            if len(self.weights) != len(self.dims):
                raise ValueError(f"give one weight per dim: {len(self.weights)} weights for {len(self.dims)} dims")
            if not any(w > 0 for w in self.weights):
                raise ValueError("weights must not all be 0")
        return self

    def dim_weights(self) -> list[float]:
        """One weight per dim (1.0 each unless ``weights`` is set)."""
        return list(self.weights) if self.weights is not None else [1.0] * len(self.dims)


#: ``LossConfig`` fields that modify or add to the losses but are no training objective of their own
NOT_LOSSES = frozenset({"matryoshka", "spread_out"})


class LossConfig(BaseModel):
    """Which losses to train with; at least one. Default: InfoNCE alone.

    ``spread_out`` adds a regulariser and ``matryoshka`` repeats every loss on truncated embeddings; neither counts
    as the one loss a recipe needs.
    """

    model_config = ConfigDict(extra="forbid")
    infonce: InfoNCEConfig | None = Field(default_factory=InfoNCEConfig)
    listwise: ListwiseConfig | None = None
    margin_mse: MarginMSEConfig | None = None
    spread_out: SpreadOutConfig | None = None
    matryoshka: MatryoshkaConfig | None = None

    @model_validator(mode="after")
    def _one_loss(self) -> LossConfig:
        names = [n for n in type(self).model_fields if n not in NOT_LOSSES]
        if all(getattr(self, name) is None for name in names):
            quoted = [repr(n) for n in names]
            raise ValueError(f"at least one of {', '.join(quoted[:-1])} or {quoted[-1]} must be set")
        return self

    def teacher_score_keys(self, prefix: str = "losses.") -> list[str]:
        """The recipe keys of the settings that need teacher scores in the data (empty: none do)."""
        keys = []
        if self.infonce is not None and self.infonce.weight > 0 and self.infonce.teacher_mask_ratio is not None:
            keys.append(prefix + "infonce.teacher_mask_ratio")
        if self.listwise is not None and self.listwise.weight > 0:
            keys.append(prefix + "listwise")
        if self.margin_mse is not None and self.margin_mse.weight > 0:
            keys.append(prefix + "margin_mse")
        return keys

    @property
    def needs_teacher_scores(self) -> bool:
        """Whether a setting needs teacher scores (:meth:`teacher_score_keys` names them)."""
        return bool(self.teacher_score_keys())
