"""``eval/quality.py`` (the README demo and the quality benchmark) trains what ``recipes/minilm-cpu.yaml`` ships.

The benchmark's claim is about "the recipe a user gets by default"; this keeps the two from drifting apart, and
checks the control/ablation switches change exactly what they say.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from embedkit.training.config import Recipe, load_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality", REPO / "eval" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: the only recipe keys the benchmark may override: its budget (steps, batch, seed, precision, where it reads and
#: writes; no checkpoints, and no evaluation by the recipe: it scores every arm itself) ...
BUDGET = {"data.datasets.0.path", "miner.cache_dir", "training.max_steps", "training.batch_size",
          "training.gradcache_chunk_size", "training.seed", "training.bf16", "eval.beir", "output.save_steps"}
#: ... and its switches (ablations, the teacher, the decoder arms' attention / pooling / prompts / adapted model)
SWITCHES = {"data.datasets.0.max_negatives", "miner", "miner.num_negatives", "miner.teacher", "miner.teacher_type",
            "losses.infonce.masking", "losses.infonce.masking.margin", "losses.infonce.mixing",
            "losses.infonce.mixing.seed", "losses.listwise", "model.name", "data.batching",
            "miner.refresh_every_steps", "losses.matryoshka", "losses.spread_out", "losses.infonce.hardness", "model.bidirectional", "model.pooling",
            "model.latent_attention", "model.prompts", "model.exclude_prompt", "model.lora"}


def _keys(arm) -> set[str]:
    return {o.split("=", 1)[0] for o in arm.overrides}


def _arm(quality, tmp_path: Path, argv: list[str], change=None, teacher=None):
    args = quality.parse_args(argv)
    return quality.embedkit_arm(args, tmp_path / "train.jsonl", tmp_path, change, teacher=teacher)


def _benchmark_recipe(quality, tmp_path: Path, argv: list[str], change=None, teacher=None) -> Recipe:
    return _arm(quality, tmp_path, argv, change, teacher).load()


def _decoder_recipe(quality, tmp_path: Path, args, switches: dict) -> Recipe:
    return quality.decoder_arm(args, tmp_path / "train.jsonl", tmp_path, switches).load()


def _without(dump: dict, keys: set[str]) -> dict:
    """``dump`` with the dotted ``keys`` taken out (where present)."""
    dump = copy.deepcopy(dump)
    for key in keys:
        *path, last = key.split(".")
        node = dump
        for part in path:
            node = node[int(part)] if isinstance(node, list) else (node or {}).get(part)
        if isinstance(node, dict):
            node.pop(last, None)
    return dump


def test_default_benchmark_recipe_is_the_shipped_minilm_recipe(quality, tmp_path: Path) -> None:
    arm = _arm(quality, tmp_path, [])
    shipped = load_recipe(quality.recipe_dir() / "minilm-cpu.yaml")
    assert arm.recipe == "minilm-cpu.yaml"
    # at the default budget, only where it reads and writes differs from what `embedkit train` trains
    where = {"data.datasets.0.path", "miner.cache_dir", "eval.beir", "output.save_steps"}
    assert _keys(arm) == where
    assert _without(arm.load().model_dump(), where) == _without(shipped.model_dump(), where)
    assert arm.load().data.datasets[0].path == str(tmp_path / "train.jsonl")
    assert arm.load().eval.beir is None  # the benchmark scores the arms itself, on its held-out split
    assert arm.load().losses.infonce.mixing is None  # off by default: it hurt in the ablation


def test_ablation_switches_change_one_thing(quality, tmp_path: Path) -> None:
    base = _benchmark_recipe(quality, tmp_path, [])
    no_neg = _benchmark_recipe(quality, tmp_path, [], quality.ABLATIONS["without mined hard negatives"])
    assert no_neg.miner is None and no_neg.data.datasets[0].max_negatives == 0 and no_neg.losses == base.losses
    mixed = _benchmark_recipe(quality, tmp_path, [], {"losses.infonce.mixing": quality.MIXING})
    assert mixed.losses.infonce.mixing.num_mixed == 8 and not mixed.losses.infonce.mixing.mix_query
    assert mixed.losses.infonce.mixing.seed == 42 and mixed.training == base.training
    plain = _benchmark_recipe(quality, tmp_path, [], quality.ABLATIONS[
        "plain in-batch InfoNCE (no mined negatives, masking, mixing or GradCache)"])
    assert plain.training.gradcache_chunk_size is None and plain.losses.infonce.masking is None
    assert plain.miner is None and plain.training.batch_size == base.training.batch_size
    for change in quality.ABLATIONS.values():
        assert _keys(_arm(quality, tmp_path, [], change)) <= BUDGET | SWITCHES
    # --quick: smaller batch, GradCache doubles it; --gradcache-factor 1 with a chunk >= batch turns GradCache off
    quick = _benchmark_recipe(quality, tmp_path, ["--quick"])
    assert (quick.training.batch_size, quick.training.gradcache_chunk_size, quick.training.max_steps) == (32, 16, 30)
    off = _benchmark_recipe(quality, tmp_path, ["--gradcache-factor", "1"])
    assert off.training.batch_size == 32 and off.training.gradcache_chunk_size is None
    # the recipe flags, when given, are overrides; --negatives 0 drops the miner
    flags = _benchmark_recipe(quality, tmp_path, ["--lr", "1e-4", "--temperature", "0.1", "--negatives", "0"])
    assert (flags.training.lr, flags.losses.infonce.temperature, flags.miner) == (1e-4, 0.1, None)


def test_settings_with_a_teacher_path_are_written_as_json(quality, tmp_path: Path) -> None:
    # the --teacher arm used to crash when writing quality.json: argparse gives a Path
    import json

    args = quality.parse_args(["--teacher", str(tmp_path / "mpnet"), "-o", str(tmp_path / "out")])
    written = json.loads(json.dumps(quality.run_settings(args)))
    assert written["teacher"] == str(tmp_path / "mpnet") and written["steps"] == args.steps


def test_teacher_arm_adds_listwise_distillation_and_keeps_the_rest(quality, tmp_path: Path) -> None:
    base = _benchmark_recipe(quality, tmp_path, [])
    kd = _benchmark_recipe(quality, tmp_path, ["--teacher-temperature", "0.1"], teacher=tmp_path / "mpnet")
    assert kd.miner.teacher == str(tmp_path / "mpnet") and kd.miner.teacher_type == "bi"
    assert kd.losses.listwise is not None and kd.losses.listwise.teacher_temperature == 0.1
    assert kd.losses.listwise.temperature == base.losses.infonce.temperature  # the recipe's
    assert kd.losses.infonce == base.losses.infonce and kd.training == base.training
    with pytest.raises(SystemExit, match="needs mined negatives"):
        _benchmark_recipe(quality, tmp_path, ["--negatives", "0"], teacher=tmp_path / "mpnet")


def test_decoder_arms_differ_only_in_attention_and_pooling_and_masking_can_be_switched_off(quality, tmp_path):
    args = quality.parse_args(["--decoder"])
    a = _decoder_recipe(quality, tmp_path, args, quality.CAUSAL_LAST)
    b = _decoder_recipe(quality, tmp_path, args, quality.BIDIR_MEAN)
    shipped = load_recipe(quality.recipe_dir() / "smollm2-bidirectional-lora.yaml")
    assert a.miner is None and a.training == b.training and a.losses == b.losses
    assert a.training.lr == shipped.training.lr and a.losses.infonce.masking is not None
    assert (a.model.bidirectional, a.model.pooling, b.model.bidirectional, b.model.pooling) == (
        False, "last", True, "mean")
    off = quality.parse_args(["--decoder", "--decoder-no-masking"])
    c = _decoder_recipe(quality, tmp_path, off, quality.BIDIR_MEAN)
    assert c.losses.infonce.masking is None and c.training == b.training


def test_decoder_negatives_are_mined_by_minilm_for_every_arm_alike(quality, tmp_path: Path, capsys) -> None:
    args = quality.parse_args(["--decoder", "--decoder-negatives", "3"])
    a = _decoder_recipe(quality, tmp_path, args, quality.CAUSAL_LAST)
    b = _decoder_recipe(quality, tmp_path, args, quality.BIDIR_MEAN)
    # mined by base MiniLM, not by the decoder under training, into one cache shared by the arms
    assert a.miner is not None and a.miner.model == "minilm" and a.miner.num_negatives == 3
    assert a.miner == b.miner and a.data == b.data and a.training == b.training and a.losses == b.losses
    assert a.miner.cache_dir == str(tmp_path / "mining-cache")
    assert a.data.datasets[0].max_negatives == 3
    assert a.miner.max_score_ratio == 0.95  # the recipe's positive-aware filter
    none = _decoder_recipe(quality, tmp_path, quality.parse_args(["--decoder"]), quality.CAUSAL_LAST)
    assert none.miner is None and none.data.datasets[0].max_negatives == 0
    with pytest.raises(SystemExit) as exc:
        quality.parse_args(["--decoder", "--decoder-negatives", "-1"])
    assert exc.value.code == 2 and "--decoder-negatives -1" in capsys.readouterr().err


def test_the_decoder_arms_train_the_shipped_decoder_recipe(quality, tmp_path: Path) -> None:
    """With the recipe's negatives, batch and prompts, the bidirectional arm is the SmolLM2 recipe a user runs, but
    for the benchmark's steps and paths: its miner, filter, temperature, learning rate, LoRA and length."""
    args = quality.parse_args(["--decoder", "--decoder-negatives", "3", "--batch-size", "16", "--gradcache-factor",
                               "1", "--decoder-prompts"])
    arm = quality.decoder_arm(args, tmp_path / "train.jsonl", tmp_path, quality.BIDIR_MEAN)
    assert arm.recipe == "smollm2-bidirectional-lora.yaml"
    where = {"data.datasets.0.path", "miner.cache_dir", "training.max_steps", "eval.beir", "output.save_steps"}
    assert _keys(arm) == where
    shipped = load_recipe(quality.recipe_dir() / arm.recipe)
    assert _without(arm.load().model_dump(), where) == _without(shipped.model_dump(), where)
    assert (shipped.model.bidirectional, shipped.model.pooling) == (True, "mean")


