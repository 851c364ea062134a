"""Recipe validation: one-line ConfigErrors naming key, line and closest valid key; CLI exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from embedkit.cli import main
from embedkit.errors import ConfigError
from embedkit.training.config import load_recipe, parse_recipe, parse_set_option

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
DATA = {"data": {"datasets": [{"path": "pairs.jsonl"}]}}


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def _error(tmp_path: Path, text: str, sets: tuple[str, ...] = ()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_recipe(_write(tmp_path, text), sets=sets)
    msg = str(info.value)
    assert "\n" not in msg
    return info.value


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    stages = recipe.stage_recipes()
    assert stages and all(r.data.datasets or r.synth is not None for _, r in stages)  # synth: pairs generated


def test_the_recipes_are_shipped() -> None:
    assert {p.name for p in RECIPES} >= {"minilm-cpu.yaml", "smollm2-bidirectional-lora.yaml",
                                         "nv-embed-two-stage.yaml", "minilm-distill.yaml", "minilm-synth.yaml"}


def test_misspelled_top_level_key_names_line_and_suggestion(tmp_path: Path) -> None:
    err = _error(tmp_path, "data:\n  datasets: [{path: p.jsonl}]\ntrainig:\n  lr: 1.0e-5\n")
    assert str(err).startswith(f"{tmp_path / 'r.yaml'}:3: unknown key 'trainig.lr' (did you mean 'training.lr'?)")


def test_misspelled_nested_key(tmp_path: Path) -> None:
    err = _error(tmp_path, "data:\n  datasets: [{path: p.jsonl}]\ntraining:\n  batch_sise: 8\n")
    assert "unknown key 'training.batch_sise' (did you mean 'training.batch_size'?)" in str(err)
    assert err.where == f"{tmp_path / 'r.yaml'}:4"


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    err = _error(tmp_path, "data:\n  datasets: [{path: p.jsonl}]\noutput:\n  zzz: 1\n")
    assert "unknown key 'output.zzz'" in str(err) and "did you mean" not in str(err)
    assert "save_steps" in (err.hint or "")


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    err = _error(tmp_path, "data:\n  datasets: [{path: p.jsonl}]\ntraining:\n  lr: fast\n")
    assert "wrong type for 'training.lr': expected a number, got 'fast'" in str(err)
    err = _error(tmp_path, "data:\n  datasets: [{path: p.jsonl, in_batch_negatives: maybe}]\n")
    assert "'data.datasets.0.in_batch_negatives': expected true or false" in str(err)


def test_yaml_syntax_error_points_to_line(tmp_path: Path) -> None:
    err = _error(tmp_path, "data:\n  datasets: [{path: p.jsonl}\ntraining:\n  lr: 1\n")
    assert "invalid YAML" in str(err) and err.where is not None and err.where.startswith(str(tmp_path / "r.yaml:"))


def test_scientific_notation_without_dot_is_a_number() -> None:
    # PyYAML reads `2e-5` as a string (YAML 1.1); users mean a number
    assert parse_recipe({**DATA, "training": {"lr": "2e-5"}}).training.lr == pytest.approx(2e-5)


@pytest.mark.parametrize(
    ("over", "keys"),
    [
        ({"training": {"batch_size": 4, "gradcache_chunk_size": 8}},
         ("training.gradcache_chunk_size", "training.batch_size")),
        ({"data": {"datasets": [{"path": "p", "in_batch_negatives": False, "max_negatives": 0}]}},
         ("data.datasets.0.in_batch_negatives", "data.datasets.0.max_negatives")),
        ({"losses": {"listwise": {}}, "miner": {}}, ("losses.listwise", "miner.teacher")),
        ({"losses": {"margin_mse": {}}, "miner": {}}, ("losses.margin_mse", "miner.teacher")),
        ({"losses": {"infonce": {"teacher_mask_ratio": 0.9}}, "miner": {}},
         ("losses.infonce.teacher_mask_ratio", "miner.teacher")),
        ({"miner": {"teacher_max_score_ratio": 0.9}}, ("miner.teacher_max_score_ratio", "miner.teacher")),
        ({"miner": {"num_candidates": 20}}, ("miner.num_candidates", "miner.teacher")),
        ({"losses": {"listwise": {}}, "teacher": {}}, ("teacher", "miner")),
        ({"losses": {"listwise": {}}, "teacher": {}, "miner": {"teacher": "ce"}}, ("teacher", "miner.teacher")),
        ({"eval": {"every_steps": 10}}, ("eval.every_steps", "eval.beir")),
        ({"training": {"gradcache_chunk_size": 4, "gradient_accumulation_steps": 2}},
         ("training.gradcache_chunk_size", "training.gradient_accumulation_steps")),
        ({"training": {"gradcache_chunk_size": 4, "encode_chunk_size": 4}},
         ("training.encode_chunk_size", "training.gradcache_chunk_size")),
        ({"training": {"batch_size": 8, "encode_chunk_size": 8}},
         ("training.encode_chunk_size", "training.batch_size")),
        ({"training": {"gradcache_chunk_size": 4, "trainer_args": {"deepspeed": "ds.json"}}},
         ("training.gradcache_chunk_size", "training.trainer_args.deepspeed")),
        ({"training": {"gradcache_chunk_size": 4, "trainer_args": {"fsdp": "full_shard"}}},
         ("training.gradcache_chunk_size", "training.trainer_args.fsdp")),
    ],
)
def test_contradictions_name_both_keys(over: dict, keys: tuple[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe({**DATA, **over})
    for key in keys:
        assert key in str(info.value)


def test_no_datasets_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no training data"):
        parse_recipe({})


def test_trainer_args_pass_through_is_checked() -> None:
    assert parse_recipe({**DATA, "training": {"trainer_args": {"optim": "sgd"}}}).training.trainer_args == {
        "optim": "sgd"}
    with pytest.raises(ConfigError, match="did you mean 'training.trainer_args.deepspeed'"):
        parse_recipe({**DATA, "training": {"trainer_args": {"deepsped": "ds.json"}}})
    with pytest.raises(ConfigError, match="set by the recipe itself"):
        parse_recipe({**DATA, "training": {"trainer_args": {"learning_rate": 1.0}}})


def test_set_overrides_are_yaml_scalars_and_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump(DATA))
    r = load_recipe(path, sets=["training.lr=3e-5", "data.datasets.0.weight=2", "model.lora.r=4",
                                "training.gradcache_chunk_size=null"])
    assert r.training.lr == pytest.approx(3e-5) and r.data.datasets[0].weight == 2.0 and r.model.lora.r == 4
    assert r.training.gradcache_chunk_size is None
    err = _error(tmp_path, yaml.safe_dump(DATA), sets=("training.lrr=1",))
    assert err.where == "--set training.lrr" and "did you mean 'training.lr'" in str(err)
    assert parse_set_option("a.b=true") == (["a", "b"], True)
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_option("training.lr")


def test_stages_deep_merge_and_errors_are_prefixed() -> None:
    r = parse_recipe({**DATA, "training": {"lr": 1e-4, "batch_size": 16}, "stages": [
        {"name": "one"},
        {"name": "two", "training": {"lr": 1e-5},
         "data": {"datasets": [{"path": "a"}, {"path": "b", "in_batch_negatives": False}]}},
    ]})
    (n1, r1), (n2, r2) = r.stage_recipes()
    assert (n1, n2) == ("one", "two")
    assert r1.training.lr == 1e-4 and r2.training.lr == 1e-5 and r2.training.batch_size == 16
    assert [d.in_batch_negatives for d in r2.data.datasets] == [True, False]
    with pytest.raises(ConfigError, match=r"stages\.1\.training\.gradcache_chunk_size"):
        parse_recipe({**DATA, "training": {"batch_size": 8},
                      "stages": [{"name": "a"}, {"name": "b", "training": {"gradcache_chunk_size": 64}}]})


def test_nv_embed_recipe_turns_in_batch_negatives_off_for_non_retrieval_in_stage_two() -> None:
    stages = load_recipe(REPO / "recipes" / "nv-embed-two-stage.yaml").stage_recipes()
    assert len(stages) == 2
    assert all(d.in_batch_negatives for d in stages[0][1].data.datasets)
    flags = {d.display_name: d.in_batch_negatives for d in stages[1][1].data.datasets}
    assert flags["retrieval"] is True and False in flags.values()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("trainig:\n  lr: 1.0e-5\n", "unknown key 'trainig.lr' (did you mean 'training.lr'?)"),
        ("training:\n  lr: [1]\n", "wrong type for 'training.lr'"),
        ("training:\n  batch_size: 2\n  gradcache_chunk_size: 4\n", "'training.gradcache_chunk_size' (4)"),
    ],
)
def test_cli_config_errors_exit_2_on_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, needle: str
) -> None:
    recipe = _write(tmp_path, "data:\n  datasets: [{path: p.jsonl}]\n" + extra)
    out = tmp_path / "run"
    code = main(["train", str(recipe), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("embedkit: error: ") and needle in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_cli_missing_data_file_exit_2_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write(tmp_path, f"data:\n  datasets: [{{path: {tmp_path / 'missing.jsonl'}}}]\n")
    code = main(["train", str(recipe), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.jsonl" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_cli_existing_output_needs_resume_or_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text('{"query": "q", "positive": "d"}\n')
    recipe = _write(tmp_path, f"data:\n  datasets: [{{path: {data}}}]\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["train", str(recipe), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["train", str(recipe), "-o", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "x"


# ---- a recipe never trains on its own evaluation data (issue 27, item 3)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_no_shipped_recipe_trains_on_its_eval_folder(path: Path) -> None:
    """Stricter than the check recipes get: no shipped data set is the eval folder at all, whatever the split."""
    import os

    from embedkit.data.samples import resolve_data_path

    for _, r in load_recipe(path).stage_recipes():
        if r.eval.beir is None:
            continue
        held_out = os.path.realpath(resolve_data_path(r.eval.beir))
        assert all(os.path.realpath(d.resolved_path()) != held_out for d in r.data.datasets), path.name


def test_nv_embed_recipe_data_of_every_stage_reads() -> None:
    """The stage-2 blend set reads as the recipe names it (sample:manpages, split test), no fall-back involved."""
    from embedkit.training.runner import load_data

    stages = load_recipe(REPO / "recipes" / "nv-embed-two-stage.yaml").stage_recipes()
    sizes = {}
    for i, (_, r) in enumerate(stages):
        for s in load_data(r, stage_prefix=f"stages.{i}.").stats:
            sizes[s.name] = s.pairs
    assert sizes == {"retrieval": 2000, "manpages": 1006}


def test_training_on_the_eval_source_is_refused() -> None:
    base = {"eval": {"beir": "sample:debian-beir"}}
    # the old nv-embed stage 2, with the split it silently fell back to
    data = {"data": {"datasets": [{"path": "sample:debian-beir", "split": "test"}]}}
    with pytest.raises(ConfigError) as info:
        parse_recipe({**data, **base})
    msg = str(info.value)
    assert "'data.datasets.0.path'" in msg and "'eval.beir'" in msg and "own test set" in msg and "fix:" in msg
    # in a stage, by another spelling of the same folder
    folder = str(Path(__file__).resolve().parents[1] / "embedkit" / "datasets" / "debian" / "beir")
    with pytest.raises(ConfigError, match=r"stages\.1\.data\.datasets\.1\.path"):
        parse_recipe({**DATA, **base, "stages": [
            {"name": "a"},
            {"name": "b", "data": {"datasets": [{"path": "p.jsonl"}, {"path": folder + "/../beir", "split": "test"}]}},
        ]})
    # another split of the eval folder (BEIR folders with train and test qrels) is allowed; eval's own split is not
    assert parse_recipe({**data, "eval": {"beir": "sample:debian-beir", "split": "dev"}})
    with pytest.raises(ConfigError, match="split 'dev'"):
        parse_recipe({"data": {"datasets": [{"path": folder, "split": "dev"}]},
                      "eval": {"beir": "sample:debian-beir", "split": "dev"}})


def test_the_old_nv_embed_stage_two_fails_on_the_missing_train_split() -> None:
    """Without ``split``, the debian test folder as training data is read as the train split, which it lacks."""
    from embedkit.errors import InputError
    from embedkit.training.runner import load_data

    r = parse_recipe({"data": {"datasets": [{"path": "sample:debian-beir", "max_negatives": 0}]}})
    with pytest.raises(InputError) as info:
        load_data(r)
    msg = str(info.value)
    assert "'data.datasets.0.path' (sample:debian-beir)" in msg and "qrels/train.tsv is missing" in msg


# ---- errors after validation name the recipe key and line; --set and non-finite values (issue 27, item 11)


def test_data_errors_name_recipe_key_and_line(tmp_path: Path) -> None:
    from embedkit.errors import InputError
    from embedkit.training.runner import load_data

    good = tmp_path / "good.jsonl"
    good.write_text('{"query": "q", "positive": "d"}\n')
    text = (f"data:\n  datasets:\n    - path: {good}\n    - path: {tmp_path / 'gone.jsonl'}\n"
            f"stages:\n  - name: one\n  - name: two\n    data:\n      datasets:\n        - path: sample:nope\n")
    recipe = load_recipe(_write(tmp_path, text))
    (_, one), (_, two) = recipe.stage_recipes()
    with pytest.raises(InputError) as info:
        load_data(one, stage_prefix="stages.0.")
    assert str(info.value).startswith(f"{tmp_path / 'r.yaml'}:4: 'stages.0.data.datasets.1.path' ")
    assert "gone.jsonl does not exist" in str(info.value)
    with pytest.raises(InputError) as info:
        load_data(two, stage_prefix="stages.1.")
    assert str(info.value).startswith(f"{tmp_path / 'r.yaml'}:10: 'stages.1.data.datasets.0.path' (sample:nope)")
    # an error inside the data keeps the data file's own line
    good.write_text('{"query": "q", "positive": "d"}\n{oops\n')
    with pytest.raises(InputError, match=r"good\.jsonl:2: invalid JSON"):
        load_data(one)
    # from --set, the option is named
    r = load_recipe(_write(tmp_path, text), sets=[f"data.datasets.0.path={tmp_path / 'x.jsonl'}"])
    with pytest.raises(InputError) as info:
        load_data(r)
    assert info.value.where == "--set data.datasets.0.path"


@pytest.mark.parametrize("item", ["training.lr=.inf", "training.lr=.nan", "training.lr=1e999", "training.epochs=.inf",
                                  "data.datasets.0.weight=.inf", "losses.infonce.temperature=.inf",
                                  "training.trainer_args.adam_epsilon=.nan"])
def test_non_finite_numbers_are_refused_everywhere(item: str) -> None:
    key = item.split("=")[0]
    with pytest.raises(ConfigError) as info:
        parse_recipe(DATA, sets=[item])
    assert info.value.where == f"--set {key}"
    assert f"invalid value for '{key}': must be a finite number" in str(info.value)


def test_non_finite_number_in_the_file_names_its_line(tmp_path: Path) -> None:
    err = _error(tmp_path, "data:\n  datasets: [{path: p.jsonl}]\ntraining:\n  batch_size: 4\n  lr: 1e999\n")
    assert err.where == f"{tmp_path / 'r.yaml'}:5" and "'training.lr'" in str(err)


def test_range_errors_say_the_range_and_negative_seed_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'training.seed': must be >= 0 \(got -1\).*fix: set 'training.seed' to a "
                                          r"value >= 0"):
        parse_recipe(DATA, sets=["training.seed=-1"])
    with pytest.raises(ConfigError, match=r"'training.batch_size': must be >= 1 \(got -2\)"):
        parse_recipe(DATA, sets=["training.batch_size=-2"])


def test_set_list_index_errors_give_the_valid_indexes() -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe(DATA, sets=["data.datasets.5.path=x"])
    assert info.value.where == "--set data.datasets.5.path"
    assert "'data.datasets.5' is out of range: the recipe has 1 data set: indexes 0..0" in str(info.value)
    assert "use an index in 0..0" in str(info.value)
    two = {"data": {"datasets": [{"path": "a.jsonl"}, {"path": "b.jsonl"}]}}
    with pytest.raises(ConfigError, match="the recipe has 2 data sets: indexes 0..1"):
        parse_recipe(two, sets=["data.datasets.2=x"])
    with pytest.raises(ConfigError, match="'data.datasets.first' is not an index"):
        parse_recipe(two, sets=["data.datasets.first.path=x"])
    with pytest.raises(ConfigError, match="the recipe has 0 stages.*add the stage"):
        parse_recipe(DATA, sets=["stages.0.name=x"])
    with pytest.raises(ConfigError, match="'training.lr' is a value, not a section"):
        parse_recipe(DATA, sets=["training.lr=1e-5", "training.lr.x=1"])
    assert parse_recipe(two, sets=["data.datasets.1.weight=3"]).data.datasets[1].weight == 3.0


def test_recipes_name_every_bundled_sample_through_the_one_registry() -> None:
    """``sample:manpages`` (a BEIR folder whose only split is test) works as a recipe data set and eval folder;
    every sample name resolves through embedkit.data (SAMPLES), the evaluation API's name included."""
    from embedkit.data import SAMPLES, load_pairs, resolve_data_path, sample_path
    from embedkit.evaluation.samples import manpages_path

    r = parse_recipe({"data": {"datasets": [{"path": "sample:manpages", "split": "test"}]},
                      "eval": {"beir": "sample:debian-beir"}})
    assert r.data.datasets[0].resolved_path() == sample_path("manpages") == manpages_path()
    assert r.data.datasets[0].display_name == "manpages"
    assert len(load_pairs(r.data.datasets[0].resolved_path(), split="test")) > 900
    assert {"debian-train", "debian-beir", "manpages"} <= set(SAMPLES)
    for name in SAMPLES:
        assert resolve_data_path(f"sample:{name}").exists()
    with pytest.raises(ConfigError, match="is the evaluation data"):  # sample names are compared resolved
        parse_recipe({"data": {"datasets": [{"path": "sample:manpages", "split": "test"}]},
                      "eval": {"beir": str(manpages_path())}})
