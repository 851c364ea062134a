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

__all__ = [
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
