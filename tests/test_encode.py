"""embedkit.encode: equals sentence-transformers on real texts, batching is complete, errors are one line."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from embedkit import encode, load_model, similarity
from embedkit.encode import plan_batches
from embedkit.errors import InputError


def _real_texts(n: int = 300) -> list[str]:
    """Real English paragraphs from the machine's licence texts (always present on Debian)."""
    texts: list[str] = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="ignore") as f:
                texts += [" ".join(p.split()) for p in f.read().split("\n\n") if len(p.split()) > 3]
    assert len(texts) >= 50
    return texts[:n]


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


def test_encode_equals_sentence_transformers(minilm, minilm_path):
    texts = _real_texts()
    ours = encode(minilm, texts, batch_size=16)
    ref = SentenceTransformer(minilm_path).encode(texts, batch_size=16)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.9999
    assert ours.dtype == np.float32 and ours.shape == ref.shape


def test_roles_use_model_prompts(minilm_path):
    model = load_model(minilm_path, prompts={"style": "e5"})
    q = encode(model, ["list files"], role="query")
    explicit = encode(model, ["query: list files"])
    np.testing.assert_allclose(q, explicit, atol=1e-6)
    d = encode(model, ["list files"], role="document")
    assert np.abs(q - d).max() > 1e-3


def test_output_torch_and_normalize(minilm):
    t = encode(minilm, ["a", "b c"], output="torch", normalize=True)
    assert isinstance(t, torch.Tensor)
    torch.testing.assert_close(t.norm(dim=1), torch.ones(2))
    s = similarity(t, t)
    np.testing.assert_allclose(np.diag(s), 1.0, atol=1e-5)


def test_plan_batches_covers_every_index_and_respects_budget():
    lengths = [5, 100, 7, 3, 50, 50, 2, 9, 64, 1]
    batches = plan_batches(lengths, batch_size=4, max_tokens=128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 128 or len(b) == 1
    assert max(len(b) for b in batches) > 4  # short texts share a bigger batch than the nominal size
    fixed = plan_batches(lengths, batch_size=4, max_tokens=0)
    assert [len(b) for b in fixed] == [4, 4, 2]
    assert sorted(i for b in fixed for i in b) == list(range(len(lengths)))


def test_empty_input_error(minilm):
    with pytest.raises(InputError, match="empty input"):
        encode(minilm, [])


def test_non_string_input_error(minilm):
    with pytest.raises(InputError) as err:
        encode(minilm, ["ok", 3])
    assert "texts[1]" in str(err.value) and "\n" not in str(err.value)


def test_bad_role(minilm):
    with pytest.raises(InputError, match="unknown role"):
        encode(minilm, ["x"], role="passage")


def test_encode_honours_truncate_dim_like_sentence_transformers(minilm_path) -> None:
    """A Matryoshka-style ``truncate_dim`` gives the first d dimensions, as ``SentenceTransformer.encode`` does."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    import embedkit

    texts = ["list directory contents", "copy files and directories", "a"]
    model = SentenceTransformer(minilm_path, device="cpu")
    full = np.asarray(embedkit.encode(model, texts))
    model.truncate_dim = 128
    cut = np.asarray(embedkit.encode(model, texts))
    assert cut.shape == (3, 128) and np.allclose(cut, full[:, :128], atol=1e-6)
    assert np.allclose(cut, model.encode(texts), atol=1e-5)
