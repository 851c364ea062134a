"""evaluate() loads every kind of embedkit checkpoint: LoRA adapter folders (on their base), saved decoder LLMs
with latent-attention pooling, and in-memory models -- and scores them exactly like the in-memory model."""

from __future__ import annotations

import json

import pytest
import torch


def test_lora_adapter_folder_loads_on_its_base(tmp_path, tiny_bert, small_beir):
    from embedkit import load_model
    from embedkit.evaluation import evaluate, score_beir
    from embedkit.models import LoraConfig
    from embedkit.models.lora import merge_lora, save_adapter

    model = load_model(tiny_bert, lora=LoraConfig(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(3)
    with torch.no_grad():  # a fresh adapter is the identity (B = 0): give it a real effect
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    save_adapter(model, adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"]  # what load_checkpoint follows
    assert not (adapter / "config.json").exists() and not (adapter / "modules.json").exists()
    merged = score_beir(merge_lora(model), small_beir)["ndcg@10"]
    base = score_beir(load_model(tiny_bert), small_beir)["ndcg@10"]
    assert merged != pytest.approx(base, abs=1e-3)

    res = evaluate([tiny_bert, adapter], beir=[small_beir], labels=["base", "lora"], show_progress_bar=False)
    assert res.score("lora", "mp_small") == pytest.approx(merged, abs=1e-4)
    assert res.score("base", "mp_small") == pytest.approx(base, abs=1e-4)

    # a moved base can be given explicitly
    from embedkit.evaluation.runner import load_checkpoint

    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    from embedkit.errors import ModelError

    with pytest.raises(ModelError, match="base model .* of LoRA adapter"):
        load_checkpoint(adapter)
    again = load_checkpoint(adapter, base_model=tiny_bert)
    assert score_beir(again, small_beir)["ndcg@10"] == pytest.approx(merged, abs=1e-5)


def test_saved_latent_attention_decoder_scores_like_in_memory(tmp_path, tiny_llama, small_beir):
    from embedkit import load_model
    from embedkit.evaluation import evaluate

    model = load_model(tiny_llama, pooling="latent_attention", latent_attention={"num_latents": 16, "num_heads": 2})
    folder = tmp_path / "llama_la"
    model.save(str(folder))
    modules = json.loads((folder / "modules.json").read_text())
    assert any(m["type"].endswith("LatentAttentionPooling") for m in modules)
    res = evaluate([model, folder], beir=[small_beir], output_dir=tmp_path / "out", show_progress_bar=False)
    mem, saved = (c.label for c in res.checkpoints)
    assert res.score(saved, "mp_small") == pytest.approx(res.score(mem, "mp_small"), abs=1e-4)
    files = {res.scores[lab]["mp_small"].result_file for lab in (mem, saved)}
    assert len(files) == 2 and all((tmp_path / "out" / f).is_file() for f in files)
