"""LoRA: only adapter weights train; adapter save/load and merge give the same outputs."""

from __future__ import annotations

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from embedkit.models import LoraConfig, load_model
from embedkit.models.lora import has_lora, load_adapter, merge_lora, save_adapter

TEXTS = ["how to list files", "the ls command lists directory contents", "copy files"]


def _perturb_adapter(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)


def test_only_adapter_params_train(tiny_llama):
    model = load_model(tiny_llama, lora=LoraConfig(r=4, alpha=8))
    assert has_lora(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    feats = model.preprocess(TEXTS)
    loss = model(feats)["sentence_embedding"].sum()
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


def test_adapter_save_load_and_merge_equal(tmp_path, tiny_llama):
    model = load_model(tiny_llama, lora=LoraConfig(r=4, alpha=8, dropout=0.0))
    _perturb_adapter(model)
    ref = model.encode(TEXTS)
    save_adapter(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()

    fresh = load_adapter(load_model(tiny_llama), tmp_path / "adapter")
    np.testing.assert_allclose(fresh.encode(TEXTS), ref, atol=1e-6)

    merged = merge_lora(fresh)
    assert not has_lora(merged)
    np.testing.assert_allclose(merged.encode(TEXTS), ref, atol=1e-5)
    # the merged model saves as a plain model and reloads with plain sentence-transformers
    merged.save(str(tmp_path / "merged"))
    plain = SentenceTransformer(str(tmp_path / "merged"))
    np.testing.assert_allclose(plain.encode(TEXTS), ref, atol=1e-5)
    # and the adapter really mattered
    assert np.abs(load_model(tiny_llama).encode(TEXTS) - ref).max() > 1e-4


def test_lora_with_latent_attention_keeps_pooling_trainable(tiny_llama):
    model = load_model(tiny_llama, pooling="latent_attention", latent_attention={"num_latents": 8, "num_heads": 4},
                       lora=LoraConfig(r=2))
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0", "1"}  # LoRA in the backbone, the latent layer in the pooling module
