"""Package attributes imported on first use (PEP 562), so importing a package costs nothing until a name is used.

Why: ``embedkit --help``, recipe validation and ``embedkit mine --help`` need only pydantic and argparse; torch,
transformers, sentence-transformers, FAISS and mteb are loaded by the first name that needs them.

Example::

    # in embedkit/mining/__init__.py
    from embedkit.utils.lazy import lazy_exports

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"MiningConfig": "embedkit.mining.config"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str | tuple[str, str]], *, uncached: Collection[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``: each public name maps to the module defining it (or to
    ``(module, attribute)`` when the name differs). A value is bound in the package after first use, so later
    look-ups are plain attribute reads -- except the ``uncached`` names (e.g. a function named like a subpackage
    that ``import package.name.x`` must still walk through)."""

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module '{package}' has no attribute {name!r}")
        module, attr = target if isinstance(target, tuple) else (target, name)
        value = getattr(importlib.import_module(module), attr)
        if name not in uncached:
            setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, sorted(names)
