"""Backbones (BERT encoders, bidirectional decoder LLMs), pooling, prompts and LoRA."""

from embedkit.models.config import LatentAttentionConfig, LoraConfig, ModelConfig, PromptConfig
from embedkit.models.loading import load_model, resolve_model_path
from embedkit.models.pooling import LatentAttentionPooling, Pooling

__all__ = [
    "LatentAttentionConfig",
    "LatentAttentionPooling",
    "LoraConfig",
    "ModelConfig",
    "Pooling",
    "PromptConfig",
    "load_model",
    "resolve_model_path",
]
