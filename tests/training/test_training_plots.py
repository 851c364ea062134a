"""training.png: every run draws loss, in-batch accuracy and held-out nDCG per step (a row per stage); a resumed
run keeps its earlier steps; the eval scorer is passed in; ``training.report_to: [tensorboard]`` works or says
in one line that the package is missing."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from embedkit.errors import ConfigError
from embedkit.training.config import load_recipe
from embedkit.training.plots import StageLog, build_figure, eval_key, read_stage_log, series, write_training_plot
from embedkit.training.runner import run_recipe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec(
    "tensorboardX") is not None


from test_training_resume import StopAt  # noqa: E402  (stop after N steps, as a crash would)


def _eval_section() -> dict:
    from embedkit.evaluation.samples import manpages_path

    return {"beir": str(manpages_path()), "every_steps": 2, "max_queries": 12, "max_corpus": 40}


def _png_size(path: Path) -> tuple[int, int]:
    from matplotlib.image import imread

    h, w = imread(str(path)).shape[:2]
    return w, h


# -- the figure itself --------------------------------------------------------------------------------------------


def test_series_skips_entries_without_step_or_finite_value() -> None:
    hist = [{"loss": 2.0, "step": 1}, {"loss": float("nan"), "step": 2}, {"loss": 1.0}, {"accuracy": 0.5, "step": 3},
            {"loss": 0.5, "step": 4}]
    assert series(hist, "loss") == ([1, 4], [2.0, 0.5])


def test_panels_follow_what_was_logged() -> None:
    trained = StageLog("", [{"loss": 2.0, "accuracy": 0.3, "step": 1}, {"loss": 1.0, "accuracy": 0.6, "step": 2}])
    assert [ax.get_title() for ax in build_figure([trained]).axes] == ["training loss", "in-batch accuracy"]
    evaluated = StageLog("", [*trained.history, {"eval_ndcg@5": 0.4, "eval_recall@5": 0.5, "step": 2}],
                         baseline={"ndcg@5": 0.3})
    fig = build_figure([evaluated])
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "in-batch accuracy", "held-out nDCG@5"]
    # the baseline is the point at step 0, followed by the logged evaluation
    xs, ys = fig.axes[2].lines[0].get_data()
    assert list(xs) == [0, 2] and list(ys) == [0.3, 0.4]
    two = build_figure([StageLog("retrieval", trained.history), StageLog("blend", evaluated.history)])
    assert [ax.get_title() for ax in two.axes] == [
        "retrieval: training loss", "retrieval: in-batch accuracy", "retrieval: held-out nDCG@5",
        "blend: training loss", "blend: in-batch accuracy", "blend: held-out nDCG@5"]
    assert eval_key(StageLog("", [{"eval_best_ndcg@10": 1.0, "step": 1}])) is None


def test_write_training_plot_is_atomic_and_complete(tmp_path: Path) -> None:
    out = tmp_path / "training.png"
    write_training_plot([StageLog("", [{"loss": 1.0, "step": 1}])], out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training.png"]  # no temporary file left behind


# -- runs -----------------------------------------------------------------------------------------------------------


def test_a_run_writes_training_png_with_loss_accuracy_and_ndcg(write_recipe, tmp_path: Path) -> None:
    from embedkit.evaluation import score_beir

    calls: list[int] = []

    def counting_scorer(model, data, **kw):
        calls.append(len(data.queries))
        return score_beir(model, data, **kw)

    recipe = load_recipe(write_recipe(training={"max_steps": 4, "logging_steps": 1}, eval=_eval_section(),
                                      output={"save_steps": None}))
    res = run_recipe(recipe, tmp_path / "run", scorer=counting_scorer)
    png = tmp_path / "run" / "training.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_MAGIC
    log = read_stage_log(tmp_path / "run" / "training_log.json")
    assert log is not None
    assert series(log.history, "loss")[0] == [1, 2, 3, 4]
    assert series(log.history, "accuracy")[0] == [1, 2, 3, 4]
    assert series(log.history, "eval_ndcg@10")[0] == [2, 4]
    assert log.baseline["ndcg@10"] == pytest.approx(res.metrics["base_ndcg@10"])
    assert calls == [12, 12, 12]  # before training, steps 2 and 4: the passed-in scorer did all the scoring
    assert math.isclose(series(log.history, "eval_ndcg@10")[1][-1], res.metrics["ndcg@10"])
    assert _png_size(png)[0] > _png_size(png)[1]  # one row of three panels


def test_eval_recipe_without_scorer_is_refused_before_any_work(write_recipe, tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(eval=_eval_section()))
    with pytest.raises(ConfigError, match="'eval.beir' asks for retrieval scores") as info:
        run_recipe(recipe, tmp_path / "run")
    assert "scorer=embedkit.evaluation.score_beir" in (info.value.hint or "")
    assert not (tmp_path / "run").exists()


def test_final_score_without_periodic_eval_is_the_last_point(write_recipe, tmp_path: Path) -> None:
    from embedkit.evaluation import score_beir

    ev = {**_eval_section(), "every_steps": None}
    recipe = load_recipe(write_recipe(training={"max_steps": 2, "logging_steps": 1}, eval=ev,
                                      output={"save_steps": None}))
    res = run_recipe(recipe, tmp_path / "run", scorer=score_beir)
    log = read_stage_log(tmp_path / "run" / "training_log.json")
    assert series(log.history, "eval_ndcg@10") == ([2], [pytest.approx(res.metrics["ndcg@10"])])


def test_resumed_run_plots_the_steps_before_the_interruption(write_recipe, tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(training={"max_steps": 5, "logging_steps": 1}, output={"save_steps": 2}))
    out = tmp_path / "run"
    run_recipe(recipe, out, callbacks=[StopAt(3)])
    run_recipe(recipe, out, resume=True)
    log = read_stage_log(out / "training_log.json")
    assert series(log.history, "loss")[0] == [1, 2, 3, 4, 5]  # steps 1-2 from checkpoint-2, then 3-5 again
    assert (out / "training.png").stat().st_size > 1000


def test_two_stage_recipe_draws_one_row_per_stage(write_recipe, debian_pairs: str, tmp_path: Path) -> None:
    stages = [{"name": "first", "training": {"max_steps": 2, "logging_steps": 1}},
              {"name": "second", "training": {"max_steps": 1, "logging_steps": 1, "warmup_ratio": 0.0}}]
    recipe = load_recipe(write_recipe(stages=stages, output={"save_steps": None}))
    out = tmp_path / "run"
    run_recipe(recipe, out)
    first = read_stage_log(out / "stages" / "01-first" / "training_log.json")
    second = read_stage_log(out / "stages" / "02-second" / "training_log.json")
    assert (first.name, series(first.history, "loss")[0]) == ("first", [1, 2])
    assert (second.name, series(second.history, "loss")[0]) == ("second", [1])
    w, h = _png_size(out / "training.png")
    assert h > w / 2  # two rows of two panels (one row would be 840 x 320)
    assert not (out / "stages" / "01-first" / "training.png").exists()  # one figure, in OUT
    # resume skips both finished stages and still draws both rows from their saved logs
    (out / "training.png").unlink()
    run_recipe(recipe, out, resume=True)
    assert _png_size(out / "training.png") == (w, h)


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed: the missing-package message cannot show")
def test_report_to_tensorboard_without_the_package_is_one_line(write_recipe, tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(training={"report_to": ["tensorboard"]}))
    with pytest.raises(ConfigError, match="'training.report_to' names tensorboard, which is not installed") as info:
        run_recipe(recipe, tmp_path / "run")
    assert info.value.hint == "pip install tensorboard, or drop tensorboard from training.report_to"
    assert ".yaml:" in (info.value.where or "")  # the recipe line to edit
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (pip install tensorboard)")
def test_report_to_tensorboard_writes_events_into_out(write_recipe, tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(training={"max_steps": 2, "logging_steps": 1, "report_to": ["tensorboard"]},
                                      output={"save_steps": None}))
    run_recipe(recipe, tmp_path / "run")
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert not (tmp_path / "run" / "checkpoints" / "runs").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert json.loads((tmp_path / "run" / "training_log.json").read_text())["history"]
