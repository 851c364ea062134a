"""embedkit: fine-tune text-embedding models on your own query/document pairs.

``import embedkit`` is cheap (no torch, transformers or sentence-transformers): the public names below are
imported on first use, so ``embedkit --help`` answers at once and Ctrl-C during start-up is a clean exit.

Example:
    >>> import embedkit
    >>> model = embedkit.load_model("minilm")                          # doctest: +SKIP
    >>> emb = embedkit.encode(model, ["hello"], role="query")          # doctest: +SKIP
"""

from __future__ import annotations

import sys
import types
from typing import Any

# the error classes are plain Python (no third-party import): bound eagerly so ``except embedkit.InputError`` works
from embedkit.errors import ConfigError, EmbedkitError, InputError, ModelError, OutputError
from embedkit.utils.lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> (module, attribute), imported on first access (PEP 562)
_LAZY: dict[str, tuple[str, str]] = {
    "encode": ("embedkit.encode", "encode"),
    "similarity": ("embedkit.encode", "similarity"),
    "load_model": ("embedkit.models.loading", "load_model"),
    "ModelConfig": ("embedkit.models.config", "ModelConfig"),
    "evaluate": ("embedkit.evaluation", "evaluate"),
    "soup": ("embedkit.soup", "soup"),
    "mine_hard_negatives": ("embedkit.mining", "mine_hard_negatives"),
    "load_pairs": ("embedkit.data.readers", "load_pairs"),
}

#: functions named like the submodule that defines them: the package attribute stays the function
_SHADOWING = frozenset({"encode"})


# ``embedkit.soup`` is also the subpackage that ``import embedkit.soup.x`` walks through: never bound as the function
__getattr__, __dir__, _ = lazy_exports(__name__, _LAZY, uncached={"soup"})


class _Package(types.ModuleType):
    """Keeps ``embedkit.encode`` the function once the ``embedkit.encode`` submodule is imported.

    Python's import system binds a submodule as an attribute of its package; with the function imported lazily that
    would make ``embedkit.encode(...)`` a call on a module. The submodule stays in ``sys.modules`` as usual.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWING and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
