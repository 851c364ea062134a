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

from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedkit.validation import KeyWhere, validate

__all__ = ["MiningConfig", "make_config"]


class MiningConfig(BaseModel):
    """What to mine and how.

    Each field's ``description`` is its documentation: ``embedkit mine --help`` shows it (the flags are derived from
    this model, :func:`embedkit.validation.add_model_flags`) and recipes' ``miner:`` section takes the same keys.
    The candidate window counts ranks of the retrieval list *after the query's own positives are removed* (0 = the
    most similar non-positive document). The score filters compare a candidate with ``min_pos``, the lowest
    positive score of its query: TopK-PercPos drops it above ``min_pos - (1 - ratio) * |min_pos|`` (equal to
    ``ratio * min_pos`` for positive scores), TopK-MarginPos above ``min_pos - margin``.
    ``teacher_max_score_ratio`` applies the TopK-PercPos rule to the *teacher's* scores (positive-aware filtering
    with a cross-encoder, as NV-Retriever / Tamber et al. do); it needs ``teacher``.
    ``num_candidates`` (needs ``teacher``) turns each record into the teacher-scored list listwise distillation
    needs: ``negatives`` holds the mined negatives first, exactly as without it, then the query's other candidates
    among the top ``num_candidates`` retrieval ranks (positives and their duplicates removed, no score filter: the
    teacher's score says how relevant they are), best rank first; ``negative_scores`` is aligned with that list.
    """

    model_config = ConfigDict(extra="forbid")

    num_negatives: int = Field(7, ge=1, description="negatives per query")
    range_min: int = Field(0, ge=0, description="skip the N most similar non-positive candidates")
    range_max: int = Field(50, ge=1, description="consider candidates up to this rank")
    max_score_ratio: float | None = Field(
        0.95, gt=0, le=1,
        description="TopK-PercPos: drop candidates scoring above RATIO x the query's lowest positive score "
                    "(none disables)")
    max_score_margin: float | None = Field(
        None, ge=0, description="TopK-MarginPos: drop candidates scoring above (lowest positive score - MARGIN)")
    teacher_max_score_ratio: float | None = Field(
        None, gt=0, le=1,
        description="teacher false-negative filter: drop candidates the teacher (--teacher) scores above RATIO x its "
                    "score of the query's lowest positive, and mine further down the list instead (none disables; "
                    "needs a teacher)")
    num_candidates: int | None = Field(
        None, ge=1,
        description="listwise distillation: also store the teacher's scores of each query's top N retrieval "
                    "candidates (positives and their duplicates removed), appended to the negatives; needs a "
                    "teacher and N >= num_negatives (none: score only the negatives)")
    drop_duplicates: bool = Field(
        True, description="drop candidates whose normalised text (casefolded, whitespace collapsed) equals a positive")
    sampling: Literal["top", "random"] = Field(
        "top", description="top: the best surviving candidates; random: uniformly (seeded) among the survivors")
    seed: int = Field(0, description="seed of random sampling")
    index: Literal["flat", "ivf", "hnsw", "ivfpq"] = Field(
        "flat", description="flat: exact inner product; ivf: inverted lists (nlist / nprobe); hnsw: graph "
                            "(hnsw_m / ef_search); ivfpq: IVF with product-quantised codes, streamed from the "
                            "embedding cache and re-scored exactly (pq_m / pq_bits / pq_refine; bounded memory for "
                            "millions of documents)")
    nlist: int | None = Field(None, ge=1, description="IVF cells (default 4 x sqrt(corpus size))")
    nprobe: int | None = Field(None, ge=1, description="IVF cells visited per query (default nlist / 8)")
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree")
    ef_search: int | None = Field(None, ge=1, description="HNSW search beam (default max(128, 2 x candidates))")
    pq_m: int | None = Field(
        None, ge=1, description="IVF-PQ bytes per document (sub-quantizers; must divide the embedding dimension; "
                                "default dimension / 8)")
    pq_bits: int = Field(8, ge=4, le=12, description="IVF-PQ bits per sub-quantizer code (8: 256 centroids each)")
    pq_refine: int = Field(
        4, ge=1, description="IVF-PQ: re-score the top candidates x N with exact vectors read from the cache")
    block_size: int | None = Field(
        None, ge=1,
        description="stream the corpus from the embedding cache in blocks of N documents instead of one in-memory "
                    "matrix (bounded memory; flat stays exact; ivfpq always streams; needs a cache folder)")
    use_gpu: bool | Literal["auto"] = Field(
        "auto", description="FAISS on a GPU: auto (when one is visible), true (error without one) or false")
    batch_size: int = Field(32, ge=1, description="encoding batch size")
    drop_incomplete: bool = Field(
        False, description="leave out queries that got fewer than num_negatives negatives (default: keep them; "
                           "the summary counts them)")

    @model_validator(mode="after")
    def _check_window(self) -> MiningConfig:
        if self.range_min >= self.range_max:
            raise ValueError(f"range_min ({self.range_min}) must be smaller than range_max ({self.range_max})")
        if self.num_negatives > self.range_max - self.range_min:
            raise ValueError(f"num_negatives ({self.num_negatives}) is larger than the window "
                             f"range_max - range_min = {self.range_max - self.range_min}")
        if self.num_candidates is not None and self.num_candidates < self.num_negatives:
            raise ValueError(f"num_candidates ({self.num_candidates}) is smaller than num_negatives "
                             f"({self.num_negatives}): the scored list starts with the negatives, so it holds at "
                             "least num_negatives documents")
        if self.nlist is not None and self.nprobe is not None and self.nprobe > self.nlist:
            raise ValueError(f"nprobe ({self.nprobe}) is larger than nlist ({self.nlist})")
        if self.block_size is not None and self.index in ("ivf", "hnsw"):
            raise ValueError(f"block_size streams the corpus, but index={self.index} holds every vector in memory: "
                             "use index=flat (exact, streamed) or index=ivfpq (compressed codes)")
        return self


def make_config(config: MiningConfig | dict[str, Any] | None = None, **overrides: Any) -> MiningConfig:
    """Build a :class:`MiningConfig` (``overrides`` win), refusing bad values with one-line
    :class:`~embedkit.errors.ConfigError` s that name the keyword:
    ``mining.num_negatives: invalid value for keyword 'num_negatives': must be >= 1 (got 0)``."""
    if isinstance(config, MiningConfig):
        if not overrides:
            return config
        config = config.model_dump(exclude_unset=True)
    data = {**(config or {}), **overrides}
    return validate(MiningConfig, data, style="keyword", locator=KeyWhere("mining"))
