"""Backbones (BERT encoders, bidirectional decoder LLMs), pooling, prompts and LoRA.

Names are imported on first use: ``from embedkit.models import ModelConfig`` needs only pydantic, while
``load_model`` and the pooling modules bring in torch and sentence-transformers.

Example:
    >>> from embedkit.models import ModelConfig
    >>> ModelConfig(name="minilm").name
    'minilm'
"""

from __future__ import annotations

from embedkit.utils.lazy import lazy_exports

_LAZY: dict[str, str] = {
    "LatentAttentionConfig": "embedkit.models.config",
    "LoraConfig": "embedkit.models.config",
    "ModelConfig": "embedkit.models.config",
    "PromptConfig": "embedkit.models.config",
    "load_model": "embedkit.models.loading",
    "resolve_model_path": "embedkit.models.folders",
    "LatentAttentionPooling": "embedkit.models.pooling",
    "Pooling": "embedkit.models.pooling",
}


__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
