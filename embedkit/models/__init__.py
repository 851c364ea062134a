"""Backbones (BERT encoders, bidirectional decoder LLMs), pooling, prompts and LoRA.

Names are imported on first use: ``from embedkit.models import ModelConfig`` needs only pydantic, while
``load_model`` and the pooling modules bring in torch and sentence-transformers.

Example:
    >>> from embedkit.models import ModelConfig
    >>> ModelConfig(name="minilm").name
    'minilm'
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "LatentAttentionConfig": "embedkit.models.config",
    "LoraConfig": "embedkit.models.config",
    "ModelConfig": "embedkit.models.config",
    "PromptConfig": "embedkit.models.config",
    "load_model": "embedkit.models.loading",
    "resolve_model_path": "embedkit.models.loading",
    "LatentAttentionPooling": "embedkit.models.pooling",
    "Pooling": "embedkit.models.pooling",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embedkit.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = sorted(_LAZY)
