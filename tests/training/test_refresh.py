"""Dynamic hard-negative mining (``miner.refresh_every_steps``, :mod:`embedkit.training.refresh`): the corpus is
re-encoded with the weights being trained and the negatives re-mined every N steps; the refreshed lists are what
offline mining with those weights gives, they differ from the first mining once training moved the model, training
uses them, and a resumed run reloads the latest refresh so it trains exactly like an uninterrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import embedkit
from embedkit.data.readers import load_pairs
from embedkit.data.schema import Pair
from embedkit.errors import ConfigError
from embedkit.training.collator import DatasetSpec, PairDataset
from embedkit.training.config import load_recipe, parse_recipe
from embedkit.training.plots import read_stage_log
from embedkit.training.refresh import NegativeRefreshCallback, latest_refresh
from embedkit.training.runner import run_recipe

from test_training_resume import StopAt  # noqa: E402  (stop after N steps, as a crash would)

MINER = {"num_negatives": 3, "range_max": 20, "max_score_ratio": None, "refresh_every_steps": 2}


def _recipe(write_recipe: Any, debian_pairs: str, **miner: Any) -> Any:
    """48 real Debian pairs, the tiny BERT (lr 1e-3: it moves fast), 3 mined negatives refreshed every 2 steps."""
    return load_recipe(write_recipe(
        miner={**MINER, **miner},
        data={"datasets": [{"path": debian_pairs, "name": "debian", "max_negatives": 3}]},
        training={"batch_size": 8, "max_steps": 5, "lr": 1.0e-3, "logging_steps": 100, "seed": 7},
        output={"save_steps": 2, "save_total_limit": None}))  # checkpoint-2 kept: the refresh-2 weights


def _negatives(path: Path) -> list[list[str]]:
    return [p.negatives for p in load_pairs(path)]


class _SeenNegatives(TrainerCallback):
    """The negatives the data set holds after each step's callbacks (what the next step trains on)."""

    def __init__(self) -> None:
        self.by_step: dict[int, list[list[str]]] = {}

    def on_step_end(self, args, state, control, **kwargs):
        ds = kwargs["train_dataloader"].dataset
        self.by_step[state.global_step] = [e.negatives for e in ds.datasets[0]]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_refresh_remines_with_the_live_weights_and_training_uses_the_new_negatives(write_recipe, tmp_path: Path,
                                                                                   debian_pairs: str) -> None:
    seen = _SeenNegatives()
    out = tmp_path / "run"
    res = run_recipe(_recipe(write_recipe, debian_pairs), out, callbacks=[seen])
    first = _negatives(out / "mined" / "debian.jsonl")
    r2, r4 = out / "mined" / "refresh-2" / "debian.jsonl", out / "mined" / "refresh-4" / "debian.jsonl"
    assert r2.is_file() and r4.is_file() and not (out / "mined" / "refresh-5").exists()  # none after the last step
    refreshed = _negatives(r2)
    changed = sum(a != b for a, b in zip(first, refreshed))
    assert changed >= len(first) // 4, (changed, len(first))  # training moved the model: other negatives
    # exactly what offline mining with the step-2 weights gives, with the same filters
    model = embedkit.load_model(str(out / "checkpoints" / "checkpoint-2"))
    offline = embedkit.mine_hard_negatives(list(load_pairs(debian_pairs)), model, num_negatives=3, range_max=20,
                                           max_score_ratio=None)
    assert [p.negatives for p in offline.pairs] == refreshed
    assert seen.by_step[1] == first and seen.by_step[2] == refreshed and seen.by_step[4] == _negatives(r4)
    log = read_stage_log(out / "training_log.json")
    assert log is not None
    timed = [e for e in log.history if "refresh_seconds" in e]
    assert [e["step"] for e in timed] == [2, 4] and all(e["refresh_seconds"] > 0 for e in timed)
    assert res.metrics["refreshes"] == 2 and res.metrics["refresh_seconds"] > 0


