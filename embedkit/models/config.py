"""Validated model settings, shared by the Python API, the CLI and training recipes.

Example:
    >>> from embedkit.models.config import ModelConfig
    >>> ModelConfig(name="minilm", pooling="mean").pooling
    'mean'
    >>> ModelConfig(name="minilm", pooling="max")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: ...
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LatentAttentionConfig(BaseModel):
    """Latent-attention pooling sizes (NV-Embed: 512 latents, 8 heads)."""

    model_config = ConfigDict(extra="forbid")
    num_latents: int = Field(512, ge=1)
    num_heads: int = Field(8, ge=1)
    head_dim: int | None = Field(None, ge=1)
    mlp_ratio: int = Field(4, ge=1)


class LoraConfig(BaseModel):
    """LoRA adapter settings (peft). ``target_modules="auto"`` picks the attention/MLP projections of the family."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["auto"] = "auto"
    merge_on_save: bool = True


class PromptConfig(BaseModel):
    """Per-role prefixes. ``style`` fills defaults; explicit ``query``/``document`` override them."""

    model_config = ConfigDict(extra="forbid")
    style: Literal["none", "e5", "instructor", "nv-embed"] = "none"
    instruction: str | None = None
    query: str | None = None
    document: str | None = None


class ModelConfig(BaseModel):
    """How to build the embedding model.

    Attributes:
        name: a local folder (sentence-transformers or plain HF) or an alias: ``minilm`` (packaged
            all-MiniLM-L6-v2), ``smollm2`` (packaged SmolLM2-135M-Instruct, converted once from GGUF).
        pooling: ``mean``, ``cls``, ``last`` or ``latent_attention``; ``None`` keeps a sentence-transformers
            folder's own pooling (or ``mean`` / ``last`` for plain encoder / causal decoder folders).
        bidirectional: switch a decoder to bidirectional attention (default: true for decoders).
        exclude_prompt: do not pool instruction/prompt tokens.
        exclude_first_token: do not mean-pool the first real token (decoder BOS attention sink).
        normalize: append an L2 ``Normalize`` module.
        max_seq_length: truncate inputs to this many tokens.
        attn_implementation: ``sdpa`` (default), ``eager`` or ``flash_attention_2``.
        dtype: weights dtype (``float32`` on CPU; ``bfloat16`` on GPUs).
        trust_remote_code: allow a model's own Python code to run (off unless asked; recorded in the card).
    """

    model_config = ConfigDict(extra="forbid")
    name: str = "minilm"
    pooling: Literal["mean", "cls", "last", "latent_attention"] | None = None
    bidirectional: bool | None = None
    exclude_prompt: bool = False
    exclude_first_token: bool = False
    normalize: bool = True
    max_seq_length: int | None = Field(None, ge=1)
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    latent_attention: LatentAttentionConfig = Field(default_factory=LatentAttentionConfig)
    lora: LoraConfig | None = None
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    trust_remote_code: bool = False