def _pairs_file(tmp_path: Path, n: int) -> Path:
    from embedkit.data.readers import Pair, write_pairs

    path = tmp_path / "train.jsonl"
    write_pairs([Pair(query=f"q{i}", positives=[f"d{i}"]) for i in range(n)], path)
    return path


def test_train_pairs_from_a_file_is_a_seeded_sample_of_the_whole_file(quality, tmp_path: Path) -> None:
    # the full train split is sorted by package name: taking its head would train on one corner of the archive
    path = _pairs_file(tmp_path, 50)
    a = [p.query for p in quality.train_pairs(10, path, seed=1)]
    assert a == [p.query for p in quality.train_pairs(10, path, seed=1)]  # reproducible
    assert len(a) == len(set(a)) == 10 and a != [f"q{i}" for i in range(10)]
    assert a != [p.query for p in quality.train_pairs(10, path, seed=2)]
    assert len(quality.train_pairs(None, path)) == 50 and len(quality.train_pairs(80, path)) == 50
    # without a file: the packaged sample's head, as before
    packaged = quality.train_pairs(5)
    assert len(packaged) == 5 and packaged[0].query == quality.train_pairs(1)[0].query


def test_a_train_file_holding_held_out_queries_is_refused(quality, tmp_path: Path) -> None:
    path = _pairs_file(tmp_path, 5)
    pairs = quality.train_pairs(None, path)
    quality.refuse_leaked(pairs, ["another query", "not in training"], path)  # clean: no error
    with pytest.raises(SystemExit, match=r"holds 2 of the held-out test queries.*build_debian"):
        quality.refuse_leaked(pairs, ["q1", "q3", "unrelated"], path)


