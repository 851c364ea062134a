"""Bundled recipes: they ship inside the package, ``embedkit recipes`` lists them, ``embedkit train NAME`` finds them
from any folder, ``--pairs`` swaps in the user's data, and each recipe's header stays short and says what to do."""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

import pytest

from embedkit.cli import main
from embedkit.errors import ConfigError
from embedkit.recipes import RECIPES_DIR, describe_recipe, list_recipes, resolve_recipe

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("minilm-cpu", "minilm-distill", "minilm-synth", "nv-embed-two-stage", "smollm2-bidirectional-lora")


def _user_pairs(folder: Path, n: int = 30, name: str = "my_pairs.jsonl") -> Path:
    """A user's own pairs file: the first ``n`` packaged Debian pairs, written outside the package."""
    from embedkit.data.samples import sample_path

    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    path = folder / name
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("embedkit: error: ")
    return err[0]


def test_the_recipes_live_in_the_package_and_the_repository_folder_points_there() -> None:
    assert RECIPES_DIR == REPO / "embedkit" / "recipes"
    assert set(SHIPPED) <= set(list_recipes())
    assert (REPO / "recipes").resolve() == RECIPES_DIR  # repository users keep recipes/NAME.yaml
    assert {p.name for p in (REPO / "recipes").glob("*.yaml")} == {f"{n}.yaml" for n in list_recipes()}


def test_pyproject_ships_the_recipes_as_package_data() -> None:
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(Path("recipes/minilm-cpu.yaml").match(g) for g in data["embedkit"])


def test_recipes_lists_one_line_each_with_the_first_comment(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list(list_recipes())
    for line, (name, path) in zip(lines, list_recipes().items()):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# ")
        assert line.split(None, 1)[1] == first[2:].strip() == describe_recipe(path)


def test_recipes_name_prints_the_yaml_to_copy(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "minilm-cpu"]) == 0
    assert capsys.readouterr().out == (RECIPES_DIR / "minilm-cpu.yaml").read_text(encoding="utf-8")


def test_train_by_name_from_another_folder(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "minilm-cpu", "--dry-run", "-o", "runs/x"]) == 0
    err = capsys.readouterr().err
    assert "train: debian: 4000 pairs" in err and "recipe OK" in err
    assert not (tmp_path / "runs" / "x").exists()


def test_a_path_to_a_yaml_keeps_working(capsys, monkeypatch, tmp_path: Path) -> None:
    copy = tmp_path / "mine.yaml"
    copy.write_text((RECIPES_DIR / "minilm-cpu.yaml").read_text().replace("max_steps: 60", "max_steps: 7"))
    assert resolve_recipe(copy) == copy
    assert resolve_recipe(str(REPO / "recipes" / "minilm-cpu.yaml")).samefile(RECIPES_DIR / "minilm-cpu.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "mine.yaml", "--dry-run", "-o", "out"]) == 0
    (tmp_path / "minilm-cpu").write_text(copy.read_text())  # a local file wins over the bundled name
    assert resolve_recipe("minilm-cpu") == Path("minilm-cpu")


def test_unknown_name_says_did_you_mean_and_lists_the_recipes(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "minlm-cpu", "--dry-run"]) == 2
    line = _one_error_line(capsys)
    assert "minlm-cpu" in line and "did you mean 'minilm-cpu'?" in line
    assert all(n in line for n in SHIPPED)


def test_missing_yaml_path_is_a_missing_file(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "nope.yaml", "--dry-run"]) == 2
    assert "nope.yaml: no such recipe file" in _one_error_line(capsys)
    with pytest.raises(ConfigError, match="pass its name: embedkit train minilm-cpu"):
        resolve_recipe("configs/minilm-cpu.yaml")
    with pytest.raises(ConfigError, match="folder"):
        resolve_recipe(str(tmp_path) + "/")


def test_pairs_swaps_in_the_users_file(capsys, monkeypatch, tmp_path: Path) -> None:
    _user_pairs(tmp_path, 30)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "minilm-cpu", "--pairs", "my_pairs.jsonl", "--dry-run", "-o", "runs/mine"]) == 0
    assert "train: debian: 30 pairs" in capsys.readouterr().err


def test_pairs_keeps_the_recipes_mining_and_the_exact_path(tmp_path: Path) -> None:
    from embedkit.commands.train import _pairs_set
    from embedkit.training.config import load_recipe

    odd = str(tmp_path / "my pairs: 1e5 #1.jsonl")  # YAML would read bare ': ', '#' and 1e5 as something else
    args = argparse.Namespace(recipe="minilm-cpu", pairs=odd, sets=[])
    recipe = load_recipe(resolve_recipe("minilm-cpu"), sets=_pairs_set(args))
    shipped = load_recipe(resolve_recipe("minilm-cpu"))
    assert recipe.data.datasets[0].path == odd
    assert recipe.miner == shipped.miner and recipe.miner is not None
    assert recipe.losses == shipped.losses and recipe.training == shipped.training


