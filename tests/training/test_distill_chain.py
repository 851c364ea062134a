"""The one-command distillation chain (``teacher:`` section, ``recipes/minilm-distill.yaml``): a teacher is trained
into ``OUT/teacher`` on negatives mined without scores, the miner then scores its candidates with it, and the
bi-encoder is distilled; a resumed run retrains and re-mines nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import embedkit.mining
import embedkit.training.teacher
from embedkit.data.readers import load_pairs
from embedkit.errors import ConfigError, ModelError
from embedkit.training.config import load_recipe, parse_recipe
from embedkit.training.runner import run_recipe
from test_training_resume import StopAt  # (stop after N steps, as a crash would)

pytestmark = pytest.mark.usefixtures("one_thread")


def _chain_recipe(tmp_path: Path, minilm_path: str, debian_pairs: str, **teacher: Any) -> Path:
    """The shipped distill recipe, scaled down: the real MiniLM, 12 real Debian pairs, a few steps per stage."""
    recipe = yaml.safe_load((Path(embedkit.__file__).parent / "recipes" / "minilm-distill.yaml").read_text())
    recipe["model"] = {"name": minilm_path, "max_seq_length": 48}
    recipe["data"]["datasets"] = [{"path": debian_pairs, "name": "debian", "max_pairs": 12, "max_negatives": 3}]
    recipe["teacher"] = {"model": minilm_path, "steps": 2, "batch_size": 8, "max_seq_length": 64,
                         "num_negatives": 2, **teacher}
    recipe["miner"].update({"num_negatives": 2, "num_candidates": 4, "range_max": 8})
    recipe["training"].update({"batch_size": 4, "max_steps": 3, "logging_steps": 1})
    recipe.pop("eval")
    recipe["output"] = {"save_steps": 1}
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


class _Count:
    """Wrap a function, counting its calls."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_shipped_distill_recipe_trains_a_teacher_and_distils_with_listwise_kd() -> None:
    r = load_recipe(Path(embedkit.__file__).parent / "recipes" / "minilm-distill.yaml")
    assert r.teacher is not None and r.teacher.path is None and r.miner is not None and r.miner.teacher is None
    assert r.losses.listwise is not None and r.losses.listwise.temperature == 0.05
    assert r.losses.listwise.teacher_temperature == 0.3
    assert r.losses.infonce is not None and r.losses.infonce.weight == 0.1
    assert r.losses.infonce.teacher_mask_ratio is not None
    assert r.miner.num_candidates == 20 and r.data.datasets[0].max_negatives >= r.miner.num_candidates


