"""Data flows one way: every embedkit module imports only from its own layer or a lower one, and no two modules
import each other (directly or round a longer circle).

The imports are read from the source (AST), function-level and ``TYPE_CHECKING`` imports included: a lazy import
is still a dependency, it only moves the cost. Layers, lowest first::

    0  embedkit (the package facade: it imports only errors; its public names are looked up by string on first
       use), embedkit.errors, embedkit.utils, embedkit.validation (pydantic errors -> one-line messages),
       embedkit.recipes (the bundled recipe files; standard library only)
    1  embedkit.data
    2  embedkit.models, embedkit.encode
    3  embedkit.mining | embedkit.synth   (siblings: synthetic queries use encode and models, never the miner)
    4  embedkit.losses
    5  embedkit.training
    6  embedkit.evaluation | embedkit.soup   (siblings: neither imports the other)
    7  embedkit.commands, embedkit.cli

Example (what a failure reads like)::

    embedkit.training.runner (layer 5 training) imports embedkit.evaluation.callback (layer 6 evaluation)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "embedkit"

#: top-level part of embedkit -> (layer, group); modules of one group may import each other, groups of one layer not
LAYERS: dict[str, tuple[int, str]] = {
    "": (0, "base"), "errors": (0, "base"), "utils": (0, "base"), "validation": (0, "base"), "recipes": (0, "base"),
    "data": (1, "data"),
    "models": (2, "models"), "encode": (2, "models"),
    "mining": (3, "mining"), "synth": (3, "synth"),
    "losses": (4, "losses"),
    "training": (5, "training"),
    "evaluation": (6, "evaluation"), "soup": (6, "soup"),
    "commands": (7, "commands"), "cli": (7, "commands"),
}


def _module_name(path: Path) -> str:
    parts = ["embedkit", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """embedkit modules that ``name`` imports anywhere in its source (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # ``from embedkit.models import pooling`` imports the submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _layer(module: str) -> tuple[int, str]:
    part = module.split(".")[1] if "." in module else ""
    if part not in LAYERS:
        raise AssertionError(f"{module}: no layer assigned; add its top-level part to LAYERS in {__file__}")
    return LAYERS[part]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_imports_point_down_the_layers() -> None:
    bad = []
    for module, targets in sorted(_graph().items()):
        lm, gm = _layer(module)
        for target in sorted(targets):
            lt, gt = _layer(target)
            if lt > lm or (lt == lm and gt != gm):
                bad.append(f"{module} (layer {lm} {gm}) imports {target} (layer {lt} {gt})")
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


#: circles known and scheduled to go (issue 28), each with the change that removes it. The test fails when one is
#: gone, so the entry cannot outlive the circle: delete it then.
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def test_no_import_cycles() -> None:
    cycles = {tuple(c) for c in _cycles(_graph())}
    new = sorted(c for c in cycles if c not in KNOWN_CYCLES)
    assert not new, "import circles among embedkit modules:\n" + "\n".join(" <-> ".join(c) for c in new)
    gone = sorted(c for c in KNOWN_CYCLES if c not in cycles)
    assert not gone, f"these circles are gone: remove them from KNOWN_CYCLES: {gone}"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The parser itself: a lazy import inside a function and a relative import both count."""
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from embedkit.evaluation.scoring import score_beir\n"
                   "from . import checkpoint\nfrom .trainer import X\n", encoding="utf-8")
    known = {"embedkit.evaluation.scoring", "embedkit.training.checkpoint", "embedkit.training.trainer",
             "embedkit.training"}
    assert _imports("embedkit.training.mod", src, known) == {
        "embedkit.evaluation.scoring", "embedkit.training.checkpoint", "embedkit.training.trainer"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["embedkit.training", "embedkit.soup"])
def test_training_and_soup_do_not_reach_evaluation(module: str) -> None:
    """Not even through a lower layer: everything they import, transitively, stays out of evaluation."""
    graph = _graph()
    seen: set[str] = set()
    todo = [m for m in graph if m == module or m.startswith(module + ".")]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(graph[m])
    assert not sorted(m for m in seen if m.startswith("embedkit.evaluation"))
