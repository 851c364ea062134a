"""Exact resume, GradCache inside the Trainer, crash-safe checkpoint folders, saved model folders and cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from embedkit.errors import ConfigError
from embedkit.training.checkpoint import (
    COMPLETE_MARKER,
    clean_stale,
    is_complete,
    last_complete_checkpoint,
    publish,
    rotate,
    write_marker,
)
from embedkit.training.config import load_recipe
from embedkit.training.runner import run_recipe


class StopAt(TrainerCallback):
    """Stop training after ``step`` optimizer steps (what a crash right after that step looks like)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_stop_and_resume_gives_the_uninterrupted_weights(write_recipe, tmp_path: Path) -> None:
    # dropout is on (tiny_bert): equality needs the RNG, optimizer, scheduler and data order restored
    recipe = load_recipe(write_recipe(training={"max_steps": 5}, output={"save_steps": 2}))
    full = run_recipe(recipe, tmp_path / "full")
    part_dir = tmp_path / "part"
    stopped = run_recipe(recipe, part_dir, callbacks=[StopAt(3)])
    assert stopped.stages[0].global_step == 3
    assert last_complete_checkpoint(part_dir / "checkpoints").name == "checkpoint-2"  # resume replays step 3
    assert _max_diff(_weights(full.final_dir), _weights(stopped.final_dir)) > 1e-4  # really stopped early
    resumed = run_recipe(recipe, part_dir, resume=True)
    assert resumed.stages[0].global_step == 5
    assert _max_diff(_weights(full.final_dir), _weights(resumed.final_dir)) <= 1e-6
    state = json.loads((part_dir / "checkpoints" / "checkpoint-5" / "trainer_state.json").read_text())
    assert state["global_step"] == 5


def test_resume_refuses_a_changed_recipe(write_recipe, tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(training={"max_steps": 2}, output={"save_steps": 1}))
    run_recipe(recipe, tmp_path / "run", callbacks=[StopAt(1)])
    changed = load_recipe(write_recipe(training={"max_steps": 2, "lr": 0.5}, output={"save_steps": 1}))
    with pytest.raises(ConfigError, match="'training.lr' was 0.001 in the run being resumed, now 0.5"):
        run_recipe(changed, tmp_path / "run", resume=True)


def test_resume_accepts_a_run_saved_before_a_key_with_a_default_existed(tmp_path: Path) -> None:
    """A recipe.yaml written before ``data.datasets.N.split`` existed compares equal to today's (default ``train``);
    a real change is still refused."""
    import yaml

    from embedkit.training.config import parse_recipe
    from embedkit.training.runner import check_resume_recipe

    recipe = parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}})
    old = recipe.model_dump(mode="json")
    del old["data"]["datasets"][0]["split"]
    check_resume_recipe(yaml.safe_dump(old), recipe, "recipe.yaml")
    old["training"]["lr"] = 0.5
    with pytest.raises(ConfigError, match="'training.lr' was 0.5"):
        check_resume_recipe(yaml.safe_dump(old), recipe, "recipe.yaml")


def test_gradcache_step_equals_plain_step_no_double_backward(write_recipe, tiny_bert_nodrop: str,
                                                             tmp_path: Path) -> None:
    # SGD: a second backward (doubled gradient) would show up as a doubled update, unlike with Adam
    common = dict(model={"name": tiny_bert_nodrop, "max_seq_length": 32},
                  output={"save_steps": None})
    train = {"max_steps": 2, "lr": 0.5, "warmup_ratio": 0.0, "max_grad_norm": 0.0,
             "trainer_args": {"optim": "sgd"}, "batch_size": 8, "logging_steps": 100, "seed": 7}
    plain = run_recipe(load_recipe(write_recipe("a.yaml", training=train, **common)), tmp_path / "plain")
    gc = run_recipe(load_recipe(write_recipe("b.yaml", training={**train, "gradcache_chunk_size": 3}, **common)),
                    tmp_path / "gc")
    base = load_file(str(Path(tiny_bert_nodrop) / "model.safetensors"))
    wp, wg = _weights(plain.final_dir), _weights(gc.final_dir)
    assert _max_diff(wp, wg) <= 1e-5
    assert max(float((wp[k] - base[k]).abs().max()) for k in base) > 1e-2  # the steps did move the weights


