"""MNTP (masked next-token prediction): the objective, a real run on the packaged Debian pairs, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from embedkit.errors import ConfigError, InputError, ModelError
from embedkit.training.mntp import MNTPConfig, masked_token_loss, mntp_texts, run_mntp, summary_line


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory, tokenizer_path: str) -> str:
    """A 2-layer random Llama *with* its LM head (MNTP needs one), MiniLM's tokenizer ([MASK] included)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_lm")
    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id)
    lm = LlamaForCausalLM(cfg)
    # a wide LM head: with the default 0.02 init, logits stay near zero whatever LoRA does to the normed hidden
    # states, so the loss could not show learning
    lm.lm_head.weight.data.normal_(0.0, 1.0)
    lm.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _pairs(path: Path, n: int) -> str:
    path.write_text("".join(json.dumps({"query": f"query {i} about topic {i % 7}",
                                        "positive": f"document {i} describes topic {i % 7} in words"}) + "\n"
                            for i in range(n)))
    return str(path)


def test_mntp_texts_are_distinct_and_the_held_out_ones_are_not_trained_on(tmp_path: Path) -> None:
    data = _pairs(tmp_path / "p.jsonl", 50)
    train, held = mntp_texts(data, eval_texts=8, seed=1)
    assert len(held) == 8 and not set(train) & set(held)
    assert len(train) + len(held) == len(set(train) | set(held)) == 100  # 50 queries + 50 documents, once each
    # never more than a tenth held out, whatever was asked
    assert len(mntp_texts(data, eval_texts=1000, seed=1)[1]) == 10


