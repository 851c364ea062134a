"""Each pooling mode equals a hand computation; latent attention saves/loads identically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from embedkit.models import LatentAttentionPooling, Pooling, load_model
from embedkit.models.loading import load_st_folder


@pytest.fixture()
def feats():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    # row 0 right-padded (3 real), row 1 full, row 2 left-padded (2 real)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    return h, m


def _run(pool, h, m, **extra):
    return pool({"token_embeddings": h, "attention_mask": m, **extra})["sentence_embedding"]


def test_mean_equals_hand(feats):
    h, m = feats
    out = _run(Pooling(4, "mean"), h, m)
    expect = torch.stack([h[0, :3].mean(0), h[1].mean(0), h[2, 3:].mean(0)])
    torch.testing.assert_close(out, expect)


def test_cls_and_last_respect_both_padding_sides(feats):
    h, m = feats
    torch.testing.assert_close(_run(Pooling(4, "cls"), h, m), torch.stack([h[0, 0], h[1, 0], h[2, 3]]))
    torch.testing.assert_close(_run(Pooling(4, "last"), h, m), torch.stack([h[0, 2], h[1, 4], h[2, 4]]))


def test_exclude_prompt_counts_from_first_real_token(feats):
    h, m = feats
    out = _run(Pooling(4, "mean", exclude_prompt=True), h, m, prompt_length=1)
    expect = torch.stack([h[0, 1:3].mean(0), h[1, 1:].mean(0), h[2, 4:].mean(0)])
    torch.testing.assert_close(out, expect)
    # a row made only of prompt tokens falls back to all its tokens instead of a zero vector
    out_all = _run(Pooling(4, "mean", exclude_prompt=True), h, m, prompt_length=9)
    torch.testing.assert_close(out_all, _run(Pooling(4, "mean"), h, m))


def test_exclude_prompt_per_row_lengths(feats):
    h, m = feats
    out = _run(Pooling(4, "mean", exclude_prompt=True), h, m, prompt_length=torch.tensor([2, 1, 0]))
    expect = torch.stack([h[0, 2:3].mean(0), h[1, 1:].mean(0), h[2, 3:].mean(0)])
    torch.testing.assert_close(out, expect)


def test_exclude_first_token(feats):
    h, m = feats
    out = _run(Pooling(4, "mean", exclude_first_token=True), h, m)
    expect = torch.stack([h[0, 1:3].mean(0), h[1, 1:].mean(0), h[2, 4:].mean(0)])
    torch.testing.assert_close(out, expect)


def test_latent_attention_equals_hand_computation(feats):
    h, m = feats
    torch.manual_seed(1)
    pool = LatentAttentionPooling(4, num_latents=6, num_heads=2, mlp_ratio=2)
    for p in pool.parameters():  # make every branch non-trivial (out-projections start at zero)
        torch.nn.init.normal_(p, std=0.3)
    out = _run(pool, h, m)

    # hand computation, written independently of the module's code path
    def ln(x, mod):
        return torch.nn.functional.layer_norm(x, (4,), mod.weight, mod.bias, mod.eps)

    q = ln(h, pool.norm_q) @ pool.to_q.weight.T                      # (3,5,4)
    kv = ln(pool.latents, pool.norm_kv) @ pool.to_kv.weight.T         # (6,8)
    k, v = kv[:, :4], kv[:, 4:]
    heads = []
    for hd in range(2):
        sl = slice(2 * hd, 2 * hd + 2)
        att = torch.softmax(q[..., sl] @ k[:, sl].T / np.sqrt(2), dim=-1)
        heads.append(att @ v[:, sl])
    x = h + torch.cat(heads, -1) @ pool.to_out.weight.T + pool.to_out.bias
    a_g = ln(x, pool.norm_mlp) @ pool.mlp_in.weight.T + pool.mlp_in.bias
    a, g = a_g[..., :8], a_g[..., 8:]
    x = x + (a * torch.nn.functional.gelu(g)) @ pool.mlp_out.weight.T + pool.mlp_out.bias
    keep = m.bool().unsqueeze(-1)
    expect = (x * keep).sum(1) / keep.sum(1)
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)


def test_fresh_latent_attention_equals_mean_pooling(feats):
    """Zero-initialised residual branches: fine-tuning starts from the base model's embedding space."""
    h, m = feats
    torch.testing.assert_close(_run(LatentAttentionPooling(4, num_latents=8, num_heads=2), h, m),
                               _run(Pooling(4, "mean"), h, m))


def test_latent_attention_save_load_identical(tmp_path, tiny_llama):
    model = load_model(tiny_llama, pooling="latent_attention",
                       latent_attention={"num_latents": 16, "num_heads": 4, "mlp_ratio": 2})
    with torch.no_grad():
        for p in model[1].parameters():
            p.add_(torch.randn_like(p) * 0.1)
    texts = ["bidirectional decoders pool well", "latent attention from NV-Embed"]
    before = model.encode(texts)
    model.save(str(tmp_path / "la"))
    for loaded in (load_model(str(tmp_path / "la")), load_st_folder(tmp_path / "la"),
                   SentenceTransformer(str(tmp_path / "la"), trust_remote_code=True)):
        assert isinstance(loaded[1], LatentAttentionPooling)
        np.testing.assert_array_equal(loaded.encode(texts), before)
    assert not list(tmp_path.rglob("*.bin")), "weights must be safetensors only"


def test_default_pooling_saves_as_plain_sentence_transformers(tmp_path, tiny_bert):
    model = load_model(tiny_bert, pooling="cls")
    model.save(str(tmp_path / "m"))
    plain = SentenceTransformer(str(tmp_path / "m"))  # no trust_remote_code needed
    np.testing.assert_allclose(plain.encode(["a b c", "d"]), model.encode(["a b c", "d"]), atol=1e-6)


def test_embedkit_pooling_folder_loads_through_embedkit_not_plain_sentence_transformers(tmp_path, tiny_bert):
    """What the module docstring promises: a folder naming embedkit's pooling class loads with ``load_model`` /
    ``load_st_folder`` without ``trust_remote_code``; plain sentence-transformers 6 refuses it unless trusted."""
    model = load_model(tiny_bert, pooling="mean", exclude_first_token=True)
    assert isinstance(model[1], Pooling)
    model.save(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tmp_path / "m"))
    texts = ["a b c", "d"]
    for loaded in (load_model(str(tmp_path / "m")), load_st_folder(tmp_path / "m")):
        assert isinstance(loaded[1], Pooling)
        np.testing.assert_allclose(loaded.encode(texts), model.encode(texts), atol=1e-6)


def test_half_precision_mean_accumulates_in_float32_like_sentence_transformers():
    """embedkit's mean equals sentence-transformers' for bf16 token embeddings (both sum in float32), so
    :func:`enable_per_row_prompt_lengths` does not change half-precision embeddings."""
    from sentence_transformers.sentence_transformer.modules import Pooling as STPooling

    torch.manual_seed(0)
    h = (torch.randn(2, 300, 8) * 4 + 3).to(torch.bfloat16)
    m = torch.ones(2, 300, dtype=torch.long)
    m[1, 200:] = 0
    feats = {"token_embeddings": h, "attention_mask": m, "prompt_length": 5}
    ours = Pooling(8, "mean", exclude_prompt=True)(dict(feats))["sentence_embedding"]
    theirs = STPooling(8, pooling_mode="mean", include_prompt=False)(dict(feats))["sentence_embedding"]
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
