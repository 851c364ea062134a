"""``embedkit train`` end to end through the CLI: a recipe with an eval set gets its scores (the command passes the
scorer down to the runner, which imports nothing from evaluation)."""

from __future__ import annotations

from pathlib import Path

from embedkit.cli import main


def test_cli_train_scores_the_recipes_eval_set(write_recipe, tmp_path: Path, capsys) -> None:
    path = write_recipe(eval={"beir": "sample:debian-beir", "max_queries": 20, "max_corpus": 200, "k": 10})
    out = tmp_path / "run"
    code = main(["train", str(path), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "base_ndcg@10=" in err and ", ndcg@10=" in err, err
    assert (out / "final" / "modules.json").is_file() and (out / "training.png").is_file()
