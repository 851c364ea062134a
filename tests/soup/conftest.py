"""Fixtures for the soup tests: tiny sentence-transformers checkpoints, perturbed copies, LoRA adapters."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def st_tiny(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> str:
    """A sentence-transformers folder: tiny BERT -> mean pooling -> Normalize."""
    from embedkit import load_model

    out = tmp_path_factory.mktemp("st_tiny") / "model"
    load_model(tiny_bert).save(str(out))
    return str(out)


@pytest.fixture(scope="session")
def st_latent(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> str:
    """A sentence-transformers folder with embedkit's latent-attention pooling (its own model.safetensors)."""
    from embedkit import load_model

    out = tmp_path_factory.mktemp("st_latent") / "model"
    torch.manual_seed(1)
    load_model(tiny_bert, pooling="latent_attention", latent_attention={"num_latents": 8, "num_heads": 4}).save(str(out))
    return str(out)