def test_resume_reloads_the_latest_refresh_and_matches_the_uninterrupted_run(write_recipe, tmp_path: Path,
                                                                             debian_pairs: str) -> None:
    recipe = _recipe(write_recipe, debian_pairs)
    full = run_recipe(recipe, tmp_path / "full")
    plain = run_recipe(_recipe(write_recipe, debian_pairs, refresh_every_steps=None), tmp_path / "plain")
    assert _max_diff(_weights(full.final_dir), _weights(plain.final_dir)) > 1e-4  # the refreshes changed training
    part = tmp_path / "part"
    run_recipe(recipe, part, callbacks=[StopAt(3)])  # crashed after step 3: resumes from checkpoint-2
    assert latest_refresh(part / "mined", ["debian"], 3) == 2
    stamp = (part / "mined" / "refresh-2" / "debian.jsonl").stat().st_mtime_ns
    seen = _SeenNegatives()
    resumed = run_recipe(recipe, part, resume=True, callbacks=[seen])
    assert resumed.stages[0].global_step == 5
    assert (part / "mined" / "refresh-2" / "debian.jsonl").stat().st_mtime_ns == stamp  # read back, not re-mined
    assert seen.by_step[3] == _negatives(part / "mined" / "refresh-2" / "debian.jsonl")
    assert _negatives(part / "mined" / "refresh-4" / "debian.jsonl") == _negatives(
        tmp_path / "full" / "mined" / "refresh-4" / "debian.jsonl")
    assert _max_diff(_weights(full.final_dir), _weights(resumed.final_dir)) <= 1e-6


def test_callback_swaps_in_place_and_reuses_the_files_of_an_earlier_refresh(tmp_path: Path) -> None:
    records = [Pair("q1", ["p1"]), Pair("q2", ["p2"])]
    ds = PairDataset([[Pair("q1", ["p1"], ["a"]), Pair("q2", ["p2"], ["b"])]], [DatasetSpec("d")])
    calls: list[Path] = []

    def mine_fn(recs: Any, model: Any, output: Path) -> None:
        calls.append(output)
        from embedkit.data.readers import write_pairs

        write_pairs([Pair(r.query, r.positives, [f"{r.query}-new"]) for r in recs], output)

    cb = NegativeRefreshCallback(ds, [records], ["d"], every_n_steps=3, mined_dir=tmp_path, mine_fn=mine_fn)
    model = torch.nn.Linear(1, 1).train()
    cb.refresh(model, 3)
    assert [e.negatives for e in ds.datasets[0]] == [["q1-new"], ["q2-new"]] and model.training
    cb.refresh(model, 3)  # a repeated refresh (a resume past it) reads the stored file
    assert len(calls) == 1 and latest_refresh(tmp_path, ["d"], 5) == 3 and latest_refresh(tmp_path, ["d"], 2) is None
    with pytest.raises(ValueError, match="same order"):
        ds.replace(0, [Pair("q2", ["p2"]), Pair("q1", ["p1"])])


DATA = {"data": {"datasets": [{"path": "pairs.jsonl"}]}}


@pytest.mark.parametrize(("over", "keys"), [
    ({"miner": {"refresh_every_steps": 0}}, ("miner.refresh_every_steps",)),
    ({"miner": {"refresh_every_steps": 5, "model": "minilm"}}, ("miner.refresh_every_steps", "miner.model")),
    ({"miner": {"refresh_every_steps": 5, "drop_incomplete": True}},
     ("miner.refresh_every_steps", "miner.drop_incomplete")),
    ({"miner": {"refresh_every_steps": 5}, "training": {"dataloader_num_workers": 2}},
     ("miner.refresh_every_steps", "training.dataloader_num_workers")),
    ({"miner": {"refresh_every_steps": 5}, "training": {"trainer_args": {"fsdp": "full_shard"}}},
     ("miner.refresh_every_steps", "training.trainer_args.fsdp")),
])
def test_refresh_contradictions_are_refused_naming_the_keys(over: dict, keys: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe({**DATA, **over})
    assert "\n" not in str(info.value)
    for key in keys:
        assert key in str(info.value)


def test_refresh_without_a_miner_section_is_refused() -> None:
    # --set on a recipe that trains on its data's own negatives would otherwise start mining silently
    with pytest.raises(ConfigError, match="no 'miner' section") as info:
        parse_recipe(DATA, sets=["miner.refresh_every_steps=5"])
    assert info.value.where == "--set miner.refresh_every_steps"
    assert parse_recipe({**DATA, "miner": {}}, sets=["miner.refresh_every_steps=5"]).miner.refresh_every_steps == 5
    assert parse_recipe({**DATA, "miner": {"refresh_every_steps": 5}}).miner.refresh_every_steps == 5
