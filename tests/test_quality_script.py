"""``eval/quality.py`` (the README demo and the quality benchmark) trains what ``recipes/minilm-cpu.yaml`` ships.

The benchmark's claim is about "the recipe a user gets by default"; this keeps the two from drifting apart, and
checks the control/ablation switches change exactly what they say.
"""

from __future__ import annotations

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


def _benchmark_recipe(quality, tmp_path: Path, argv: list[str], **change) -> Recipe:
    args = quality.parse_args(argv)
    return Recipe.model_validate(quality.embedkit_recipe(args, tmp_path / "train.jsonl", tmp_path, **change))


def test_default_benchmark_recipe_is_the_shipped_minilm_recipe(quality, tmp_path: Path) -> None:
    ours = _benchmark_recipe(quality, tmp_path, [])
    shipped = load_recipe(REPO / "recipes" / "minilm-cpu.yaml")
    assert ours.model.name == shipped.model.name and ours.model.max_seq_length == shipped.model.max_seq_length
    assert ours.losses == shipped.losses
    keys = ("batch_size", "gradcache_chunk_size", "lr", "max_steps", "warmup_ratio", "weight_decay", "seed")
    assert {k: getattr(ours.training, k) for k in keys} == {k: getattr(shipped.training, k) for k in keys}
    skip = {"cache_dir"}
    assert ours.miner.model_dump(exclude=skip) == shipped.miner.model_dump(exclude=skip)
    assert ours.data.datasets[0].max_negatives == shipped.data.datasets[0].max_negatives == 1
    assert ours.losses.infonce.mixing is None  # off by default: it hurt in the ablation


def test_ablation_switches_change_one_thing(quality, tmp_path: Path) -> None:
    base = _benchmark_recipe(quality, tmp_path, [])
    no_neg = _benchmark_recipe(quality, tmp_path, [], negatives=False)
    assert no_neg.miner is None and no_neg.data.datasets[0].max_negatives == 0 and no_neg.losses == base.losses
    mixed = _benchmark_recipe(quality, tmp_path, [], mixing=quality.MIXING)
    assert mixed.losses.infonce.mixing.num_mixed == 8 and not mixed.losses.infonce.mixing.mix_query
    assert mixed.training == base.training
    plain = _benchmark_recipe(quality, tmp_path, [], **quality.ABLATIONS[
        "plain in-batch InfoNCE (no mined negatives, masking, mixing or GradCache)"])
    assert plain.training.gradcache_chunk_size is None and plain.losses.infonce.masking is None
    # --quick: smaller batch, GradCache doubles it; --gradcache-factor 1 with a chunk >= batch turns GradCache off
    quick = _benchmark_recipe(quality, tmp_path, ["--quick"])
    assert (quick.training.batch_size, quick.training.gradcache_chunk_size, quick.training.max_steps) == (32, 16, 30)
    off = _benchmark_recipe(quality, tmp_path, ["--gradcache-factor", "1"])
    assert off.training.batch_size == 32 and off.training.gradcache_chunk_size is None


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
    assert kd.losses.infonce == base.losses.infonce and kd.training == base.training
    with pytest.raises(SystemExit, match="needs mined negatives"):
        _benchmark_recipe(quality, tmp_path, [], teacher=tmp_path / "mpnet", negatives=False)


def test_decoder_arms_differ_only_in_attention_and_pooling_and_masking_can_be_switched_off(quality, tmp_path):
    args = quality.parse_args(["--decoder"])
    causal = {"name": "smollm2", "bidirectional": False, "pooling": "last", "lora": {"r": 16, "alpha": 32}}
    bidir = {**causal, "bidirectional": True, "pooling": "mean"}
    a = Recipe.model_validate(quality.decoder_recipe(args, tmp_path / "train.jsonl", tmp_path, causal))
    b = Recipe.model_validate(quality.decoder_recipe(args, tmp_path / "train.jsonl", tmp_path, bidir))
    assert a.miner is None and a.training == b.training and a.losses == b.losses
    assert a.training.lr == args.decoder_lr and a.losses.infonce.masking is not None
    assert (a.model.bidirectional, a.model.pooling, b.model.bidirectional, b.model.pooling) == (
        False, "last", True, "mean")
    off = quality.parse_args(["--decoder", "--decoder-no-masking"])
    c = Recipe.model_validate(quality.decoder_recipe(off, tmp_path / "train.jsonl", tmp_path, bidir))
    assert c.losses.infonce.masking is None and c.training == b.training


def test_decoder_negatives_are_mined_by_minilm_for_every_arm_alike(quality, tmp_path: Path, capsys) -> None:
    args = quality.parse_args(["--decoder", "--decoder-negatives", "3"])
    causal = {"name": "smollm2", "bidirectional": False, "pooling": "last", "lora": {"r": 16, "alpha": 32}}
    bidir = {**causal, "bidirectional": True, "pooling": "mean"}
    a = Recipe.model_validate(quality.decoder_recipe(args, tmp_path / "train.jsonl", tmp_path, causal))
    b = Recipe.model_validate(quality.decoder_recipe(args, tmp_path / "train.jsonl", tmp_path, bidir))
    # mined by base MiniLM, not by the decoder under training, into one cache shared by the arms
    assert a.miner is not None and a.miner.model == "minilm" and a.miner.num_negatives == 3
    assert a.miner == b.miner and a.data == b.data and a.training == b.training and a.losses == b.losses
    assert a.data.datasets[0].max_negatives == 3
    assert a.miner.max_score_ratio == 0.95  # the default recipe's positive-aware filter
    assert a.training.lr == args.decoder_lr  # still the decoder learning rate
    none = Recipe.model_validate(quality.decoder_recipe(quality.parse_args(["--decoder"]), tmp_path / "t.jsonl",
                                                        tmp_path, causal))
    assert none.miner is None and none.data.datasets[0].max_negatives == 0
    with pytest.raises(SystemExit) as exc:
        quality.parse_args(["--decoder", "--decoder-negatives", "-1"])
    assert exc.value.code == 2 and "--decoder-negatives -1" in capsys.readouterr().err


