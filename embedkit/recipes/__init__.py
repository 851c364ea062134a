"""The recipes that ship inside the package, addressable by name from anywhere (``embedkit train minilm-cpu``).

A recipe is a YAML file in this folder; its name is the file name without ``.yaml`` and its one-line description
is the first comment line of the file. A path to any YAML file works wherever a name does, so a user's own recipe
(or an edited copy of a bundled one, ``embedkit recipes minilm-cpu > mine.yaml``) needs nothing registered.

Only the standard library is imported here: ``embedkit recipes`` and ``embedkit train R --dry-run`` answer at once.

Example:
    >>> from embedkit.recipes import list_recipes, resolve_recipe
    >>> "minilm-cpu" in list_recipes()
    True
    >>> resolve_recipe("minilm-cpu").name
    'minilm-cpu.yaml'
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from embedkit.errors import ConfigError

__all__ = ["RECIPES_DIR", "describe_recipe", "list_recipes", "resolve_recipe"]

#: the folder of the bundled recipes (inside the installed package; the repository's ``recipes/`` links here)
RECIPES_DIR = Path(__file__).resolve().parent


def list_recipes() -> dict[str, Path]:
    """Bundled recipe name -> file, sorted by name."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def describe_recipe(path: str | os.PathLike) -> str:
    """The recipe's one-line description: its first comment line (``# ...``), or ``""`` when it opens without one.

    Comment lines above the first key are the convention for a recipe's header, so the description needs no schema
    key and a recipe copied out of the package keeps it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = line.strip()
                if not text:
                    continue
                return text.lstrip("#").strip() if text.startswith("#") else ""
    except (OSError, UnicodeDecodeError):
        return ""
    return ""


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """The recipe file for a bundled name (``minilm-cpu``) or a path to a YAML file.

    An existing file always wins, so a local file keeps working even when it shares a bundled recipe's name. A
    value that looks like a path (a folder separator or a ``.yaml`` / ``.yml`` ending) and does not exist is a
    missing file; anything else is a name, and an unknown one gets the closest bundled name and the list.

    Raises:
        ConfigError: the file does not exist, or the name is not a bundled recipe.
    """
    raw = os.fspath(name_or_path)
    path = Path(raw).expanduser()
    if path.is_file():
        return path
    bundled = list_recipes()
    names = ", ".join(bundled) or "(none installed)"
    looks_like_path = os.sep in raw or "/" in raw or path.suffix.lower() in (".yaml", ".yml")
    if looks_like_path:
        if path.is_dir():
            raise ConfigError("this recipe path is a folder, not a YAML file", where=raw,
                              hint="pass a recipe file, or a bundled recipe name: " + names)
        if path.stem in bundled:
            hint = f"to use the bundled recipe, pass its name: embedkit train {path.stem}"
        else:
            hint = "check the path, or pass a bundled recipe name: " + names
        raise ConfigError("no such recipe file", where=raw, hint=hint)
    if raw in bundled:
        return bundled[raw]
    close = difflib.get_close_matches(raw, list(bundled), n=1, cutoff=0.5)
    did = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(f"not a bundled recipe name or a YAML file{did}", where=raw,
                      hint=f"use a bundled recipe ({names}; see 'embedkit recipes') or a path to a YAML file")
