"""A decoder whose tokenizer has a chat template embeds the raw text on every path.

sentence-transformers >= 6 renders strings through the chat template when the tokenizer has one; embedkit trains on
the raw text, so ``model.encode`` (mteb's path) must embed the same tokens as ``embedkit.encode``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

import embedkit
from embedkit.models import load_model

TEMPLATE = ("{% for m in messages %}[SEP] system prompt of an instruct model [SEP] {{ m['role'] }} "
            "{{ m['content'] }} [SEP]{% endfor %}")
TEXTS = ["ls lists directory contents", "a longer text about packages and files to pad the batch"]


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory: pytest.TempPathFactory, tiny_llama: str) -> str:
    out = tmp_path_factory.mktemp("chat_llama")
    shutil.copytree(tiny_llama, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(out)
    return str(out)


def test_sentence_transformers_alone_would_render_the_template(chat_llama: str) -> None:
    # the premise: without embedkit's pin, sentence-transformers turns strings into chat messages
    from sentence_transformers.base.modules import Transformer

    assert "message" in Transformer(chat_llama).modality_config


@pytest.mark.parametrize("bidirectional,pooling", [(True, "mean"), (False, "last")])
def test_model_encode_matches_embedkit_encode(chat_llama: str, bidirectional: bool, pooling: str,
                                              tmp_path: Path) -> None:
    model = load_model(chat_llama, bidirectional=bidirectional, pooling=pooling)
    ours = embedkit.encode(model, TEXTS)
    np.testing.assert_allclose(model.encode(TEXTS, normalize_embeddings=True), ours, atol=1e-5)

    model.save(str(tmp_path / "saved"))
    saved_cfg = json.loads((tmp_path / "saved" / "sentence_bert_config.json").read_text())
    assert "message" not in saved_cfg.get("modality_config", {})
    for reloaded in (load_model(str(tmp_path / "saved")), SentenceTransformer(str(tmp_path / "saved"))):
        np.testing.assert_allclose(reloaded.encode(TEXTS, normalize_embeddings=True), ours, atol=1e-5)