def test_pairs_skips_the_bundled_eval_set_unless_asked(capsys) -> None:
    """Scores on the recipe's bundled Debian set say nothing about the user's pairs: off, with a note; on again
    when the user names an eval set."""
    from embedkit.commands.train import _pairs_set
    from embedkit.training.config import load_recipe

    args = argparse.Namespace(recipe="minilm-cpu", pairs="my.jsonl", sets=[])
    assert load_recipe(resolve_recipe("minilm-cpu"), sets=_pairs_set(args)).eval.beir is None
    assert main(["train", "minilm-cpu", "--pairs", "sample:debian-train", "--dry-run"]) == 0
    assert "--pairs skipped the recipe's bundled eval set" in capsys.readouterr().err
    mine = ["eval.beir=sample:manpages"]
    args = argparse.Namespace(recipe="minilm-cpu", pairs="my.jsonl", sets=mine)
    assert load_recipe(resolve_recipe("minilm-cpu"), sets=_pairs_set(args) + mine).eval.beir == "sample:manpages"


def test_pairs_errors_name_the_option(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "minilm-cpu", "--pairs", "missing.jsonl", "--dry-run", "-o", "o"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("embedkit: error: --pairs: ") and "missing.jsonl" in line
    assert main(["train", "minilm-cpu", "--pairs", "a.jsonl", "--set", "data.datasets.0.path=b.jsonl",
                 "--dry-run"]) == 2
    assert "--pairs and --set data.datasets.0.path" in _one_error_line(capsys)


def test_pairs_is_refused_where_the_data_set_to_swap_is_not_clear(capsys, monkeypatch, tmp_path: Path) -> None:
    _user_pairs(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "nv-embed-two-stage", "--pairs", "my_pairs.jsonl", "--dry-run"]) == 2
    line = _one_error_line(capsys)
    assert "--pairs" in line and "stages" in line and "fix:" in line
    two = tmp_path / "two.yaml"
    two.write_text("data:\n  datasets:\n    - path: a.jsonl\n    - path: b.jsonl\n")
    assert main(["train", "two.yaml", "--pairs", "my_pairs.jsonl", "--dry-run"]) == 2
    assert "2 data sets" in _one_error_line(capsys)


def test_train_help_documents_names_and_pairs(capsys) -> None:
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--pairs FILE" in out and "data.datasets.0.path" in out
    assert "embedkit recipes" in out and "embedkit train minilm-cpu --pairs my_pairs.jsonl" in out


# ------------------------------------------------------------------------------------------------------------------
# what a recipe says: what to do and why, in a few lines; no lab notebook

_NARRATION = [
    (re.compile(r"\brun [A-Z]\b|\bruns? \d"), "a run of a study"),
    (re.compile(r"\bseeds?\b", re.I), "seeds"),
    (re.compile(r"\b20\d\d-\d\d-\d\d\b|\b20\d\d\b"), "a date"),
    (re.compile(r"\bmeasured\b|\bablation\b|\bscored\b|BENCHMARKS\.md", re.I), "a measurement"),
    (re.compile(r"\d\.\d{3}\b"), "a score"),
]


def _comments(path: Path) -> list[str]:
    """The comment of every line that has one (whole-line or trailing; a '#' inside quotes is not one)."""
    found: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        quote = None
        for i, ch in enumerate(line):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1].isspace()):
                found[n] = line[i + 1:].strip()
                break
    return list(found.values())


@pytest.mark.parametrize("name", SHIPPED)
def test_recipe_comments_are_short_and_narrate_nothing(name: str) -> None:
    path = RECIPES_DIR / f"{name}.yaml"
    comments = _comments(path)
    assert 1 <= len(comments) <= 6, comments
    assert describe_recipe(path) == comments[0] and len(comments[0]) <= 120
    for text in comments:
        for pattern, what in _NARRATION:
            assert not pattern.search(text), f"{name}.yaml narrates {what}: {text!r}"


# ------------------------------------------------------------------------------------------------------------------
# scripts/demo.sh: the commands a user types, and they are valid as written


def _demo_commands(out: str, steps: str) -> list[list[str]]:
    import shlex

    text = (REPO / "scripts" / "demo.sh").read_text().replace("\\\n", " ")
    cmds = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] == ["run", "embedkit"]:
            cmds.append([w.replace("$OUT", out).replace("$STEPS", steps) for w in words[2:]])
    return cmds


def test_demo_trains_the_bundled_recipe_then_evaluates_base_vs_trained(capsys, monkeypatch, tmp_path: Path) -> None:
    cmds = _demo_commands(str(tmp_path / "demo"), "3")
    assert [c[:2] for c in cmds] == [["train", "minilm-cpu"], ["eval", "minilm"]]
    train, evaluate = cmds
    monkeypatch.chdir(REPO)  # the demo runs in the checkout
    assert main([*train, "--dry-run"]) == 0, capsys.readouterr().err
    assert "recipe OK" in capsys.readouterr().err
    from embedkit.cli import build_parser

    args = build_parser().parse_args(evaluate)
    assert args.checkpoints == ["minilm", str(tmp_path / "demo" / "model" / "final")]
    from embedkit.data.samples import resolve_data_path

    assert all((REPO / resolve_data_path(b) / "qrels" / "test.tsv").is_file() for b in args.beir)
    assert "quality.py" not in (REPO / "scripts" / "demo.sh").read_text()


def test_dry_run_creates_no_folder(capsys, monkeypatch, tmp_path: Path) -> None:
    """``--dry-run`` checks that the output could be written, without making ``runs/`` (or anything else)."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "minilm-cpu", "--pairs", "sample:debian-train", "-o", "runs/x/y", "--dry-run"]) == 0
    assert "recipe OK" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