def test_the_objective_predicts_each_masked_token_from_the_position_before_it(tiny_lm: str) -> None:
    """transformers' causal-LM loss on MNTP labels == cross-entropy of logits[i - 1] against the token masked at i."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm)
    lm.config.is_causal = False
    texts = ["the kernel image for arm64 machines", "a command line tool to convert documents between formats"]
    enc = tok(texts, return_special_tokens_mask=True)
    feats = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "special_tokens_mask")} for i in range(2)]
    batch = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.3, seed=3)(feats)
    masked = batch["labels"] != -100
    original = tok(texts, padding=True, return_tensors="pt")["input_ids"]
    assert masked.any() and torch.equal(batch["labels"][masked], original[masked])  # labels: the hidden tokens
    with torch.no_grad():
        out = lm(**batch)
    rows, cols = torch.nonzero(masked[:, 1:], as_tuple=True)  # masked positions i >= 1, predicted from i - 1
    manual = torch.nn.functional.cross_entropy(out.logits[rows, cols], batch["labels"][rows, cols + 1])
    assert torch.allclose(out.loss, manual, atol=1e-5)


def test_mntp_on_real_pairs_lowers_the_held_out_loss_and_saves_a_bidirectional_model(tiny_lm: str, tmp_path: Path):
    from embedkit.models import load_model

    out = tmp_path / "mntp"
    cfg = MNTPConfig(model=tiny_lm, data="sample:debian-train", steps=20, batch_size=8, lr=1e-2,
                     max_seq_length=24, eval_texts=32, lora={"r": 8, "alpha": 16})
    result = run_mntp(cfg, out)
    assert result.eval_loss_after < result.eval_loss_before - 1.0  # it learned (measured: 23.9 -> 20.1)
    assert result.texts > 4000  # queries and documents of the 4,000 packaged pairs, de-duplicated
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "mntp.json", "tokenizer.json"} <= files
    assert not any(name.startswith("adapter") for name in files)  # LoRA merged, not left as an adapter
    assert json.loads((out / "config.json").read_text())["is_causal"] is False
    assert json.loads((out / "mntp.json").read_text())["config"]["steps"] == 20
    assert f"held-out masked-token loss {result.eval_loss_before:.3f} -> " in summary_line(cfg, result)

    model = load_model(str(out), pooling="mean")  # no 'bidirectional': the saved folder says so
    assert model[0].auto_model.config.is_causal is False
    a, b = model.encode(["openssl library", "openssl tools"], convert_to_tensor=True)
    assert a.shape == (32,) and not torch.allclose(a, b)
    # the saved weights differ from the start (LoRA merged in) in the projections, not in the embeddings
    from safetensors.torch import load_file

    before, after = load_file(str(Path(tiny_lm) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(before[q], after[q])
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])

    # a second round from the adapted folder (how 2 x 1,000 steps were run in BENCHMARKS.md) starts where the first
    # ended: the same held-out texts and masks, scored on the saved weights
    again = run_mntp(cfg.model_copy(update={"model": str(out), "steps": 5}), tmp_path / "mntp2")
    assert again.eval_loss_before == pytest.approx(result.eval_loss_after, rel=1e-4)
    assert again.eval_loss_after < again.eval_loss_before


def test_the_clm_control_predicts_every_next_token_and_stays_causal(tiny_lm: str, tmp_path: Path) -> None:
    """CLM labels every real token; the held-out loss is the mean next-token cross-entropy; the model is causal."""
    from transformers import DataCollatorForLanguageModeling

    from embedkit.training.mntp import _load_lm, _tokenize

    data = _pairs(tmp_path / "p.jsonl", 40)
    lm, tok, _ = _load_lm(MNTPConfig(model=tiny_lm, data=data, objective="clm"))
    assert lm.config.is_causal is True
    texts = ["the kernel image for arm64 machines", "a tool"]  # different lengths: the short one is padded
    feats = _tokenize(tok, texts, 32)
    batch = DataCollatorForLanguageModeling(tok, mlm=False)([dict(f) for f in feats])
    ids, labels = batch["input_ids"], batch["labels"]
    assert torch.equal(labels != -100, batch["attention_mask"].bool())  # every real token, no padding
    with torch.no_grad():
        logits = lm(input_ids=ids, attention_mask=batch["attention_mask"]).logits
    keep = labels[:, 1:] != -100
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][keep], labels[:, 1:][keep])
    assert masked_token_loss(lm, DataCollatorForLanguageModeling(tok, mlm=False), feats, 2) == pytest.approx(
        float(manual), rel=1e-5)
    # causal: changing the last token leaves every earlier position's logits unchanged (MNTP's would all move)
    changed = ids[:1].clone()
    changed[0, -1] = (changed[0, -1] + 1) % len(tok)
    with torch.no_grad():
        again = lm(input_ids=changed).logits
    assert torch.allclose(again[0, :-1], logits[0, :ids.shape[1] - 1], atol=1e-5)


def test_clm_on_real_pairs_lowers_the_held_out_loss_and_saves_a_causal_model(tiny_lm: str, tmp_path: Path) -> None:
    from embedkit.models import load_model

    # start from an MNTP folder (saved bidirectional): the control must still train and save a causal model
    first = MNTPConfig(model=tiny_lm, data="sample:debian-train", steps=2, batch_size=8, max_seq_length=24,
                       eval_texts=0, lora={"r": 4, "alpha": 8})
    mntp = run_mntp(first, tmp_path / "mntp")
    assert summary_line(first, mntp).startswith("MNTP: 2 steps on ") and "loss" not in summary_line(first, mntp)
    assert json.loads((mntp.output_dir / "config.json").read_text())["is_causal"] is False
    out = tmp_path / "clm"
    cfg = MNTPConfig(model=str(mntp.output_dir), data="sample:debian-train", steps=20, batch_size=8, lr=1e-2,
                     max_seq_length=24, eval_texts=32, lora={"r": 8, "alpha": 16}, objective="clm")
    result = run_mntp(cfg, out)
    assert result.eval_loss_after < result.eval_loss_before - 1.0  # it learned the texts
    assert json.loads((out / "config.json").read_text())["is_causal"] is True
    assert json.loads((out / "mntp.json").read_text())["config"]["objective"] == "clm"
    line = summary_line(cfg, result)  # what the CLI and eval/quality.py print
    assert line.startswith("CLM: 20 steps on ") and f"next-token loss {result.eval_loss_before:.3f} -> " in line
    assert "masked" not in line
    model = load_model(str(out), pooling="last")  # no 'bidirectional': the saved folder says causal
    assert model[0].auto_model.config.is_causal is True
    a, b = model.encode(["openssl library", "openssl tools"], convert_to_tensor=True)
    assert a.shape == (32,) and not torch.allclose(a, b)


def test_the_held_out_loss_is_repeatable(tiny_lm: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling

    from embedkit.training.mntp import _tokenize

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm)
    feats = _tokenize(tok, [f"package number {i} provides a library" for i in range(10)], 16)

    def loss() -> float:
        return masked_token_loss(lm, DataCollatorForLanguageModeling(tok, mlm_probability=0.2, seed=7), feats, 4)

    assert loss() == loss()


def test_mntp_refuses_encoders_bad_mask_tokens_small_data_and_existing_output(tiny_bert: str, tiny_lm: str,
                                                                             tmp_path: Path) -> None:
    data = _pairs(tmp_path / "p.jsonl", 40)
    with pytest.raises(ModelError, match="encoder"):
        run_mntp(MNTPConfig(model=tiny_bert, data=data, steps=1, batch_size=4), tmp_path / "a")
    with pytest.raises(InputError, match="fewer than one batch"):
        run_mntp(MNTPConfig(model=tiny_lm, data=data, steps=1, batch_size=512), tmp_path / "b")
    (tmp_path / "c").mkdir()
    with pytest.raises(InputError, match="already exists"):
        run_mntp(MNTPConfig(model=tiny_lm, data=data, steps=1, batch_size=4), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    from transformers import AutoTokenizer

    from embedkit.training.mntp import _mask_token_id

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    assert _mask_token_id(tok, "_", "mask_token") == tok.mask_token_id  # a real mask token wins
    tok.mask_token = None
    assert _mask_token_id(tok, "the", "mask_token") == tok.convert_tokens_to_ids("the")
    tok.mask_token = None
    with pytest.raises(ConfigError, match="not a single token"):
        _mask_token_id(tok, "no-such-token-xyz", "mask_token")


def test_the_config_rejects_bad_values_before_anything_loads() -> None:
    from pydantic import ValidationError

    for bad in ({"mask_prob": 0.0}, {"mask_prob": 1.0}, {"steps": 0}, {"dtype": "float8"}, {"max_seq_len": 64},
                {"objective": "mlm"}):
        with pytest.raises(ValidationError):
            MNTPConfig(data="pairs.jsonl", **bad)
    # masking settings mean nothing to the CLM control: refused rather than silently ignored
    for masking in ({"mask_prob": 0.3}, {"mask_token": "_"}):
        with pytest.raises(ValidationError, match="only apply to objective 'mntp'"):
            MNTPConfig(data="pairs.jsonl", objective="clm", **masking)
    assert MNTPConfig(data="pairs.jsonl", objective="clm").objective == "clm"


def test_cli_mntp_reports_bad_input_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from embedkit.cli import main

    assert main(["mntp", "--data", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("embedkit: error:") and "missing.jsonl" in err and len(err.splitlines()) == 1
    assert main(["mntp", "--data", "x.jsonl", "-o", str(tmp_path / "o"), "--mask-prob", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mask-prob" in err and len(err.splitlines()) == 1
    argv = ["mntp", "--data", "x.jsonl", "-o", str(tmp_path / "o"), "--objective", "clm", "--mask-prob", "0.3"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "mask_prob only apply to objective 'mntp'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_the_cli_defaults_are_the_config_defaults() -> None:
    """The CLI and the Python API must run the same (measured) MNTP setting when the user sets nothing."""
    import argparse

    from embedkit.commands import mntp as command
    from embedkit.validation import model_from_args

    sub = argparse.ArgumentParser().add_subparsers()
    command.register(sub)
    args = sub.choices["mntp"].parse_args(["--data", "pairs.jsonl", "-o", "out"])
    config = model_from_args(MNTPConfig, args, exclude=command._NOT_FLAGS)
    assert config == MNTPConfig(data="pairs.jsonl")
    assert config.model_fields_set == {"data"}  # unset flags leave the config's defaults (and clm's check) alone
    args = sub.choices["mntp"].parse_args(["--data", "p.jsonl", "-o", "o", "--lora-r", "4", "--lora-target-modules",
                                           "auto"])
    lora = model_from_args(MNTPConfig, args, exclude=command._NOT_FLAGS).lora
    assert (lora.r, lora.alpha, lora.target_modules) == (4, 32, "auto")
    fields = MNTPConfig.model_fields
    assert (fields["steps"].default, fields["lr"].default) == (1000, 2e-4)  # the best measured (BENCHMARKS.md)
