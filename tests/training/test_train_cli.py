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


def test_the_model_card_names_every_loss_the_recipe_sets() -> None:
    from embedkit.training.config import parse_recipe
    from embedkit.training.runner import _loss_summary

    recipe = parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]},
                           "losses": {"infonce": {"weight": 0.1}, "listwise": {}, "margin_mse": {"scale": 2.0}}})
    summary = _loss_summary(recipe)
    assert "**infonce**" in summary and "**listwise**" in summary and "**margin_mse**" in summary, summary


def test_cli_train_reports_what_re_mining_cost(write_recipe, tmp_path: Path, capsys) -> None:
    """A run with ``miner.refresh_every_steps`` says how often it re-mined and the seconds per refresh."""
    path = write_recipe(miner={"num_negatives": 1, "range_max": 8, "refresh_every_steps": 2})
    code = main(["train", str(path), "-o", str(tmp_path / "run"), "--set", "data.datasets.0.max_negatives=1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "negatives re-mined 1x" in err and " s each" in err, err  # 4 steps: a refresh after step 2, none at 4
