"""Settings of ``embedkit synth`` (one pydantic model shared by the CLI, the Python API and recipes).

Why one model: the flags of ``embedkit synth --help`` are derived from it (:func:`embedkit.validation.add_model_flags`),
so a recipe's ``synth:`` section, the API and the CLI cannot drift apart, and a bad value gets the same one-line
message everywhere.

Example:
    >>> from embedkit.synth.config import SynthConfig
    >>> cfg = SynthConfig(query_types=["question,keyword"], queries_per_doc=2)
    >>> cfg.query_types
    ['question', 'keyword']
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from embedkit.synth.prompts import QUERY_TYPES

__all__ = ["GeneratorDType", "SynthConfig"]

#: the generator weights' precision; ``auto``: see :func:`embedkit.synth.generator.resolve_dtype`
GeneratorDType = Literal["auto", "float32", "bfloat16"]


class SynthConfig(BaseModel):
    """How to make queries from documents, and which of them to keep.

    Each field's ``description`` is its documentation (``embedkit synth --help`` shows it).
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["llm", "crop", "llm+crop"] = Field(
        "llm+crop", description="llm+crop: both of the below, queries_per_doc of each per document, in one output "
                                "(the only method that lifts nDCG@10 by 3 points on both bundled sets); llm: an "
                                "instruct LLM writes the queries; crop: no LLM -- random spans of the document and "
                                "its title / first line (Contriever-style)")
    model: str = Field("smollm2", description="generator: the packaged alias smollm2, a local HF causal-LM folder, "
                                              "or a .gguf file (converted once to a cached folder)")
    query_types: list[str] = Field(
        default_factory=lambda: ["question", "keyword", "title", "claim"],
        description=f"query types to mix, comma-separated, rotated over each document's queries "
                    f"({', '.join(QUERY_TYPES)})")
    queries_per_doc: int = Field(2, ge=1, le=64, description="queries generated per document (before filtering)")
    examples: str | None = Field(None, description="pairs file whose first records become few-shot examples (llm)")
    num_examples: int = Field(3, ge=0, le=16, description="how many few-shot examples to take from --examples")
    seed: int = Field(0, description="seed of sampling and of cropping")
    dtype: GeneratorDType = Field(
        "auto", description="generator precision: auto = bfloat16 on a bf16 GPU or a CPU with native bf16 "
                            "(AVX512-BF16 / AMX; about 2x faster there), else float32")
    batch_size: int = Field(8, ge=1, description="prompts per generate call (rounded to whole documents)")
    max_new_tokens: int = Field(32, ge=1, le=512, description="tokens generated per query at most")
    sampling: bool = Field(False, description="sample (temperature / top-p, seeded) instead of greedy decoding")
    temperature: float = Field(0.7, gt=0, le=5, description="sampling temperature")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling mass")
    max_doc_words: int = Field(200, ge=8, description="words of each document shown to the generator")
    max_query_words: int = Field(24, ge=1, description="over-long filter: drop queries with more words")
    copy_min_words: int = Field(
        4, ge=1, description="copied-from-document filter: a verbatim span of at least this many words ...")
    copy_max_ratio: float = Field(
        0.8, gt=0, le=1, description="... covering at least this share of the query's words drops it")
    round_trip_model: str | None = Field(
        None, description="round-trip filter: keep a query only if this encoder ranks its source document in the "
                          "top-k of the corpus (e.g. minilm; none disables)")
    round_trip_k: int = Field(5, ge=1, description="k of the round-trip filter")
    crop_min_ratio: float = Field(0.1, gt=0, le=1, description="crop: shortest span, as a share of the document")
    crop_max_ratio: float = Field(0.5, gt=0, le=1, description="crop: longest span, as a share of the document")

    @field_validator("query_types", mode="before")
    @classmethod
    def _split_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            value = [t.strip() for v in value if isinstance(v, str) for t in v.split(",") if t.strip()] \
                if all(isinstance(v, str) for v in value) else value
        return value

    @field_validator("query_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one query type")
        bad = [t for t in value if t not in QUERY_TYPES]
        if bad:
            raise ValueError(f"unknown query type {bad[0]!r} (choose from {', '.join(QUERY_TYPES)})")
        return value

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.crop_min_ratio > self.crop_max_ratio:
            raise ValueError(f"crop_min_ratio ({self.crop_min_ratio}) is larger than crop_max_ratio "
                             f"({self.crop_max_ratio})")
        if self.method == "crop" and self.examples is not None:
            raise ValueError("examples are few-shot prompts for method llm; method crop uses no generator")
        return self

    @property
    def uses_llm(self) -> bool:
        """Whether a generator writes (some of) the queries: methods ``llm`` and ``llm+crop``."""
        return self.method != "crop"

    def fingerprint(self) -> dict[str, Any]:
        """The settings that decide the output: a resumed run must use the same ones."""
        return self.model_dump(mode="json")
