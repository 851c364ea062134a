"""Per-record instructions in a real training run: with ``exclude_prompt`` each query drops exactly its own
instruction. The runner switches pooling to per-row prompt lengths only when the prompts' lengths differ, so a
run with one prompt keeps sentence-transformers' own ``Pooling`` (loadable in plain sentence-transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedkit.training import collator as collator_module
from embedkit.training.config import load_recipe
from embedkit.training.runner import run_recipe

LONG = "Given a one-line synopsis, retrieve the long description of the Debian package"


def _pairs(tmp: Path, instructions: list[str]) -> str:
    rows = [{"query": f"how do I use tool number {i}", "positive": f"tool {i} copies files from a to b",
             "instruction": instructions[i % len(instructions)]} for i in range(16)]
    path = tmp / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("instructions, per_row", [(["Find the package", LONG], True), (["Find the package"], False)])
def test_training_pools_each_row_without_its_own_instruction(
    write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instructions: list[str], per_row: bool
) -> None:
    seen: list[list[int]] = []
    original = collator_module.PairCollator._query_prompt_length

    def spy(self, lengths):  # record what pooling receives for each batch's queries
        out = original(self, lengths)
        seen.append(out.tolist())
        return out

    monkeypatch.setattr(collator_module.PairCollator, "_query_prompt_length", spy)
    path = write_recipe(data={"datasets": [{"path": _pairs(tmp_path, instructions), "name": "tools",
                                            "max_negatives": 0}]},
                        training={"batch_size": 8, "max_steps": 2, "lr": 1.0e-3, "logging_steps": 100, "seed": 7})
    recipe = load_recipe(path, sets=["model.exclude_prompt=true", "model.prompts.style=nv-embed"])
    result = run_recipe(recipe, tmp_path / "run")

    modules = json.loads((result.final_dir / "modules.json").read_text())
    pooling = [m["type"] for m in modules if m["type"].endswith("Pooling")]
    if per_row:
        assert pooling == ["embedkit.models.pooling.Pooling"], pooling
        assert seen and all(len(lengths) == 8 for lengths in seen), seen  # one length per row
        assert all(len(set(lengths)) == 2 for lengths in seen), seen  # both instructions, each its own length
    else:
        assert pooling and pooling[0].startswith("sentence_transformers."), pooling
        assert seen and all(len(lengths) == 1 for lengths in seen), seen