def test_train_clock_reports_the_steady_loop_after_warm_up(quality, monkeypatch) -> None:
    from types import SimpleNamespace

    ticks = iter([100.0, 110.0, 113.0])  # begin; after warm-up step 5 (slow: 10 s); end (3 more steps in 3 s)
    monkeypatch.setattr(quality.TrainClock, "_now", staticmethod(lambda: next(ticks)))
    clock, state = quality.TrainClock(skip=5), SimpleNamespace(global_step=0)
    clock.on_train_begin(None, state, None)
    for step in range(1, 9):
        state.global_step = step
        clock.on_step_end(None, state, None)
    clock.on_train_end(None, state, None)
    assert clock.summary() == {"loop_s": 13.0, "steps": 8, "steps_per_s": 1.0}
    # a run shorter than the warm-up: every step counts
    ticks = iter([0.0, 4.0])
    short = quality.TrainClock(skip=5)
    short.on_train_begin(None, state, None)
    state.global_step = 2
    short.on_step_end(None, state, None)
    short.on_train_end(None, state, None)
    assert short.summary() == {"loop_s": 4.0, "steps": 2, "steps_per_s": 0.5}


def test_decoder_skip_base_runs_only_the_fine_tuned_arms(quality, tmp_path: Path) -> None:
    def arms(argv: list[str]) -> list[tuple[str, bool]]:
        seen: list[tuple[str, bool]] = []

        def arm(name, train, trained=True, setup=None):  # records the arm without training or loading anything
            seen.append((name, trained))
            return {}

        args = quality.parse_args(["--decoder", "-o", str(tmp_path), *argv])
        quality.decoder_arms(args, tmp_path / "train.jsonl", [], arm)
        return seen

    everything = arms([])
    assert [t for _, t in everything] == [False, False, True, True]
    assert arms(["--decoder-skip-base"]) == everything[2:]
    picked = arms(["--decoder-skip-base", "--decoder-arms", "causal-mean, bidir-latent"])
    assert picked == [(quality.DECODER_ARMS[k][0], True) for k in ("causal-mean", "bidir-latent")]


def test_decoder_arms_split_the_comparison_and_reject_unknown_names(quality, tmp_path: Path) -> None:
    args = quality.parse_args(["--decoder"])
    models = {}
    for key, (_, switches, objective) in quality.DECODER_ARMS.items():  # objective: the stage before training
        assert (key in quality.MNTP_ARMS, key in quality.CLM_ARMS) == (objective == "mntp", objective == "clm")
        models[key] = _decoder_recipe(quality, tmp_path, args, switches).model
    # each extra arm differs from one of the two arms in exactly one of attention / pooling
    assert models["causal-mean"].pooling == models["bidir-mean"].pooling == "mean"
    assert not models["causal-mean"].bidirectional and models["bidir-mean"].bidirectional
    assert models["bidir-last"].pooling == models["causal-last"].pooling == "last"
    assert models["bidir-latent"].pooling == "latent_attention"
    assert models["bidir-latent"].latent_attention.num_latents == 128
    assert quality.MNTP_ARMS == ("bidir-mntp-mean", "causal-mntp-mean", "bidir-mntp-latent")
    assert models["bidir-mntp-mean"] == models["bidir-mean"]  # MNTP changes the weights, not the recipe
    assert models["causal-mntp-mean"] == models["causal-mean"]
    assert models["bidir-mntp-latent"] == models["bidir-latent"]
    assert quality.CLM_ARMS == ("causal-clm-last", "causal-clm-mean")
    assert models["causal-clm-last"] == models["causal-last"]  # the control: the baseline, after CLM
    assert models["causal-clm-mean"] == models["causal-mean"]
    assert not models["causal-clm-last"].bidirectional
    with pytest.raises(SystemExit):
        quality.parse_args(["--decoder", "--decoder-arms", "causal-mean,bidir-everything"])
    with pytest.raises(SystemExit):
        quality.parse_args(["--decoder", "--decoder-arms", ","])


