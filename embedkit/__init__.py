"""embedkit: fine-tune text-embedding models on your own query/document pairs.

Example:
    >>> import embedkit
    >>> model = embedkit.load_model("minilm")                          # doctest: +SKIP
    >>> emb = embedkit.encode(model, ["hello"], role="query")          # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from embedkit.encode import encode, similarity
from embedkit.errors import ConfigError, EmbedkitError, InputError, ModelError, OutputError
from embedkit.models import ModelConfig, load_model

_LAZY = {
    "evaluate": ("embedkit.evaluation", "evaluate"),
    "soup": ("embedkit.soup", "soup"),
    "mine_hard_negatives": ("embedkit.mining", "mine_hard_negatives"),
    "load_pairs": ("embedkit.data.readers", "load_pairs"),
}


def __getattr__(name: str):
    """Heavier entry points (mteb, faiss, the trainer) are imported on first use."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'embedkit' has no attribute {name!r}")


__all__ = [
    "evaluate",
    "load_pairs",
    "mine_hard_negatives",
    "soup",
    "ConfigError",
    "EmbedkitError",
    "InputError",
    "ModelConfig",
    "ModelError",
    "OutputError",
    "__version__",
    "encode",
    "load_model",
    "similarity",
]
