"""Validated model settings, shared by the Python API, the CLI and training recipes.

:func:`model_config` builds a :class:`ModelConfig` from ``load_model``-style keyword arguments, so a bad keyword
is a one-line :class:`~embedkit.errors.ConfigError` naming it, the value and the allowed values.

Example:
    >>> from embedkit.models.config import ModelConfig, model_config
    >>> ModelConfig(name="minilm", pooling="mean").pooling
    'mean'
    >>> model_config("minilm", pooling="max")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embedkit.errors.ConfigError: load_model: invalid value for keyword 'pooling': must be one of 'mean', 'cls', ...
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedkit.validation import validate


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
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA branch")
    target_modules: list[str] | Literal["auto"] = Field(
        "auto", description="module names to wrap, or auto: the attention / MLP projections of the family")
    merge_on_save: bool = Field(True, description="merge the adapter into the saved weights")


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


def model_config(name_or_path: str | ModelConfig = "minilm", *, where: str = "load_model",
                 **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of ``load_model(name_or_path, **overrides)``.

    ``name_or_path`` is a folder / alias (``overrides`` are the other fields) or a ModelConfig (``overrides``
    replace its fields). Errors name the keyword: ``load_model: invalid value for keyword 'pooling': must be one
    of 'mean', 'cls', 'last', 'latent_attention' or None (got 'max')``; ``where`` names the function called.
    """
    if isinstance(name_or_path, ModelConfig):
        if not overrides:
            return name_or_path
        data = {**name_or_path.model_dump(exclude_unset=True), **overrides}
    else:
        data = {"name": name_or_path, **overrides}
    return validate(ModelConfig, data, style="keyword", where=where)
