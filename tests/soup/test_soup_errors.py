"""Every refusal of `embedkit soup`: one line naming the first difference, exit code 2, no output left behind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from soup_helpers import edit_json, perturbed_copy

from embedkit.cli import main
from embedkit.errors import ConfigError
from embedkit.soup import soup


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["soup", *args])
    return rc, capsys.readouterr().err.strip()


def _assert_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], *needles: str) -> str:
    out = tmp_path / "out"
    rc, err = _run(capsys, [*args, "-o", str(out)])
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("embedkit: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary sibling either
    return err


def _rewrite(folder: Path, fn: Callable[[dict], dict], rel: str = "model.safetensors") -> None:
    state = load_file(folder / rel)
    save_file(fn(state), folder / rel, metadata={"format": "pt"})


Mutation = Callable[[Path], None]


def _rename_tensor(d: Path) -> None:
    def fn(s: dict) -> dict:
        s["encoder.layer.0.output.dense.weight_renamed"] = s.pop("encoder.layer.0.output.dense.weight")
        return s

    _rewrite(d, fn)


def _reshape_tensor(d: Path) -> None:
    def fn(s: dict) -> dict:
        s["encoder.layer.1.intermediate.dense.bias"] = s["encoder.layer.1.intermediate.dense.bias"][:48].clone()
        return s

    _rewrite(d, fn)


def _change_vocab(d: Path) -> None:
    tok = json.loads((d / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["zzzsoupzzz"] = vocab.pop("hello")
    (d / "tokenizer.json").write_text(json.dumps(tok))


def _pickle_only(d: Path) -> None:
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not loaded: embedkit never unpickles")


def _legacy_pickle_transformer(d: Path) -> None:
    """The old sentence-transformers layout: the Transformer in 0_Transformer/, its weights only as a pickle."""
    import torch

    sub = d / "0_Transformer"
    sub.mkdir()
    for name in [p.name for p in d.iterdir() if p.is_file() and p.name not in ("modules.json", "README.md")]:
        shutil.move(str(d / name), str(sub / name))
    state = load_file(sub / "model.safetensors")
    (sub / "model.safetensors").unlink()
    torch.save(state, sub / "pytorch_model.bin")
    mods = json.loads((d / "modules.json").read_text())
    mods[0]["path"] = "0_Transformer"
    (d / "modules.json").write_text(json.dumps(mods))


def _drop_normalize(d: Path) -> None:
    mods = json.loads((d / "modules.json").read_text())
    (d / "modules.json").write_text(json.dumps(mods[:2]))


MISMATCHES: dict[str, tuple[Mutation, tuple[str, ...]]] = {
    "architecture": (lambda d: edit_json(d / "config.json", architectures=["BertForMaskedLM"]),
                     ("architecture differs", "'architectures'", "BertForMaskedLM")),
    "model_type": (lambda d: edit_json(d / "config.json", model_type="roberta"),
                   ("architecture differs", "'model_type'", "roberta")),
    "tensor_name": (_rename_tensor, ("parameter names differ", "encoder.layer.0.output.dense.weight")),
    "tensor_shape": (_reshape_tensor, ("parameter shapes differ", "encoder.layer.1.intermediate.dense.bias",
                                       "[48]", "[64]")),
    "tokenizer": (_change_vocab, ("tokenizer differs", "tokenizer.json")),
    "pooling_config": (lambda d: edit_json(d / "1_Pooling" / "config.json", pooling_mode="cls"),
                       ("pooling config differs", "1_Pooling/config.json", "'pooling_mode' is 'cls', not 'mean'")),
    "pooling_modules": (_drop_normalize, ("pooling/pipeline differs", "module 2", "Normalize")),
    "missing_weights": (lambda d: (d / "model.safetensors").unlink(), ("missing weights file", "model.safetensors")),
    "pickle_only": (_pickle_only, ("pytorch_model.bin", "pickle", "never unpickles")),
    # the one pickle check load_model makes: per module folder, with the conversion command
    "pickle_legacy_layout": (_legacy_pickle_transformer, ("0_Transformer/pytorch_model.bin", "never unpickles",
                                                          "save_file(", "weights_only=True")),
    # shape-determining config keys, even where the weights files happen to agree
    "hidden_size": (lambda d: edit_json(d / "config.json", hidden_size=16),
                    ("shape-determining config", "'hidden_size' is 16", "not 32")),
    "num_hidden_layers": (lambda d: edit_json(d / "config.json", num_hidden_layers=1),
                          ("shape-determining config", "'num_hidden_layers' is 1", "not 2")),
    "intermediate_size": (lambda d: edit_json(d / "config.json", intermediate_size=48),
                          ("shape-determining config", "'intermediate_size' is 48", "not 64")),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_mismatched_member_is_refused(case: str, st_tiny: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    mutate, needles = MISMATCHES[case]
    good = perturbed_copy(st_tiny, tmp_path / "good", seed=1)
    bad = Path(shutil.copytree(st_tiny, tmp_path / "bad"))
    mutate(bad)
    err = _assert_refused(capsys, tmp_path, [str(good), str(bad)], *needles)
    assert str(bad) in err  # the message names the offending member


def test_mismatched_base_is_refused(st_tiny: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = Path(shutil.copytree(st_tiny, tmp_path / "base"))
    _reshape_tensor(base)
    _assert_refused(capsys, tmp_path, [st_tiny, st_tiny, "--base", str(base), "--base-weight", "0.2"],
                    "parameter shapes differ", str(base))


def test_latent_vs_mean_pooling_is_refused(st_tiny: str, st_latent: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _assert_refused(capsys, tmp_path, [st_tiny, st_latent], "pooling/pipeline differs", "LatentAttentionPooling")


def test_latent_sizes_differ_is_refused(st_latent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = Path(shutil.copytree(st_latent, tmp_path / "bad"))
    (bad / "1_LatentAttentionPooling" / "model.safetensors").unlink()
    _assert_refused(capsys, tmp_path, [st_latent, str(bad)], "missing weights file",
                    "1_LatentAttentionPooling/model.safetensors")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--method", "weighted", "--weights", "1", "-1"], ("weights:", "weight 2 is -1.0", "finite and >= 0")),
        (["--method", "weighted", "--weights", "0", "0"], ("weights:", "weights sum to 0",)),
        (["--method", "weighted", "--weights", "1"], ("got 1 weights for 2 checkpoints",)),
        (["--method", "weighted"], ("method 'weighted' needs weights",)),
        (["--weights", "1", "2"], ("weights only apply to method 'weighted'",)),
        (["--method", "greedy"], ("--eval:", "greedy soup needs a held-out set")),
        (["--method", "greedy", "--eval", "NOWHERE", "--metric", "map@10"], ("--metric:", "unknown metric 'map@10'")),
        (["--method", "greedy", "--eval", "NOWHERE"], ("no-beir", "does not exist")),
        (["--base-weight", "0.5"], ("base_weight given without a base model",)),
        (["--base", "BASE"], ("a base model needs base_weight",)),
        (["--base", "BASE", "--base-weight", "1.0"], ("base_weight must be in [0, 1)",)),
    ],
)
def test_bad_options_are_refused(args: list[str], needles: tuple[str, ...], st_tiny: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("BASE", st_tiny).replace("NOWHERE", str(tmp_path / "no-beir")) for a in args]
    _assert_refused(capsys, tmp_path, [st_tiny, st_tiny, *args], *needles)


def test_missing_checkpoint_and_non_model_folder(st_tiny: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _assert_refused(capsys, tmp_path, [st_tiny, str(tmp_path / "nope")], "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_refused(capsys, tmp_path, [st_tiny, str(empty)], "is not a model folder")


def test_existing_output_needs_overwrite(st_tiny: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    rc, err = _run(capsys, [st_tiny, "-o", str(out)])
    assert rc == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "old"
    rc, err = _run(capsys, [st_tiny, "-o", str(out), "--overwrite"])
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert "wrote a uniform soup of 1/1 checkpoint(s)" in err


def test_failure_during_writing_leaves_nothing(st_tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error half-way through the averaging (here: a corrupt tensor file) leaves no output folder."""
    import embedkit.soup.merge as merge

    calls = {"n": 0}
    real = merge._read_block

    def flaky(path, name, rows):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 20:
            raise ConfigError("simulated failure", where="test")
        return real(path, name, rows)

    monkeypatch.setattr(merge, "_read_block", flaky)
    with pytest.raises(ConfigError):
        soup([st_tiny, st_tiny], output=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_python_api_raises_typed_errors(st_tiny: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        soup([st_tiny], method="average", output=tmp_path / "out")  # type: ignore[arg-type]
    assert str(exc.value) == "method: unknown soup method 'average' (fix: use uniform, weighted or greedy)"


def test_adapter_runs_with_pickle_adapters_are_refused(st_tiny: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A run saved with merge_on_save: false whose adapter/ holds only adapter_model.bin: refused, not averaged."""
    run = Path(shutil.copytree(st_tiny, tmp_path / "run"))
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": st_tiny, "r": 4, "lora_alpha": 8,
         "target_modules": ["query"]}))
    (run / "adapter" / "adapter_model.bin").write_bytes(b"not loaded")
    _assert_refused(capsys, tmp_path, [str(run), str(run)], "adapter/adapter_model.bin", "never unpickles")