def test_decoder_prompts_give_every_arm_the_shipped_recipes_instruction(quality, tmp_path: Path, monkeypatch) -> None:
    recipes: list[Recipe] = []
    monkeypatch.setattr(quality, "run_embedkit", lambda arm, out: recipes.append(arm.load()) or (None, None))
    monkeypatch.setattr(quality, "run_decoder_adaptation", lambda *a: None)

    def run(argv: list[str]) -> list:
        recipes.clear()
        args = quality.parse_args(["--decoder", "--decoder-skip-base", "--decoder-arms",
                                   "causal-last,bidir-mntp-mean", "-o", str(tmp_path), *argv])
        quality.decoder_arms(args, tmp_path / "train.jsonl", [], lambda name, train, **kw: train() and {})
        return [r.model for r in recipes]

    shipped = load_recipe(quality.recipe_dir() / "smollm2-bidirectional-lora.yaml").model
    with_prompts = run(["--decoder-prompts"])
    assert len(with_prompts) == 2
    for model in with_prompts:  # both sides of the comparison, the same instruction as the recipe a user runs
        assert model.prompts == shipped.prompts and model.exclude_prompt
    assert [m.pooling for m in with_prompts] == ["last", "mean"]  # nothing else changed
    for model in run([]):
        assert model.prompts.style == "none" and not model.exclude_prompt


