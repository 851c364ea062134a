"""LoRA adapters through peft: attach, train only the adapter, save/load the adapter, merge into the base.

Souping or distributing a LoRA model? Merge first: averaging A and B matrices separately is not the average of
their products (``merge_lora`` gives back a plain model, max diff ~1e-7).

Example:
    >>> from embedkit.models import load_model, LoraConfig
    >>> model = load_model("minilm", lora=LoraConfig(r=4))           # doctest: +SKIP
    >>> trainable = [n for n, p in model.named_parameters() if p.requires_grad]  # only lora_A / lora_B
"""

from __future__ import annotations

import os
from typing import Any

from sentence_transformers import SentenceTransformer

from embedkit.errors import ModelError
from embedkit.models.config import LoraConfig

# projection names per family; "auto" picks the ones present in the model
_AUTO_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                 "query", "key", "value", "dense"]


def _transformer(model: SentenceTransformer):
    first = model[0]
    if not hasattr(first, "model"):
        raise ModelError("LoRA needs a transformers backbone as the model's first module")
    return first


def lora_target_modules(backbone: Any, cfg: LoraConfig) -> list[str]:
    """The projection names LoRA wraps in ``backbone``: ``cfg.target_modules``, or those of the family for "auto"."""
    if cfg.target_modules != "auto":
        return list(cfg.target_modules)
    names = {n.rsplit(".", 1)[-1] for n, _ in backbone.named_modules()}
    found = [t for t in _AUTO_TARGETS if t in names]
    if not found:
        raise ModelError("no LoRA target modules found automatically", hint="set lora.target_modules explicitly")
    return found


def attach_lora(model: SentenceTransformer, cfg: LoraConfig) -> SentenceTransformer:
    """Wrap the backbone with a peft LoRA adapter; only adapter weights stay trainable (pooling weights too)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    tr = _transformer(model)
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=lora_target_modules(tr.model, cfg),
        task_type="FEATURE_EXTRACTION",
    )
    tr.model = get_peft_model(tr.model, peft_cfg)
    return model


def has_lora(model: SentenceTransformer) -> bool:
    from peft import PeftModel

    return isinstance(getattr(model[0], "model", None), PeftModel)


def merge_lora(model: SentenceTransformer) -> SentenceTransformer:
    """Fold the adapter into the base weights (in place) and return the model as a plain transformers model."""
    if has_lora(model):
        tr = _transformer(model)
        tr.model = tr.model.merge_and_unload()
    return model


def save_adapter(model: SentenceTransformer, path: str | os.PathLike) -> None:
    """Write only the adapter (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    if not has_lora(model):
        raise ModelError("the model has no LoRA adapter to save")
    _transformer(model).model.save_pretrained(str(path), safe_serialization=True)


def load_adapter(model: SentenceTransformer, path: str | os.PathLike, *, trainable: bool = False) -> SentenceTransformer:
    """Attach a saved adapter to ``model``'s backbone (the same base it was trained on)."""
    from peft import PeftModel

    if not os.path.exists(os.path.join(str(path), "adapter_config.json")):
        raise ModelError(f"{path} has no adapter_config.json", hint="pass a folder written by save_adapter")
    tr = _transformer(model)
    tr.model = PeftModel.from_pretrained(tr.model, str(path), is_trainable=trainable)
    return model
