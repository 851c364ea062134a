"""The ``embedkit mine`` / ``embedkit mntp`` flags are derived from MiningConfig / MNTPConfig: every setting has its
flag, with the model's type, default and help, and a default changed in the model is what ``--help`` shows."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from embedkit.cli import build_parser, main
from embedkit.mining.config import MiningConfig
from embedkit.training.mntp import MNTPConfig
from embedkit.training.teacher import TeacherConfig
from embedkit.validation import model_from_args

#: command -> (settings model, settings with no flag, the arguments a run needs besides the settings)
COMMANDS = {
    "mine": (MiningConfig, (), ["--pairs", "p.jsonl", "-o", "o.jsonl"]),
    "mntp": (MNTPConfig, ("lora.merge_on_save",), ["-o", "out", "--data", "p.jsonl"]),
    "teacher": (TeacherConfig, (), ["--pairs", "p.jsonl", "-o", "out"]),
}


def _sub(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[name]
    parser.format_help()  # the settings' flags are added on first use
    return parser


def _settings(model, exclude, prefix=()):
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        if ".".join(path) in exclude:
            continue
        nested = field.default_factory() if field.default_factory else None
        if nested is not None and hasattr(nested, "model_fields"):
            yield from _settings(type(nested), exclude, path)
        else:
            yield path, field


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_setting_has_its_flag_with_the_models_default(command: str) -> None:
    model, exclude, needed = COMMANDS[command]
    parser = _sub(command)
    by_dest: dict[str, argparse.Action] = {}
    for a in parser._actions:
        by_dest.setdefault(a.dest, a)
    paths = list(_settings(model, exclude))
    assert len(paths) >= 10
    for path, field in paths:
        dest = "_".join(path)
        assert dest in by_dest, f"{command}: no flag for setting {'.'.join(path)}"
        action = by_dest[dest]
        flag = "--" + dest.replace("_", "-")
        assert flag in action.option_strings or f"--no-{dest.replace('_', '-')}" in action.option_strings
        if field.is_required():
            assert action.required, flag
            continue
        default = field.get_default(call_default_factory=True) if len(path) == 1 else None
        if default not in (None, True, False):
            assert f"(default: {default})" in action.help, (flag, action.help)
        if action.choices is not None or field.description:
            assert field.description and field.description.split()[0] in action.help
    # nothing given: the settings are the model's own defaults (the flags restate none of them)
    args = parser.parse_args(needed)
    extra = {"data": "p.jsonl"} if command == "mntp" else {}
    assert model_from_args(model, args, exclude=exclude) == model(**extra)


def test_a_default_changed_in_the_model_is_what_help_shows(monkeypatch, capsys) -> None:
    monkeypatch.setattr(MiningConfig.model_fields["num_negatives"], "default", 11)
    monkeypatch.setattr(MNTPConfig.model_fields["steps"], "default", 321)
    assert main(["mine", "--help"]) == 0
    assert "negatives per query (default: 11)" in " ".join(capsys.readouterr().out.split())
    assert main(["mntp", "--help"]) == 0
    assert "(default: 321)" in capsys.readouterr().out


def test_choices_types_and_none_come_from_the_model() -> None:
    parser = _sub("mine")
    args = parser.parse_args(["--pairs", "p", "-o", "o", "--sampling", "random", "--max-score-ratio", "none",
                              "--use-gpu", "false", "--keep-duplicates", "--nlist", "64"])
    cfg = model_from_args(MiningConfig, args)
    assert (cfg.sampling, cfg.max_score_ratio, cfg.use_gpu, cfg.drop_duplicates, cfg.nlist) == \
        ("random", None, False, False, 64)
    assert model_from_args(MiningConfig, parser.parse_args(["--pairs", "p", "-o", "o", "--no-gpu"])).use_gpu is False
    with pytest.raises(SystemExit):  # argparse refuses a value outside the Literal
        parser.parse_args(["--pairs", "p", "-o", "o", "--index", "annoy"])


@pytest.mark.parametrize(("argv", "expected"), [
    (["mine", "--pairs", "p.jsonl", "--num-negatives", "0"], "--num-negatives: invalid value: must be >= 1 (got 0)"),
    (["mine", "--pairs", "p.jsonl", "--max-score-ratio", "1.5"], "--max-score-ratio: invalid value: must be <= 1"),
    (["mine", "--pairs", "p.jsonl", "--range-min", "9", "--range-max", "9"], "mining: range_min (9) must be smaller"),
    (["mntp", "--data", "p.jsonl", "--lr", "inf"], "--lr: invalid value: must be a finite number (got inf)"),
    (["mntp", "--data", "p.jsonl", "--lora-r", "0"], "--lora-r: invalid value: must be >= 1 (got 0)"),
])
def test_bad_flag_values_are_one_line_errors_naming_the_flag(argv, expected, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out_flag = ["-o", str(out / "o.jsonl")] if argv[0] == "mine" else ["-o", str(out)]
    assert main([*argv, *out_flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("embedkit: error: ") and expected in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv, words", [
    (["mine", "--pairs", "p.jsonl", "-o", "o.jsonl", "--sampling", "best"], ("'best'", "top, random")),
    (["teacher", "--pairs", "p.jsonl", "-o", "out", "--loss", "triplet"], ("'triplet'", "bce, listnet, lambda")),
])
def test_a_bad_choice_lists_the_allowed_values(argv: list[str], words: tuple[str, ...], capsys) -> None:
    assert main(argv) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert all(w in line for w in words), line
