"""Settings of the hard-negative miner (one pydantic model shared by the API, the CLI and recipes).

Defaults follow NV-Retriever's best setting (TopK-PercPos 95 %): take the most similar documents, but drop any
candidate scoring above 95 % of the query's *weakest* positive -- those are most often unlabelled positives
(false negatives), the main failure of plain top-k mining (BGE issues #850, #1130).

Example:
    >>> from embedkit.mining.config import MiningConfig
    >>> cfg = MiningConfig(num_negatives=4, range_max=30, sampling="random")
    >>> cfg.max_score_ratio
    0.95
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from embedkit.errors import ConfigError

__all__ = ["MiningConfig", "make_config"]


class MiningConfig(BaseModel):
    """What to mine and how.

    Attributes:
        num_negatives: negatives per query.
        range_min / range_max: candidate window, in ranks of the retrieval list *after the query's own positives
            are removed* (0 = the most similar non-positive document). ``range_min=10`` skips the 10 most similar.
        max_score_ratio: drop a candidate scoring above ``min_pos - (1 - ratio) * |min_pos|`` where ``min_pos`` is
            the lowest positive score of the query (TopK-PercPos; equal to ``ratio * min_pos`` for positive
            scores). ``None`` disables it.
        max_score_margin: drop a candidate scoring above ``min_pos - margin`` (TopK-MarginPos). ``None`` disables.
        drop_duplicates: drop candidates whose normalised text (casefolded, whitespace collapsed) equals a positive.
        sampling: ``"top"`` takes the best surviving candidates, ``"random"`` samples uniformly (seeded) among all
            survivors in the window.
        seed: seed of random sampling.
        index: ``"flat"`` (exact inner product), ``"ivf"`` (inverted lists; set ``nlist``/``nprobe``) or
            ``"hnsw"`` (graph; ``hnsw_m``/``ef_search``) for large corpora.
        nlist / nprobe: IVF cells and cells visited per query (default ``4 * sqrt(N)`` and ``nlist / 8``).
        hnsw_m / ef_search: HNSW graph degree and search beam (default ``max(128, 2 * k)``).
        use_gpu: FAISS on GPU when one is visible (``"auto"``), always (``True``: error without one) or never.
        batch_size: encoding batch size.
        drop_incomplete: leave out queries that got fewer than ``num_negatives`` negatives (default: keep them,
            the summary counts them).
    """

    model_config = ConfigDict(extra="forbid")

    num_negatives: int = Field(7, ge=1)
    range_min: int = Field(0, ge=0)
    range_max: int = Field(50, ge=1)
    max_score_ratio: float | None = Field(0.95, gt=0, le=1)
    max_score_margin: float | None = Field(None, ge=0)
    drop_duplicates: bool = True
    sampling: Literal["top", "random"] = "top"
    seed: int = 0
    index: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: int | None = Field(None, ge=1)
    nprobe: int | None = Field(None, ge=1)
    hnsw_m: int = Field(32, ge=4)
    ef_search: int | None = Field(None, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    batch_size: int = Field(32, ge=1)
    drop_incomplete: bool = False

    @model_validator(mode="after")
    def _check_window(self) -> MiningConfig:
        if self.range_min >= self.range_max:
            raise ValueError(f"range_min ({self.range_min}) must be smaller than range_max ({self.range_max})")
        if self.num_negatives > self.range_max - self.range_min:
            raise ValueError(f"num_negatives ({self.num_negatives}) is larger than the window "
                             f"range_max - range_min = {self.range_max - self.range_min}")
        if self.nlist is not None and self.nprobe is not None and self.nprobe > self.nlist:
            raise ValueError(f"nprobe ({self.nprobe}) is larger than nlist ({self.nlist})")
        return self


def make_config(config: MiningConfig | dict[str, Any] | None = None, **overrides: Any) -> MiningConfig:
    """Build a :class:`MiningConfig`, turning validation errors into one-line :class:`ConfigError` s."""
    try:
        if config is None:
            return MiningConfig(**overrides)
        if isinstance(config, MiningConfig):
            return config.model_copy(update=overrides) if not overrides else MiningConfig(
                **{**config.model_dump(), **overrides})
        return MiningConfig(**{**config, **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err.get("loc", ())) or "mining"
        msg = err.get("msg", str(exc)).removeprefix("Value error, ")
        raise ConfigError(msg, where=f"mining.{key}" if key != "mining" else key,
                          hint="see 'embedkit mine --help' for the allowed values") from None