def test_encode_chunks_give_the_whole_batch_step(write_recipe, tiny_bert_nodrop: str, tmp_path: Path) -> None:
    # length-sorted sub-batches with a graph: same loss, same gradient (SGD makes any difference show in the weights)
    common = dict(model={"name": tiny_bert_nodrop, "max_seq_length": 32}, output={"save_steps": None})
    train = {"max_steps": 2, "lr": 0.5, "warmup_ratio": 0.0, "max_grad_norm": 0.0,
             "trainer_args": {"optim": "sgd"}, "batch_size": 8, "logging_steps": 100, "seed": 7}
    whole = run_recipe(load_recipe(write_recipe("a.yaml", training=train, **common)), tmp_path / "whole")
    chunked = run_recipe(load_recipe(write_recipe("b.yaml", training={**train, "encode_chunk_size": 3}, **common)),
                         tmp_path / "chunked")
    base = load_file(str(Path(tiny_bert_nodrop) / "model.safetensors"))
    ww, wc = _weights(whole.final_dir), _weights(chunked.final_dir)
    assert _max_diff(ww, wc) <= 1e-5
    assert max(float((ww[k] - base[k]).abs().max()) for k in base) > 1e-2
    assert "length-sorted chunks of 3" in (chunked.final_dir / "README.md").read_text()