def test_the_shipped_decoder_recipe_trains_as_the_measured_decoder_arms(quality, tmp_path: Path) -> None:
    """A user running the SmolLM2 recipe gets the mining model, filter, temperature, learning rate and batch of the
    measured runs: with its miner left at the default the untrained decoder would mine its own negatives, and at
    batch 64 (the recipe's earlier setting) the same pairs scored 10 points lower (BENCHMARKS.md run P)."""
    args = quality.parse_args(
        ["--decoder", "--decoder-negatives", "3", "--batch-size", "16", "--gradcache-factor", "1"])
    model = {"name": "smollm2", "bidirectional": True, "pooling": "mean", "lora": {"r": 16, "alpha": 32}}
    measured = Recipe.model_validate(quality.decoder_recipe(args, tmp_path / "train.jsonl", tmp_path, model))
    shipped = load_recipe(REPO / "recipes" / "smollm2-bidirectional-lora.yaml")
    assert shipped.miner is not None and measured.miner is not None
    assert shipped.miner.model == measured.miner.model == "minilm"
    assert shipped.miner.num_negatives == measured.miner.num_negatives
    assert shipped.miner.max_score_ratio == measured.miner.max_score_ratio
    assert shipped.losses.infonce.temperature == measured.losses.infonce.temperature
    assert shipped.training.lr == measured.training.lr
    assert shipped.training.batch_size == measured.training.batch_size == 16
    assert shipped.training.gradcache_chunk_size is measured.training.gradcache_chunk_size is None
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

        def arm(name, train, trained=True):  # records the arm without training or loading anything
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
    base = {"name": "smollm2", "max_seq_length": 64, "lora": {"r": 16, "alpha": 32}}
    models = {}
    for key, (_, overrides) in quality.DECODER_ARMS.items():
        cfg = {**base, **overrides}
        objective = cfg.pop("adapt", None)  # the arms with a stage before training
        assert (key in quality.MNTP_ARMS, key in quality.CLM_ARMS) == (objective == "mntp", objective == "clm")
        recipe = quality.decoder_recipe(args, tmp_path / "train.jsonl", tmp_path, cfg)
        models[key] = Recipe.model_validate(recipe).model
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
    recipes: list[dict] = []
    monkeypatch.setattr(quality, "run_embedkit", lambda recipe, out: recipes.append(recipe) or (None, None))
    monkeypatch.setattr(quality, "run_decoder_adaptation", lambda *a: None)

    def run(argv: list[str]) -> list:
        recipes.clear()
        args = quality.parse_args(["--decoder", "--decoder-skip-base", "--decoder-arms",
                                   "causal-last,bidir-mntp-mean", "-o", str(tmp_path), *argv])
        quality.decoder_arms(args, tmp_path / "train.jsonl", [], lambda name, train, trained=True: train() and {})
        return [Recipe.model_validate(r).model for r in recipes]

    shipped = load_recipe(REPO / "recipes" / "smollm2-bidirectional-lora.yaml").model
    with_prompts = run(["--decoder-prompts"])
    assert len(with_prompts) == 2
    for model in with_prompts:  # both sides of the comparison, the same instruction as the recipe a user runs
        assert model.prompts == shipped.prompts and model.exclude_prompt
    assert [m.pooling for m in with_prompts] == ["last", "mean"]  # nothing else changed
    for model in run([]):
        assert model.prompts.style == "none" and not model.exclude_prompt


def test_the_mntp_arm_adapts_the_model_then_trains_the_adapted_folder(quality, tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(quality, "run_decoder_adaptation",
                        lambda args, pairs, out, objective: calls.append((objective, str(out))))
    monkeypatch.setattr(quality, "run_embedkit",
                        lambda recipe, out: calls.append(("train", recipe["model"]["name"])) or (None, None))

    def arm(name, train, trained=True):  # runs the (patched) training, scores nothing
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
    monkeypatch.setattr(quality, "run_decoder_adaptation",
                        lambda args, pairs, out, objective: calls.append((objective, str(out))))
    monkeypatch.setattr(quality, "run_embedkit",
                        lambda recipe, out: calls.append(("train", recipe["model"]["name"])) or (None, None))
    args = quality.parse_args(["--decoder", "--decoder-skip-base", "--decoder-arms", "bidir-mntp-mean",
                               "--decoder-mntp-model", str(adapted), "-o", str(tmp_path / "out")])
    quality.decoder_arms(args, tmp_path / "train.jsonl", [], lambda name, train, trained=True: train() and {})
    assert calls == [("train", str(adapted))]  # trained from the given folder; MNTP not run again
    assert quality.run_settings(args)["decoder_mntp_model"] == str(adapted)  # recorded in quality.json

    calls.clear()
    args = quality.parse_args(["--decoder", "--decoder-skip-base", "--decoder-arms", "causal-clm-last,bidir-mntp-mean",
                               "--decoder-clm-model", str(control), "-o", str(tmp_path / "out2")])
    quality.decoder_arms(args, tmp_path / "train.jsonl", [], lambda name, train, trained=True: train() and {})
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