def test_chain_writes_teacher_scored_mined_file_and_final_and_resume_skips_both(
        tmp_path: Path, minilm_path: str, debian_pairs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    teach = _Count(embedkit.training.teacher.train_teacher)
    mine = _Count(embedkit.mining.mine_hard_negatives)
    monkeypatch.setattr(embedkit.training.teacher, "train_teacher", teach)
    monkeypatch.setattr(embedkit.mining, "mine_hard_negatives", mine)
    recipe = load_recipe(_chain_recipe(tmp_path, minilm_path, debian_pairs))
    out = tmp_path / "run"
    first = run_recipe(recipe, out, callbacks=[StopAt(2)])  # a run that stops (crashes) after step 2
    assert first.stages[0].global_step == 2
    assert (teach.calls, mine.calls) == (1, 2)  # teacher data (no scores), then the teacher-scored candidates
    teacher = out / "teacher"
    assert json.loads((teacher / "embedkit_teacher.json").read_text())["result"]["steps"] == 2
    plain = list(load_pairs(out / "mined" / "teacher-data" / "debian.jsonl"))
    assert plain and all(p.negative_scores is None for p in plain)
    scored = list(load_pairs(out / "mined" / "debian.jsonl"))
    assert len(scored) == 12 and all(p.negatives for p in scored)
    assert max(len(p.negatives) for p in scored) > 2  # num_candidates: the scored list goes past the negatives
    assert all(p.positive_scores and len(p.negative_scores or []) == len(p.negatives) for p in scored)
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["teacher"]["steps"] == 2 and saved["miner"]["teacher"] is None  # the recipe as written
    stamps = {p: p.stat().st_mtime_ns for p in [teacher / "embedkit_teacher.json", teacher / "config.json",
                                                out / "mined" / "debian.jsonl",
                                                out / "mined" / "teacher-data" / "debian.jsonl"]}

    resumed = run_recipe(recipe, out, resume=True)
    assert resumed.stages[0].global_step == 3 and (out / "final" / "modules.json").is_file()
    assert (teach.calls, mine.calls) == (1, 2)  # neither retrained nor re-mined
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    card = (out / "final" / "README.md").read_text()
    assert str(teacher) in card  # the card's recipe names the teacher that scored the candidates


def test_reused_teacher_path_is_not_retrained(tmp_path: Path, minilm_path: str, debian_pairs: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from embedkit.training.teacher import TeacherConfig, train_teacher

    pairs = [p for p in load_pairs(debian_pairs)][:6]
    for i, p in enumerate(pairs):
        p.negatives = [pairs[(i + 1) % len(pairs)].positives[0]]
    own = tmp_path / "my-teacher"
    train_teacher(pairs, own, TeacherConfig(model=minilm_path, steps=1, batch_size=4, max_seq_length=64))
    teach = _Count(embedkit.training.teacher.train_teacher)
    monkeypatch.setattr(embedkit.training.teacher, "train_teacher", teach)
    recipe = load_recipe(_chain_recipe(tmp_path, minilm_path, debian_pairs, path=str(own)),
                         sets=["training.max_steps=1"])
    run_recipe(recipe, tmp_path / "run")
    assert teach.calls == 0 and not (tmp_path / "run" / "teacher").exists()
    assert not (tmp_path / "run" / "mined" / "teacher-data").exists()
    assert all(p.positive_scores for p in load_pairs(tmp_path / "run" / "mined" / "debian.jsonl"))


def test_bad_teacher_path_is_refused_before_any_work(tmp_path: Path, minilm_path: str, debian_pairs: str) -> None:
    recipe = load_recipe(_chain_recipe(tmp_path, minilm_path, debian_pairs, path=str(tmp_path / "nope")))
    with pytest.raises(ModelError, match="teacher.path") as info:
        run_recipe(recipe, tmp_path / "run")
    assert "\n" not in str(info.value) and info.value.where and "distill.yaml:" in info.value.where
    assert not (tmp_path / "run").exists()


DATA = {"data": {"datasets": [{"path": "pairs.jsonl"}]}}


@pytest.mark.parametrize(("over", "keys"), [
    ({"teacher": {}, "losses": {"listwise": {}}}, ("teacher", "miner")),
    ({"teacher": {}, "miner": {"teacher": "ce"}, "losses": {"listwise": {}}}, ("teacher", "miner.teacher")),
])
def test_teacher_section_contradictions_name_both_keys(over: dict, keys: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe({**DATA, **over})
    for key in keys:
        assert f"'{key}'" in str(info.value)


def test_teacher_section_satisfies_the_teacher_score_losses() -> None:
    r = parse_recipe({**DATA, "miner": {"teacher_max_score_ratio": 0.9}, "teacher": {"loss": "lambda"},
                      "losses": {"listwise": {}, "margin_mse": {}, "infonce": {"teacher_mask_ratio": 0.9}}})
    assert r.teacher is not None and r.teacher.loss == "lambda"
    with pytest.raises(ConfigError, match="add a teacher section"):
        parse_recipe({**DATA, "miner": {}, "losses": {"listwise": {}}})
    with pytest.raises(ConfigError, match="unknown key 'teacher.stpes'"):
        parse_recipe({**DATA, "miner": {}, "teacher": {"stpes": 3}})