def test_the_mntp_arm_adapts_the_model_then_trains_the_adapted_folder(quality, tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(quality, "run_decoder_adaptation", lambda cfg, out: calls.append((cfg.objective, str(out))))
    monkeypatch.setattr(quality, "run_embedkit",
                        lambda arm, out: calls.append(("train", arm.load().model.name)) or (None, None))

    def arm(name, train, trained=True, setup=None):  # runs the (patched) training, scores nothing
        train()
        return {}

    args = quality.parse_args(["--decoder", "--decoder-skip-base", "--decoder-arms",
                               "bidir-mntp-mean,bidir-mean,causal-clm-last,causal-mntp-mean,causal-clm-mean",
                               "-o", str(tmp_path)])
    quality.decoder_arms(args, tmp_path / "train.jsonl", [], arm)
    adapted, control = str(tmp_path / "smollm2-mntp"), str(tmp_path / "smollm2-clm")
    # one stage per objective, before its first arm, shared by that objective's arms
    assert calls == [("mntp", adapted), ("train", adapted), ("train", "smollm2"), ("clm", control),
                     ("train", control), ("train", adapted), ("train", control)]


def test_an_adapted_folder_replaces_the_mntp_stage(quality, tmp_path: Path, monkeypatch) -> None:
    adapted = tmp_path / "adapted"
    adapted.mkdir()
    (adapted / "mntp.json").write_text("{}")
    calls: list[tuple[str, str]] = []
    control = tmp_path / "control"
    control.mkdir()
    (control / "mntp.json").write_text(json.dumps({"config": {"objective": "clm"}}))
    monkeypatch.setattr(quality, "run_decoder_adaptation", lambda cfg, out: calls.append((cfg.objective, str(out))))
    monkeypatch.setattr(quality, "run_embedkit",
                        lambda arm, out: calls.append(("train", arm.load().model.name)) or (None, None))
    args = quality.parse_args(["--decoder", "--decoder-skip-base", "--decoder-arms", "bidir-mntp-mean",
                               "--decoder-mntp-model", str(adapted), "-o", str(tmp_path / "out")])
    quality.decoder_arms(args, tmp_path / "train.jsonl", [], lambda name, train, **kw: train() and {})
    assert calls == [("train", str(adapted))]  # trained from the given folder; MNTP not run again
    assert quality.run_settings(args)["decoder_mntp_model"] == str(adapted)  # recorded in quality.json

    calls.clear()
    args = quality.parse_args(["--decoder", "--decoder-skip-base", "--decoder-arms", "causal-clm-last,bidir-mntp-mean",
                               "--decoder-clm-model", str(control), "-o", str(tmp_path / "out2")])
    quality.decoder_arms(args, tmp_path / "train.jsonl", [], lambda name, train, **kw: train() and {})
    # the given CLM folder is used as is; the MNTP arm still gets its own stage
    mntp_out = str(tmp_path / "out2" / "smollm2-mntp")
    assert calls == [("train", str(control)), ("mntp", mntp_out), ("train", mntp_out)]


@pytest.mark.parametrize("flag, arms, record, message", [
    ("--decoder-mntp-model", "bidir-mean", "{}", "add one to --decoder-arms"),
    ("--decoder-mntp-model", "bidir-mntp-mean", None, "no mntp.json there"),
    ("--decoder-clm-model", "causal-last", '{"config": {"objective": "clm"}}', "add one to --decoder-arms"),
    # an MNTP folder (old ones have no objective recorded) is not the CLM control, and the other way round
    ("--decoder-clm-model", "causal-clm-last", "{}", "adapted with objective 'mntp', not 'clm'"),
    ("--decoder-mntp-model", "bidir-mntp-mean", '{"config": {"objective": "clm"}}', "pass it as --decoder-clm-model"),
    ("--decoder-mntp-model", "bidir-mntp-mean", "[1, 2]", "not the JSON object embedkit mntp writes"),
    ("--decoder-mntp-model", "bidir-mntp-mean", "{not json", "not the JSON object embedkit mntp writes"),
])
def test_a_wrong_adapted_folder_is_refused_before_any_work(quality, tmp_path: Path, flag: str, arms: str,
                                                           record: str | None, message: str, capsys) -> None:
    folder = tmp_path / "adapted"
    if record is not None:
        folder.mkdir()
        (folder / "mntp.json").write_text(record)
    with pytest.raises(SystemExit) as exc:
        quality.parse_args(["--decoder", "--decoder-arms", arms, flag, str(folder)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err


def test_decoder_throughput_counts_the_mined_negatives_each_example_encodes(quality) -> None:
    from embedkit.data.schema import Pair

    def tokenizer(texts, add_special_tokens, truncation, max_length):  # one token per word plus one special token
        assert add_special_tokens and truncation
        return {"input_ids": [[0] * min(max_length, 1 + len(t.split())) for t in texts]}

    pairs = [Pair(query="a b", positives=["one two three"]), Pair(query="c", positives=["four five six seven eight"])]
    # queries (3 + 2) / 2 = 2.5 tokens, positives (4 + 5) / 2 = 4.5 (the second truncated from 6 to 5)
    assert quality.tokens_per_example(tokenizer, pairs, max_seq_length=5, negatives=0) == 2.5 + 4.5
    # a mined negative per query is one more document encoded: counted at the positives' mean length
    assert quality.tokens_per_example(tokenizer, pairs, max_seq_length=5, negatives=1) == 2.5 + 2 * 4.5
    assert quality.tokens_per_example(tokenizer, pairs, max_seq_length=5, negatives=3) == 2.5 + 4 * 4.5
    assert quality.tokens_per_example(tokenizer, [], max_seq_length=5, negatives=1) == 0.0
    # an instruction prompt lengthens the queries only: 3 + 2 words each, both truncated to 5 tokens
    assert quality.tokens_per_example(tokenizer, pairs, 5, 1, query_prompt="Instruct: x Query: ") == 5.0 + 2 * 4.5
    assert quality.tokens_per_example(tokenizer, pairs, 9, 1, query_prompt="Instruct: x Query: ") == 6.5 + 2 * 4.5


def _nudge(value, key: str = ""):
    """Every number of a recipe moved (floats x 0.9 keeps every bound: rates > 0, ratios < 1), the instruction too."""
    if isinstance(value, dict):
        return {k: _nudge(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_nudge(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.9
    return value + " (nudged)" if key == "instruction" else value


@pytest.fixture
def nudged_recipes(quality, tmp_path: Path, monkeypatch) -> Path:
    """The benchmark reads copies of the shipped recipes with every setting changed: a setting restated in Python
    shows up as an override outside the budget and switches, or as an arm that differs from its recipe."""
    import yaml

    folder = tmp_path / "nudged"
    folder.mkdir()
    for name in (quality.MINILM_RECIPE, quality.DECODER_RECIPE, quality.DISTILL_RECIPE):
        data = yaml.safe_load((quality.recipe_dir() / name).read_text(encoding="utf-8"))
        (folder / name).write_text(yaml.safe_dump(_nudge(data)), encoding="utf-8")
    monkeypatch.setattr(quality, "recipe_dir", lambda: folder)
    return folder


def test_every_arm_trains_its_shipped_recipe_plus_only_the_listed_overrides(quality, nudged_recipes, tmp_path,
                                                                           monkeypatch, capsys) -> None:
    from types import SimpleNamespace

    import embedkit.models
    import embedkit.training.runner
    from embedkit.models.config import ModelConfig

    trained: list[Recipe] = []
    loaded: list[ModelConfig] = []
    anchor: list[Recipe] = []
    monkeypatch.setattr(embedkit.training.runner, "run_recipe", lambda recipe, out, **kw: trained.append(recipe)
                        or SimpleNamespace(final_dir=Path(out) / "final"))
    monkeypatch.setattr(embedkit.models, "load_model",
                        lambda m: loaded.append(m) if isinstance(m, ModelConfig) else None)
    monkeypatch.setattr(quality, "anchor_finetune", lambda args, recipe, pairs, out: anchor.append(recipe))
    monkeypatch.setattr(quality, "run_decoder_adaptation", lambda cfg, out: None)
    monkeypatch.setattr(quality, "eval_split",
                        lambda *a: SimpleNamespace(queries={"q": "a query"}, corpus={"d": "a doc"}, source=""))
    monkeypatch.setattr(quality, "score", lambda model, beir: dict.fromkeys(quality.METRICS, 0.5))
    monkeypatch.setattr("embedkit.evaluation.report.write_report", lambda results, out: None)
    (tmp_path / "mpnet").mkdir()
    out = tmp_path / "out"
    assert quality.main(["--quick", "--ablate", "--teacher", str(tmp_path / "mpnet"), "--decoder",
                         "--decoder-arms", "causal-last,bidir-mntp-mean", "--decoder-negatives", "2",
                         "-o", str(out)]) == 0
    setups = json.loads((out / "quality.json").read_text())["arms"]
    assert len(setups) == 2 + 1 + len(quality.ABLATIONS) + 1 + 2 + 2  # base, anchor, embedkit, ..., decoder
    recipe_arms = [s for s in setups.values() if s["uses"] == "the recipe"]
    model_arms = [s for s in setups.values() if s["uses"] == "model"]
    assert len(trained) == len(recipe_arms) == 1 + len(quality.ABLATIONS) + 1 + 2 and len(loaded) == len(model_arms)

    def effective(setup: dict) -> Recipe:
        assert setup["recipe"] in (quality.MINILM_RECIPE, quality.DECODER_RECIPE)
        assert {o.split("=", 1)[0] for o in setup["overrides"]} <= BUDGET | SWITCHES, setup
        return load_recipe(nudged_recipes / setup["recipe"], sets=setup["overrides"])

    for recipe, setup in zip(trained, recipe_arms):
        assert recipe.model_dump() == effective(setup).model_dump()
    for model, setup in zip(loaded, model_arms):
        assert model == effective(setup).model
    (anchor_setup,) = [s for s in setups.values() if s["uses"].startswith("model, lr")]
    assert anchor[0].model_dump() == effective(anchor_setup).model_dump()
    # the nudged values are what the arms train with
    assert trained[0].training.lr == pytest.approx(0.9 * 5e-5) and trained[0].miner.num_negatives == 2
    assert trained[-1].model.lora.r == 17 and trained[-1].model.name == str(out / "smollm2-mntp")
    printed = capsys.readouterr().out
    for name, setup in setups.items():  # the printed arm table names each arm's recipe and its overrides
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} | {setup['recipe']}"))
        assert all(f"`{o}`" in row for o in setup["overrides"])


def test_the_anchor_and_the_mntp_stage_take_their_settings_from_the_recipes(quality, nudged_recipes, tmp_path):
    args = quality.parse_args(["--quick", "--anchor-batch-size", "24"])
    shipped = load_recipe(nudged_recipes / "minilm-cpu.yaml")
    settings = quality.anchor_settings(args, quality.make_arm(quality.MINILM_RECIPE).load())
    assert settings == {"model": "minilm", "max_seq_length": 129, "temperature": shipped.losses.infonce.temperature,
                        "batch_size": 24, "lr": shipped.training.lr, "steps": 30,
                        "warmup_ratio": shipped.training.warmup_ratio, "weight_decay": shipped.training.weight_decay,
                        "seed": 42}
    decoder = load_recipe(nudged_recipes / "smollm2-bidirectional-lora.yaml")
    cfg = quality.mntp_config(args, tmp_path / "train.jsonl", decoder, "clm")
    assert (cfg.model, cfg.lr, cfg.max_seq_length, cfg.lora) == (
        "smollm2", decoder.training.lr, 257, decoder.model.lora)
    assert (cfg.steps, cfg.batch_size, cfg.objective, cfg.data) == (120, 16, "clm", str(tmp_path / "train.jsonl"))


def test_the_manpages_split_keeps_every_page_name_on_one_side(quality) -> None:
    pairs, held_out = quality.manpages_split()
    name = lambda qid: qid.removeprefix("q-").rsplit(".", 1)[0]  # noqa: E731
    train_names = {name(p.id) for p in pairs}
    test_names = {name(q) for q in held_out.queries}
    assert train_names and test_names and not train_names & test_names
    share = len(pairs) / (len(pairs) + len(held_out.queries))
    assert 0.5 < share < 0.7, share  # ~MANPAGES_TRAIN_SHARE of the ~1,000 pages
    # the test queries retrieve from the whole corpus, and every training positive is one of its documents
    texts = {d["text"] for d in held_out.corpus.values()}
    assert all(p.positives[0] in texts for p in pairs)
    assert {p.query for p in pairs}.isdisjoint(held_out.queries.values())
    # a second call gives the same split (no seed, no order dependence)
    again, held_again = quality.manpages_split()
    assert [p.id for p in again] == [p.id for p in pairs] and held_again.qrels == held_out.qrels


def test_the_manpages_dataset_refuses_extra_debian_pairs(quality, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        quality.parse_args(["--dataset", "manpages", "--train-pairs", str(tmp_path / "x.jsonl")])
    assert "--train-pairs extends the Debian sample only" in capsys.readouterr().err


def test_the_st_mined_arm_mines_with_the_default_recipes_window_count_and_margin(quality, tmp_path: Path) -> None:
    recipe = _benchmark_recipe(quality, tmp_path, [])
    got = quality.st_mined_settings(recipe)
    m = recipe.miner
    assert got == {"range_min": m.range_min, "range_max": m.range_max, "num_negatives": m.num_negatives,
                   "relative_margin": pytest.approx(1 - m.max_score_ratio), "sampling_strategy": "top"}
    # a changed recipe is followed, not a copy of today's numbers
    nudged = _benchmark_recipe(quality, tmp_path, ["--negatives", "3", "--range-min", "2"])
    assert quality.st_mined_settings(nudged)["num_negatives"] == 3
    assert quality.st_mined_settings(nudged)["range_min"] == 2


@pytest.mark.slow
def test_st_mined_rows_keep_negatives_below_the_margin(quality, tmp_path: Path, minilm_path) -> None:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    pairs = quality.train_pairs(60)
    recipe = _benchmark_recipe(quality, tmp_path, [])
    model = SentenceTransformer(minilm_path)
    ds = Dataset.from_dict({"anchor": [p.query for p in pairs], "positive": [p.positives[0] for p in pairs]})
    rows = quality.st_mined_rows(model, ds, recipe)
    assert 0 < len(rows) <= len(ds) and "negative_1" in rows.column_names
    q = model.encode(rows["anchor"], normalize_embeddings=True)
    pos = model.encode(rows["positive"], normalize_embeddings=True)
    neg = model.encode(rows["negative_1"], normalize_embeddings=True)
    pos_s, neg_s = (q * pos).sum(1), (q * neg).sum(1)
    ratio = recipe.miner.max_score_ratio
    assert (neg_s <= pos_s - abs(pos_s) * (1 - ratio) + 1e-4).all()
    assert all(n != p for n, p in zip(rows["negative_1"], rows["positive"]))


#: the distillation arms' switches: the teacher's budget (steps, loss, lr), a reused teacher, and the ablations
DISTILL_SWITCHES = {"teacher.steps", "teacher.loss", "teacher.lr", "teacher.path", "losses.infonce.weight",
                    "losses.infonce.teacher_mask_ratio", "losses.listwise", "losses.margin_mse",
                    "miner.teacher_max_score_ratio"}


def test_the_distill_arms_train_the_shipped_distill_recipe_and_reuse_its_teacher(quality, nudged_recipes, tmp_path,
                                                                                monkeypatch) -> None:
    from types import SimpleNamespace

    import embedkit.models
    import embedkit.training.runner

    trained: list[tuple[Recipe, Path]] = []
    reranked: list[Path] = []
    monkeypatch.setattr(embedkit.training.runner, "run_recipe", lambda recipe, out, **kw: trained.append((recipe, out))
                        or SimpleNamespace(final_dir=Path(out) / "final"))
    monkeypatch.setattr(embedkit.models, "load_model", lambda m: None)
    monkeypatch.setattr(quality, "eval_split",
                        lambda *a: SimpleNamespace(queries={"q": "a query"}, corpus={"d": "a doc"}, source=""))
    monkeypatch.setattr(quality, "score", lambda model, beir: dict.fromkeys(quality.METRICS, 0.5))
    monkeypatch.setattr(quality, "teacher_rerank", lambda teacher, beir: reranked.append(teacher)
                        or dict.fromkeys(quality.METRICS, 0.25))
    monkeypatch.setattr("embedkit.evaluation.report.write_report", lambda results, out: None)
    out = tmp_path / "out"
    assert quality.main(["--quick", "--skip-anchor", "--skip-embedkit", "--distill-ablate", "--teacher-steps", "7",
                         "-o", str(out)]) == 0
    setups = json.loads((out / "quality.json").read_text())["arms"]
    scores = json.loads((out / "quality.json").read_text())["scores"]
    assert len(trained) == 1 + len(quality.DISTILL_ABLATIONS)
    first_recipe, first_out = trained[0]
    teacher = first_out / "teacher"
    assert first_recipe.teacher.steps == 7 and first_recipe.teacher.path is None  # trained in-house
    assert reranked == [teacher]  # the teacher's own score is its rerank, on the held-out split
    (teacher_row,) = [n for n in scores if n.startswith("teacher:")]
    assert scores[teacher_row]["ndcg@10"] == 0.25
    for recipe, _ in trained[1:]:  # every ablation reuses that teacher instead of training another
        assert recipe.teacher.path == str(teacher)
    distill_setups = [s for s in setups.values() if s["recipe"] == quality.DISTILL_RECIPE and s["uses"] == "the recipe"]
    assert len(distill_setups) == len(trained)
    for (recipe, _), setup in zip(trained, distill_setups):
        assert {o.split("=", 1)[0] for o in setup["overrides"]} <= BUDGET | DISTILL_SWITCHES, setup
        assert recipe.model_dump() == load_recipe(nudged_recipes / setup["recipe"], sets=setup["overrides"]).model_dump()
    # each ablation changes what its name says, and nothing else of the first arm
    for (recipe, _), change in zip(trained[1:], quality.DISTILL_ABLATIONS.values()):
        a, b = recipe.model_dump(), first_recipe.model_dump()
        for key in change:
            section, _, rest = key.partition(".")
            a[section].pop(rest.split(".")[0], None) if rest else a.pop(section)
            b[section].pop(rest.split(".")[0], None) if rest else b.pop(section)
        a["teacher"].pop("path"), b["teacher"].pop("path")
        assert a == b


def test_the_table_reports_both_anchors_and_the_time_ratio(quality) -> None:
    rows = {quality.BASE: {"ndcg@10": 0.70, "recall@10": 0.8, "mrr@10": 0.6},
            f"{quality.ANCHOR} (batch 64)": {"ndcg@10": 0.75, "recall@10": 0.8, "mrr@10": 0.6, "train_s": 100.0},
            f"{quality.ANCHOR_MINED} (batch 64)": {"ndcg@10": 0.77, "recall@10": 0.8, "mrr@10": 0.6, "train_s": 150.0},
            quality.DISTILL: {"ndcg@10": 0.80, "recall@10": 0.9, "mrr@10": 0.7, "train_s": 400.0}}
    text = quality.table(rows, quality.BASE, f"{quality.ANCHOR} (batch 64)", f"{quality.ANCHOR_MINED} (batch 64)")
    line = next(l for l in text.splitlines() if l.startswith(f"| {quality.DISTILL} |"))  # noqa: E741
    assert "| +10.00 | +5.00 | +3.00 | 400 | 4.00 |" in line


def test_the_batch_ablations_change_one_thing_each_and_dims_score_truncated_models(quality, tmp_path: Path,
                                                                                  monkeypatch) -> None:
    from types import SimpleNamespace

    import embedkit.models
    import embedkit.training.runner

    trained: list[Recipe] = []

    class Model:
        truncate_dim = None

    monkeypatch.setattr(embedkit.training.runner, "run_recipe", lambda recipe, out, **kw: trained.append(recipe)
                        or SimpleNamespace(final_dir=Path(out) / "final"))
    monkeypatch.setattr(embedkit.models, "load_model", lambda m: Model())
    monkeypatch.setattr(quality, "eval_split",
                        lambda *a: SimpleNamespace(queries={"q": "a query"}, corpus={"d": "a doc"}, source=""))
    monkeypatch.setattr(quality, "score", lambda model, beir: dict.fromkeys(quality.METRICS, 1.0))
    curves: list[list[int]] = []
    monkeypatch.setattr(quality, "score_at_dims", lambda model, beir, dims: curves.append(dims) or (
        dict.fromkeys(quality.METRICS, 1.0), {d: dict.fromkeys(quality.METRICS, 1.0 / d) for d in dims}))
    monkeypatch.setattr("embedkit.evaluation.report.write_report", lambda results, out: None)
    out = tmp_path / "out"
    assert quality.main(["--quick", "--skip-anchor", "--ablate-batches", "--dims", "128,64", "-o", str(out)]) == 0
    default, *ablations = trained
    assert len(ablations) == len(quality.BATCH_ABLATIONS)
    for recipe, change in zip(ablations, quality.BATCH_ABLATIONS.values()):
        a_full, b_full = recipe.model_dump(), default.model_dump()
        assert a_full != b_full
        for key in change:  # everything but the changed key is the default arm's
            *head, last = key.split(".")
            a, b = a_full, b_full
            for part in head:
                a, b = a[part], b[part]
            a.pop(last), b.pop(last)
        assert a_full == b_full
    scores = json.loads((out / "quality.json").read_text())["scores"]
    for name in (quality.BASE, next(n for n in scores if n.startswith(quality.EMBEDKIT + " ("))):
        assert scores[f"{name} @128"]["ndcg@10"] == pytest.approx(1 / 128)  # one curve per such arm
        assert scores[f"{name} @64"]["ndcg@10"] == pytest.approx(1 / 64) and scores[name]["ndcg@10"] == 1.0
    assert any("Matryoshka" in n and n.endswith("@64") for n in scores)
    assert curves == [[128, 64]] * 3  # base, the default recipe and the Matryoshka arm; no other arm is truncated


def test_combine_merges_batch_ablations_into_one_arm_and_rejects_unknown_keys(quality, capsys) -> None:
    name, change = quality.combined_batches("b3, refresh,matryoshka", steps=60)
    assert name == "embedkit combined: b3 + refresh + matryoshka"
    assert change == {"data.batching": "b3", "miner.refresh_every_steps": 20,
                      "losses.matryoshka": {"dims": quality.MATRYOSHKA_DIMS}}
    assert set(quality.BATCH_KEYS.values()) == set(quality.BATCH_ABLATIONS)  # every entry has a short key
    with pytest.raises(SystemExit) as err:
        quality.parse_args(["--combine", "b3,mixing"])
    assert err.value.code == 2
    assert "--combine: unknown key(s) mixing; choose from b3, refresh, matryoshka, spread-out, hardness" in \
        capsys.readouterr().err