def test_final_folder_loads_and_carries_a_card(write_recipe, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    import embedkit

    res = run_recipe(load_recipe(write_recipe(training={"max_steps": 2}, output={"save_steps": 2})),
                     tmp_path / "run")
    final = res.final_dir
    assert is_complete(final) and (tmp_path / "run" / "recipe.yaml").is_file()
    card = (final / "README.md").read_text()
    assert "## Recipe" in card and "debian" in card and "max_steps: 2" in card and "trust_remote_code" in card
    info = json.loads((final / "embedkit_training.json").read_text())
    assert info["data"][0]["pairs"] == 48 and info["step"] == 2
    texts = ["list directory contents", "a web server"]
    a = embedkit.encode(embedkit.load_model(str(final)), texts)
    b = SentenceTransformer(str(final), device="cpu").encode(texts)
    assert float(abs(a - b).max()) < 1e-5
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    assert is_complete(ckpt) and (ckpt / "README.md").is_file()
    c = embedkit.encode(embedkit.load_model(str(ckpt)), texts)
    assert float(abs(a - c).max()) < 1e-6  # the last checkpoint holds the final weights


def test_two_stage_recipe_chains_stages_and_resume_skips_finished(write_recipe, debian_pairs: str,
                                                                  tmp_path: Path) -> None:
    stages = [
        {"name": "retrieval", "training": {"max_steps": 2}},
        {"name": "blend", "training": {"max_steps": 1, "warmup_ratio": 0.0}, "data": {"datasets": [
            {"path": debian_pairs, "name": "retrieval", "max_negatives": 0},
            {"path": debian_pairs, "name": "sts", "in_batch_negatives": True, "max_negatives": 0, "weight": 0.5}]}},
    ]
    recipe = load_recipe(write_recipe(stages=stages, output={"save_steps": None}))
    out = tmp_path / "run"
    res = run_recipe(recipe, out)
    s1, s2 = (out / "stages" / "01-retrieval" / "final"), (out / "stages" / "02-blend" / "final")
    assert [s.global_step for s in res.stages] == [2, 1]
    assert is_complete(s1) and is_complete(s2) and res.final_dir == out / "final"
    assert _max_diff(_weights(s2), _weights(res.final_dir)) == 0.0
    assert _max_diff(_weights(s1), _weights(s2)) > 0  # stage 2 trained on from stage 1
    assert "blend" in (s2 / "README.md").read_text()
    again = run_recipe(recipe, out, resume=True)
    assert again.stages[0].global_step == -1  # finished stage skipped


# -- checkpoint folder mechanics -----------------------------------------------------------------------------------


def _fake_ckpt(folder: Path, step: int, *, complete: bool = True) -> Path:
    part = folder / f".checkpoint-{step}.partial"
    part.mkdir(parents=True)
    (part / "model.safetensors").write_bytes(b"x" * (10 + step))
    if complete:
        write_marker(part, {"global_step": step})
        publish(part, folder / f"checkpoint-{step}")
        return folder / f"checkpoint-{step}"
    return part


def test_last_complete_checkpoint_skips_partial_and_damaged(tmp_path: Path) -> None:
    _fake_ckpt(tmp_path, 2)
    c4 = _fake_ckpt(tmp_path, 4)
    _fake_ckpt(tmp_path, 6, complete=False)  # killed mid-save: never named checkpoint-6
    assert last_complete_checkpoint(tmp_path) == c4
    (c4 / "model.safetensors").write_bytes(b"short")  # truncated after the marker: not complete
    assert not is_complete(c4)
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-2"
    hand_made = tmp_path / "checkpoint-9"  # a folder without marker (e.g. copied by hand, half-way)
    hand_made.mkdir()
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-2"
    removed = clean_stale(tmp_path)
    assert sorted(removed) == [".checkpoint-6.partial", "checkpoint-4", "checkpoint-9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_rotate_keeps_newest_complete(tmp_path: Path) -> None:
    for s in (1, 2, 3):
        _fake_ckpt(tmp_path, s)
    rotate(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert (tmp_path / "checkpoint-3" / COMPLETE_MARKER).is_file()


def test_miner_section_mines_negatives_that_training_uses(write_recipe, debian_pairs: str, tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(
        data={"datasets": [{"path": debian_pairs, "name": "debian", "max_negatives": 2}]},
        miner={"num_negatives": 2, "range_max": 8, "max_score_ratio": None},
        training={"max_steps": 1}, output={"save_steps": None},
    ))
    res = run_recipe(recipe, tmp_path / "run")
    lines = (tmp_path / "run" / "mined" / "debian.jsonl").read_text().splitlines()
    assert len(lines) == 48 and all(len(json.loads(x)["negatives"]) == 2 for x in lines)
    info = json.loads((res.final_dir / "embedkit_training.json").read_text())
    assert info["data"][0]["mined"] is True and info["data"][0]["mean_negatives"] == 2.0


def test_runs_sharing_miner_cache_dir_embed_each_text_once(write_recipe, debian_pairs: str, tmp_path: Path,
                                                          monkeypatch) -> None:
    import embedkit.mining.miner as miner

    texts: list[int] = []
    real = miner.encode

    def counting(model, batch, **kw):
        texts.append(len(batch))
        return real(model, batch, **kw)

    monkeypatch.setattr(miner, "encode", counting)
    shared = tmp_path / "shared-cache"
    for run, ratio in (("a", None), ("b", 0.9)):  # the second run changes a filter, not the embeddings
        recipe = load_recipe(write_recipe(
            f"{run}.yaml", data={"datasets": [{"path": debian_pairs, "name": "debian", "max_negatives": 1}]},
            miner={"num_negatives": 1, "range_max": 8, "max_score_ratio": ratio, "cache_dir": str(shared)},
            training={"max_steps": 1}, output={"save_steps": None},
        ))
        run_recipe(recipe, tmp_path / run)
        if run == "a":
            first = sum(texts)
            assert first > 0 and any(shared.iterdir())
            assert not (tmp_path / "a" / "mined" / "cache").exists()
    assert sum(texts) == first, "the second run must read every embedding from the shared cache"
    assert (tmp_path / "b" / "mined" / "debian.jsonl").is_file()


def test_miner_model_mines_with_another_encoder_than_the_one_trained(write_recipe, debian_pairs: str,
                                                                     tmp_path: Path, monkeypatch) -> None:
    # a decoder fresh out of MNTP cannot rank yet: the recipe mines with a small trained encoder instead
    import embedkit.mining.miner as miner

    dims: list[int] = []
    real = miner.encode

    def recording(model, batch, **kw):
        dims.append(model.get_embedding_dimension())
        return real(model, batch, **kw)

    monkeypatch.setattr(miner, "encode", recording)
    recipe = load_recipe(write_recipe(
        data={"datasets": [{"path": debian_pairs, "name": "debian", "max_negatives": 1}]},
        miner={"num_negatives": 1, "range_max": 8, "max_score_ratio": None, "model": "minilm"},
        training={"max_steps": 1}, output={"save_steps": None},
    ))
    res = run_recipe(recipe, tmp_path / "run")
    assert dims and set(dims) == {384}  # every mining pass embedded with MiniLM (384-d), none with the tiny model
    trained = json.loads((res.final_dir / "config.json").read_text())
    assert trained["hidden_size"] != 384  # ... while the tiny BERT is what was trained
    lines = (tmp_path / "run" / "mined" / "debian.jsonl").read_text().splitlines()
    assert len(lines) == 48 and all(len(json.loads(x)["negatives"]) == 1 for x in lines)


class CrashAt(TrainerCallback):
    """Raise at ``step`` of the stage whose folder name holds ``stage`` (what a crash mid-stage looks like)."""

    def __init__(self, stage: str, step: int) -> None:
        self.stage, self.step = stage, step

    def on_step_end(self, args, state, control, **kwargs):
        if self.stage in args.output_dir and state.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_from_a_checkpoint_path_applies_to_its_own_stage_only(write_recipe, tmp_path: Path) -> None:
    stages = [{"name": "one", "training": {"max_steps": 2}},
              {"name": "two", "training": {"max_steps": 1, "warmup_ratio": 0.0}}]
    recipe = load_recipe(write_recipe(stages=stages, output={"save_steps": 1}))
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(recipe, out, callbacks=[CrashAt("01-one", 2)])
    ckpt = out / "stages" / "01-one" / "checkpoints" / "checkpoint-1"
    assert is_complete(ckpt)
    res = run_recipe(recipe, out, resume=str(ckpt))
    assert [s.global_step for s in res.stages] == [2, 1]
    # stage two starts from stage one's final model and trains its own step; it must not resume from stage one's
    # checkpoint (whose step 1 would already be stage two's last)
    two = out / "stages" / "02-two" / "final"
    assert _max_diff(_weights(two), _weights(ckpt)) > 1e-6
    assert _max_diff(_weights(two), _weights(out / "stages" / "01-one" / "final")) > 1e-6
