"""LoRA adapters through peft: attach, train only the adapter, save/load the adapter, merge into the base.

Souping or distributing a LoRA model? Merge first: averaging A and B matrices separately is not the average of
their products (``merge_lora`` gives back a plain model, max diff ~1e-7).

Where adapters live on disk, and who looks for them: :func:`find_adapter` is the *only* place that recognises an
adapter folder -- a bare adapter (``adapter_config.json`` + ``adapter_model.safetensors``, applied to its
``base_model_name_or_path``) or a pipeline saved with ``model.lora.merge_on_save: false`` (the base pipeline plus
``adapter/``, applied to that pipeline). ``load_model`` (hence ``embedkit encode`` / ``eval``) and ``embedkit soup``
all go through it, so a LoRA run never silently loads as its untrained base.

Example:
    >>> from embedkit.models import load_model, LoraConfig
    >>> model = load_model("minilm", lora=LoraConfig(r=4))           # doctest: +SKIP
    >>> trainable = [n for n, p in model.named_parameters() if p.requires_grad]  # only lora_A / lora_B
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
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


#: the adapter's files (peft's names); ``save_adapter`` writes both
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: the sub-folder where ``save_pipeline(merge_lora=False)`` (``merge_on_save: false``) puts the adapter
PIPELINE_ADAPTER_DIR = "adapter"
_MODEL_FILES = ("modules.json", "config.json")


@dataclass(frozen=True)
class AdapterFolder:
    """A LoRA adapter found by :func:`find_adapter`.

    Attributes:
        path: the folder holding ``adapter_config.json`` and ``adapter_model.safetensors``.
        base: the model folder (or embedkit alias) the adapter applies to: the pipeline folder itself for a
            ``FOLDER/adapter/`` layout, else the adapter's ``base_model_name_or_path`` (or the ``base`` override).
        embedded: ``True`` for the ``FOLDER/adapter/`` layout (the base pipeline is the folder around it).
        config: the parsed ``adapter_config.json``.
    """

    path: Path
    base: str
    embedded: bool
    config: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def config_path(self) -> Path:
        return self.path / ADAPTER_CONFIG


def _read_adapter_config(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as exc:
        raise ModelError(f"cannot read the LoRA adapter config ({exc.msg})", where=f"{path}:{exc.lineno}",
                         hint="the adapter folder is corrupt; re-save it (save_adapter, or train again with "
                              "merge_on_save: false)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the LoRA adapter config ({exc})", where=str(path),
                         hint="the adapter folder is corrupt; re-save it") from None
    if not isinstance(cfg, dict):
        raise ModelError("the LoRA adapter config is not a JSON object", where=str(path),
                         hint="the adapter folder is corrupt; re-save it")
    peft_type = str(cfg.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ModelError(f"adapter type {peft_type} is not LoRA", where=str(path),
                         hint="embedkit loads and merges LoRA adapters only")
    return cfg


def _resolve_base(name: str, adapter_dir: Path, where: Path) -> str:
    """An adapter's base: an existing folder (as written, or relative to the adapter), or an embedkit alias."""
    from embedkit.models.folders import ALIASES

    for cand in (Path(name).expanduser(), adapter_dir / name):
        if cand.is_dir():
            return str(cand.resolve())
    if name.lower() in ALIASES:
        return name
    raise ModelError(
        f"cannot load the base model '{name}' of LoRA adapter {adapter_dir}: no such folder on this machine",
        where=str(where),
        hint="edit base_model_name_or_path in adapter_config.json to the local base model folder "
             "(embedkit eval: or pass --base-model)",
    )


def find_adapter(folder: str | os.PathLike, *, base: str | None = None) -> AdapterFolder | None:
    """The LoRA adapter a folder holds, or ``None`` for a plain model folder (or no folder at all).

    The single place embedkit recognises adapters; every loader (``load_model``, the eval runner, soup) asks it.

    * ``FOLDER/adapter_config.json`` with no model files beside it: a bare adapter (``save_adapter``), applied
      to ``base`` if given, else to its ``base_model_name_or_path`` (a folder, absolute or relative to the
      adapter, or an alias such as ``minilm``);
    * ``FOLDER/adapter/adapter_config.json`` inside a model folder: a run saved with ``merge_on_save: false``,
      applied to the pipeline ``FOLDER`` itself (its pooling and other modules included; ``base`` is ignored).

    Raises:
        ModelError: an unreadable ``adapter_config.json``, a non-LoRA adapter, a base that is not on this
            machine, or a folder holding both a model and a top-level adapter (which of them is meant?).

    Example::

        >>> find_adapter("runs/lora/final")                                             # doctest: +SKIP
        AdapterFolder(path=PosixPath('runs/lora/final/adapter'), base='runs/lora/final', embedded=True)
        >>> find_adapter("minilm_folder") is None                                       # doctest: +SKIP
        True
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        return None
    has_model = any((root / f).is_file() for f in _MODEL_FILES)
    if (root / ADAPTER_CONFIG).is_file():
        if has_model:
            raise ModelError(
                f"{root} holds both a model ({' / '.join(f for f in _MODEL_FILES if (root / f).is_file())}) and a "
                "LoRA adapter (adapter_config.json): it is not clear which one to load",
                where=str(root),
                hint=f"move the adapter files into {root / PIPELINE_ADAPTER_DIR} (applied to this model) "
                     "or into a folder of their own",
            )
        cfg = _read_adapter_config(root / ADAPTER_CONFIG)
        name = base or cfg.get("base_model_name_or_path")
        if not name:
            raise ModelError(f"{root} is a LoRA adapter without 'base_model_name_or_path'",
                             where=str(root / ADAPTER_CONFIG),
                             hint="set base_model_name_or_path to the base model folder (embedkit eval: --base-model)")
        return AdapterFolder(root, _resolve_base(str(name), root, root / ADAPTER_CONFIG), False, cfg)
    inner = root / PIPELINE_ADAPTER_DIR
    if has_model and (inner / ADAPTER_CONFIG).is_file():
        return AdapterFolder(inner, str(root), True, _read_adapter_config(inner / ADAPTER_CONFIG))
    return None


def check_adapter_weights(adapter: AdapterFolder) -> Path:
    """The adapter's safetensors weights file; pickle-only (``adapter_model.bin``) or missing weights are refused."""
    from embedkit.models.folders import refuse_pickle_weights

    refuse_pickle_weights(adapter.path, where=adapter.path)
    weights = adapter.path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"missing weights file {ADAPTER_WEIGHTS}", where=str(adapter.path),
                         hint="the adapter folder is incomplete: copy or re-save it")
    return weights


def apply_adapter(model: SentenceTransformer, adapter: AdapterFolder) -> SentenceTransformer:
    """Attach ``adapter`` to ``model``'s backbone and merge it (in place): the result is a plain model."""
    check_adapter_weights(adapter)
    try:
        load_adapter(model, adapter.path)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"the LoRA adapter does not fit its base model {adapter.base} "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                         where=str(adapter.path),
                         hint="load it on the model it was trained from (base_model_name_or_path in "
                              "adapter_config.json; embedkit eval: --base-model)") from None
    return merge_lora(model)
