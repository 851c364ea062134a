"""LoRA + latent-attention pooling on a (tiny) bidirectional decoder: exact resume, merged and adapter saves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import embedkit
from embedkit.training.config import load_recipe
from embedkit.training.runner import run_recipe
from embedkit.training.trainer import TRAINABLE_STATE, save_pipeline


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = control.should_training_stop or state.global_step == self.step
        return control


def _lora_recipe(write_recipe, tiny_llama: str, **training):
    model = {"name": tiny_llama, "max_seq_length": 32, "pooling": "latent_attention",
             "latent_attention": {"num_latents": 8, "num_heads": 4}, "lora": {"r": 4, "alpha": 8}}
    return load_recipe(write_recipe(model=model, training={"max_steps": 3, **training},
                                    output={"save_steps": 1}))


@pytest.mark.slow
def test_lora_latent_attention_resume_is_exact_and_final_loads(write_recipe, tiny_llama: str,
                                                                tmp_path: Path) -> None:
    recipe = _lora_recipe(write_recipe, tiny_llama)
    full = run_recipe(recipe, tmp_path / "full")
    run_recipe(recipe, tmp_path / "part", callbacks=[StopAt(2)])
    ckpt = tmp_path / "part" / "checkpoints" / "checkpoint-2"
    trainable = load_file(str(ckpt / TRAINABLE_STATE))
    assert any("lora_A" in k for k in trainable) and any("latents" in k for k in trainable)
    # only the adapter and the pooling module (module "1") train: the frozen backbone is not in the checkpoint state
    assert all("lora_" in k or k.startswith("1.") for k in trainable)
    resumed = run_recipe(recipe, tmp_path / "part", resume=True)
    a = load_file(str(full.final_dir / "model.safetensors"))
    b = load_file(str(resumed.final_dir / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    pa = load_file(str(full.final_dir / "1_LatentAttentionPooling" / "model.safetensors"))
    pb = load_file(str(resumed.final_dir / "1_LatentAttentionPooling" / "model.safetensors"))
    assert max(float((pa[k] - pb[k]).abs().max()) for k in pa) <= 1e-6
    assert not any("lora" in k for k in a)  # merged on save: a plain backbone
    model = embedkit.load_model(str(full.final_dir))
    assert type(model[1]).__name__ == "LatentAttentionPooling"
    assert embedkit.encode(model, ["hello world"]).shape == (1, 32)


def test_adapter_save_equals_merged_save(tiny_llama: str, tmp_path: Path) -> None:
    """``merge_lora=False`` (``merge_on_save: false``) keeps the adapter under ``adapter/``; ``load_model`` merges it
    on load, so both saves load as the same trained model (before, the adapter save loaded as the base)."""
    from embedkit.models.lora import has_lora

    model = embedkit.load_model(tiny_llama, pooling="mean", lora={"r": 4, "alpha": 8})
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-trivial adapter
    save_pipeline(model, tmp_path / "merged", merge_lora=True)
    save_pipeline(model, tmp_path / "adapter", merge_lora=False)
    assert (tmp_path / "adapter" / "adapter" / "adapter_config.json").is_file()
    texts = ["list files", "copy a file to another place"]
    merged = embedkit.encode(embedkit.load_model(str(tmp_path / "merged")), texts)
    loaded = embedkit.load_model(str(tmp_path / "adapter"))
    assert not has_lora(loaded)
    with_adapter = embedkit.encode(loaded, texts)
    base = embedkit.encode(embedkit.load_model(tiny_llama, pooling="mean"), texts)
    assert abs(merged - with_adapter).max() < 1e-5
    assert abs(merged - base).max() > 1e-3  # the adapter matters


@pytest.mark.parametrize("bidirectional", [True, False])
def test_training_an_unadapted_bidirectional_decoder_warns_with_the_fix(write_recipe, tiny_llama: str, tmp_path: Path,
                                                                      caplog, bidirectional: bool) -> None:
    model = {"name": tiny_llama, "max_seq_length": 32, "pooling": "mean", "bidirectional": bidirectional}
    recipe = load_recipe(write_recipe(model=model, training={"max_steps": 1}))
    with caplog.at_level("WARNING", logger="embedkit.training.runner"):
        run_recipe(recipe, tmp_path / "out")
    warned = [r.getMessage() for r in caplog.records if "never adapted" in r.getMessage()]
    if bidirectional:
        assert len(warned) == 1 and "embedkit mntp --model" in warned[0] and "bidirectional: false" in warned[0]
    else:
        assert warned == []
    # the trained folder saves its attention direction: training it again does not warn
    caplog.clear()
    final = str(tmp_path / "out" / "final")
    again = load_recipe(write_recipe(name="again.yaml", model={"name": final, "max_seq_length": 32},
                                     training={"max_steps": 1}))
    with caplog.at_level("WARNING", logger="embedkit.training.runner"):
        run_recipe(again, tmp_path / "again")
    assert not [r for r in caplog.records if "never adapted" in r.getMessage()]
