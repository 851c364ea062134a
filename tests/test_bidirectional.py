"""Bidirectional decoders: the switch really changes attention, padding is handled, unverified archs refuse."""

from __future__ import annotations

import pytest
import torch

from embedkit.errors import ModelError
from embedkit.models import load_model
from tests.conftest import make_tiny_decoder


def _hidden(model, input_ids, attention_mask):
    backbone = model[0].model
    with torch.no_grad():
        return backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral", "gemma"])
def decoder_dir(request, tmp_path_factory, tokenizer_path):
    return make_tiny_decoder(tmp_path_factory.mktemp(request.param), request.param, tokenizer_path)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_position0_sees_last_token_only_when_bidirectional(decoder_dir, attn):
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    changed = ids.clone()
    changed[0, -2] = 7592  # change a late token
    mask = torch.ones_like(ids)
    bi = load_model(decoder_dir, bidirectional=True, attn_implementation=attn, normalize=False)
    causal = load_model(decoder_dir, bidirectional=False, attn_implementation=attn, normalize=False)
    assert bi[0].model.config.is_causal is False
    d_bi = (_hidden(bi, ids, mask)[0, 0] - _hidden(bi, changed, mask)[0, 0]).abs().max()
    d_causal = (_hidden(causal, ids, mask)[0, 0] - _hidden(causal, changed, mask)[0, 0]).abs().max()
    assert d_bi > 1e-4, "bidirectional: position 0 must depend on later tokens"
    assert d_causal < 1e-6, "causal: position 0 must not depend on later tokens"


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padded_batch_equals_single_sequences(decoder_dir, side, attn):
    model = load_model(decoder_dir, bidirectional=True, attn_implementation=attn, normalize=False)
    tok = model.tokenizer
    tok.padding_side = side
    texts = ["a short one", "a considerably longer sentence with many more tokens in it"]
    batch = tok(texts, padding=True, return_tensors="pt")
    hb = _hidden(model, batch["input_ids"], batch["attention_mask"])
    for i, t in enumerate(texts):
        single = tok([t], return_tensors="pt")
        hs = _hidden(model, single["input_ids"], single["attention_mask"])[0]
        m = batch["attention_mask"][i].bool()
        torch.testing.assert_close(hb[i][m], hs, atol=2e-5, rtol=1e-4)
    # and the pooled embeddings agree too (mean pooling, through the whole pipeline)
    emb_batch = model.encode(texts, convert_to_tensor=True)
    emb_single = torch.stack([model.encode([t], convert_to_tensor=True)[0] for t in texts])
    torch.testing.assert_close(emb_batch, emb_single, atol=2e-5, rtol=1e-4)


def test_bidirectional_flag_survives_save(tmp_path, tiny_llama):
    model = load_model(tiny_llama, bidirectional=True)
    model.save(str(tmp_path / "m"))
    again = load_model(str(tmp_path / "m"))
    assert again[0].model.config.is_causal is False
    torch.testing.assert_close(model.encode(["hello there"], convert_to_tensor=True),
                               again.encode(["hello there"], convert_to_tensor=True))


def test_unverified_architecture_is_refused(tmp_path, tokenizer_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    GPT2Model(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path), bidirectional=True)
    msg = str(err.value)
    assert "gpt2" in msg and "not verified" in msg and "\n" not in msg
    # causal use of the same architecture is fine
    assert load_model(str(tmp_path), bidirectional=False).encode(["x"]).shape == (1, 32)


def test_encoder_cannot_be_made_causal(tiny_bert):
    with pytest.raises(ModelError, match="always bidirectional"):
        load_model(tiny_bert, bidirectional=False)


def test_unadapted_bidirectional_is_flagged_only_for_causal_weights_run_bidirectionally(tiny_llama, tiny_bert,
                                                                                          tmp_path):
    import json
    import shutil

    from embedkit.models.config import ModelConfig
    from embedkit.models.loading import runs_unadapted_bidirectional

    assert runs_unadapted_bidirectional(ModelConfig(name=tiny_llama))  # a plain decoder: bidirectional by default
    assert not runs_unadapted_bidirectional(ModelConfig(name=tiny_llama, bidirectional=False))
    assert not runs_unadapted_bidirectional(ModelConfig(name=tiny_bert))  # encoders were trained bidirectional
    adapted = tmp_path / "adapted"  # what embedkit mntp (or a bidirectional training) saves
    shutil.copytree(tiny_llama, adapted)
    cfg = json.loads((adapted / "config.json").read_text())
    (adapted / "config.json").write_text(json.dumps({**cfg, "is_causal": False}))
    assert not runs_unadapted_bidirectional(ModelConfig(name=str(adapted)))
    assert not runs_unadapted_bidirectional(ModelConfig(name=str(adapted), bidirectional=True))
