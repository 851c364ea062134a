"""Helpers shared by the soup tests (checkpoint perturbation, weight loading, LoRA adapters)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def all_weights(folder: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{relative safetensors path: state dict}`` of every weights file in a checkpoint folder."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): load_file(p) for p in sorted(folder.rglob("*.safetensors"))}


def perturbed_copy(src: str | Path, dst: Path, seed: int, scale: float = 0.02) -> Path:
    """Copy a checkpoint and add seeded Gaussian noise to every float tensor of every weights file."""
    shutil.copytree(src, dst)
    gen = torch.Generator().manual_seed(seed)
    for rel, state in all_weights(dst).items():
        noisy = {k: (v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)) if v.is_floating_point() else v
                 for k, v in state.items()}
        save_file(noisy, dst / rel, metadata={"format": "pt"})
    return dst


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def make_adapter(base: str, out: Path, seed: int, *, r: int = 4, alpha: int = 8) -> Path:
    """Save a LoRA adapter (query/value) on ``base`` with seeded random A and B (B is non-zero, unlike at init)."""
    from embedkit import load_model
    from embedkit.models import LoraConfig
    from embedkit.models.lora import save_adapter

    model = load_model(base, lora=LoraConfig(r=r, alpha=alpha, dropout=0.0, target_modules=["query", "value"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    save_adapter(model, out)
    return out
