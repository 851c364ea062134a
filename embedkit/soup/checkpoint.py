"""What a soup member is, and whether a set of members can be averaged.

A member is either a **full checkpoint** -- a sentence-transformers folder (``modules.json`` + module folders) or
a plain transformers folder (``config.json`` + ``model.safetensors``) -- or a **LoRA** member, as
:func:`embedkit.models.lora.find_adapter` (the one place adapters are recognised) finds it: a bare adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``) whose ``base_model_name_or_path`` names the base, or a run
saved with ``merge_on_save: false`` (its base pipeline + ``adapter/``). LoRA members are merged into their base
before averaging, never averaged factor by factor.

Averaging only makes sense between members that compute the same function family, so :func:`check_compatible`
compares, in this order, and stops at the **first** difference with a one-line :class:`~embedkit.errors.ModelError`
that names it: pipeline modules (``modules.json`` types, pooling/normalisation configs), architecture
(``model_type`` / ``architectures`` and every shape-determining config key -- ``hidden_size``,
``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``, ``vocab_size``... -- naming the key and both
values), tokenizer (vocabulary hashes), weights files, then tensor names and shapes (naming the tensor). Weights are
read through safetensors only: a pickle weights file without a safetensors file in its module folder is refused by
:func:`embedkit.models.loading.refuse_pickle_weights` (the check ``load_model`` makes), never unpickled.

Example:
    >>> from embedkit.soup.checkpoint import inspect_checkpoint, check_compatible   # doctest: +SKIP
    >>> a, b = inspect_checkpoint("runs/seed1"), inspect_checkpoint("runs/seed2")    # doctest: +SKIP
    >>> check_compatible([a, b])                                                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from embedkit.errors import InputError, ModelError
from embedkit.models.folders import EXPORT_DIRS, PICKLE_SUFFIXES, SHAPE_CONFIG_KEYS, refuse_pickle_weights

__all__ = ["EXPORT_DIRS", "PICKLE_SUFFIXES", "Checkpoint", "TensorSpec", "check_compatible", "check_same_layout",
           "inspect_checkpoint", "read_header"]
#: vocabulary files compared (by content hash) to make sure members tokenise identically
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")
#: tokenizer.json sections that decide how text becomes ids (padding/truncation settings are ignored)
_TOKENIZER_JSON_KEYS = ("model", "added_tokens", "normalizer", "pre_tokenizer")


@dataclass(frozen=True)
class TensorSpec:
    """Name, safetensors dtype string (``"F32"``...) and shape of one stored tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class Checkpoint:
    """One soup member (or the interpolation base), inspected but not loaded.

    Attributes:
        path: the folder the user named.
        kind: ``"full"`` or ``"lora"``.
        root: the folder whose layout a soup copies: the member itself, or a LoRA adapter's base folder.
        transformer_dir: the Transformer module's folder relative to ``root`` (``""`` at the root).
        weights: safetensors files relative to ``root`` (Transformer and module weights), sorted.
        adapter_config: the parsed ``adapter_config.json`` of a LoRA member.
        adapter_dir: a LoRA member's adapter folder (``path`` itself, or ``path/adapter`` for a run saved with
            ``merge_on_save: false``, whose ``root`` is then ``path``).
    """

    path: Path
    kind: Literal["full", "lora"]
    root: Path
    transformer_dir: str = ""
    weights: list[str] = field(default_factory=list)
    adapter_config: dict[str, Any] | None = None
    adapter_dir: Path | None = None

    def as_full(self) -> Checkpoint:
        """The member's base layout as a full checkpoint (what a LoRA member's merged weights are laid out as)."""
        return Checkpoint(self.root, "full", self.root, self.transformer_dir, self.weights)

    @property
    def transformer_path(self) -> Path:
        return self.root / self.transformer_dir if self.transformer_dir else self.root

    @cached_property
    def modules(self) -> list[dict[str, Any]]:
        """``modules.json`` of ``root`` (empty for a plain transformers folder)."""
        p = self.root / "modules.json"
        return _read_json(p) if p.exists() else []

    def header(self, rel: str) -> list[TensorSpec]:
        """Tensor specs of one weights file, in file order, read with ``safetensors.safe_open`` (no data)."""
        return read_header(self.root / rel)

    def describe(self) -> str:
        return str(self.path) if self.kind == "full" else f"{self.path} (LoRA on {self.root})"


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f"{path}:{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(path)
        raise ModelError(f"cannot read JSON ({msg})", where=where, hint="the checkpoint is corrupt; re-save it") from None


def read_header(path: Path) -> list[TensorSpec]:
    """Names, dtypes and shapes of a safetensors file, in storage order, without reading tensor data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            specs = []
            for name in f.keys():
                sl = f.get_slice(name)
                specs.append(TensorSpec(name, sl.get_dtype(), tuple(int(d) for d in sl.get_shape())))
    except (OSError, RuntimeError, ValueError) as exc:  # safetensors raises SafetensorError (a subclass) on bad files
        raise ModelError(f"cannot read safetensors file ({str(exc).splitlines()[0]})", where=str(path),
                         hint="the weights file is corrupt; re-save the checkpoint") from None
    return specs


def file_metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _walk(root: Path, skip: Path | None = None) -> list[Path]:
    """Every file under ``root`` (relative paths, sorted), skipping exported-weights folders (and ``skip``)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXPORT_DIRS
                             and (skip is None or Path(dirpath) / d != skip))
        rel_dir = Path(dirpath).relative_to(root)
        out.extend(rel_dir / name for name in sorted(filenames))
    return out


def _weights_files(root: Path, transformer_dir: str, where: Path, skip: Path | None = None) -> list[str]:
    refuse_pickle_weights(root, where=where)  # the same check load_model makes, before anything is read
    safe = [f for f in _walk(root, skip) if f.suffix == ".safetensors"]
    tdir = Path(transformer_dir)
    if not any(f.parent == tdir for f in safe):
        shown = tdir / "model.safetensors"
        raise ModelError(f"missing weights file {shown}", where=str(where),
                         hint="the checkpoint is incomplete: copy or re-save its weights")
    return [str(f) for f in safe]


def _transformer_dir(root: Path) -> str:
    modules = root / "modules.json"
    if not modules.exists():
        return ""
    mods = _read_json(modules)
    if not isinstance(mods, list):
        raise ModelError("modules.json is not a list of modules", where=str(modules), hint="re-save the checkpoint")
    for mod in mods:
        if str(mod.get("type", "")).endswith("Transformer"):
            return str(mod.get("path", "")).strip("/")
    raise ModelError("modules.json has no Transformer module", where=str(modules),
                     hint="soups average transformers-based embedding models only")


def inspect_checkpoint(path: str | os.PathLike, *, allow_lora: bool = True) -> Checkpoint:
    """Classify a folder as a full checkpoint or a LoRA member and list its weights files.

    LoRA members are what :func:`embedkit.models.lora.find_adapter` finds: a bare adapter folder (on its
    ``base_model_name_or_path``) or a run saved with ``merge_on_save: false`` (its pipeline + ``adapter/``).

    Raises:
        InputError: the path does not exist or is not a model folder.
        ModelError: pickle weights (without safetensors beside them) or missing weights, an unreadable config,
            an adapter whose base is missing.
    """
    from embedkit.models.folders import ALIASES, resolve_model_path
    from embedkit.models.lora import check_adapter_weights, find_adapter

    p = Path(path).expanduser()
    if not p.exists() and str(path).lower() in ALIASES:
        p = Path(resolve_model_path(str(path)))
    if not p.exists():
        raise InputError(f"checkpoint {p} does not exist", where=str(p), hint="check the checkpoint paths")
    if not p.is_dir():
        raise InputError(f"checkpoint {p} is not a folder", where=str(p),
                         hint="pass a saved model folder or a LoRA adapter folder")
    adapter = find_adapter(p)
    if adapter is not None:
        if not allow_lora:
            raise InputError("a LoRA adapter (an unmerged LoRA run) cannot be the interpolation base", where=str(p),
                             hint="pass a full model folder as --base (e.g. the model the adapter was trained on)")
        check_adapter_weights(adapter)
        if adapter.embedded:  # the run's own pipeline is the base; its adapter/ is merged, not averaged
            tdir = _transformer_dir(p)
            return Checkpoint(path=p, kind="lora", root=p, transformer_dir=tdir,
                              weights=_weights_files(p, tdir, p, skip=adapter.path), adapter_config=adapter.config,
                              adapter_dir=adapter.path)
        base_dir = Path(resolve_model_path(adapter.base))
        if find_adapter(base_dir) is not None:
            raise ModelError(f"the base {base_dir} of this LoRA adapter is itself an unmerged LoRA run",
                             where=str(adapter.config_path),
                             hint="merge the base first (embedkit soup BASE -o MERGED) and point "
                                  "base_model_name_or_path at the merged folder")
        base = inspect_checkpoint(base_dir, allow_lora=False)
        return Checkpoint(path=p, kind="lora", root=base.root, transformer_dir=base.transformer_dir,
                          weights=base.weights, adapter_config=adapter.config, adapter_dir=adapter.path)
    if not ((p / "modules.json").exists() or (p / "config.json").exists()):
        raise InputError(f"{p} is not a model folder (no modules.json, config.json or adapter_config.json)",
                         where=str(p), hint="pass a folder saved by SentenceTransformer.save or save_pretrained")
    tdir = _transformer_dir(p)
    return Checkpoint(path=p, kind="full", root=p, transformer_dir=tdir, weights=_weights_files(p, tdir, p))


# ---------------------------------------------------------------------------------------------------- comparison


def _first_dict_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first key path where two JSON values differ (``None`` when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{prefix}{key}"
            diff = _first_dict_difference(a[key], b[key], f"{prefix}{key}.")
            if diff is not None:
                return diff
        return None
    return None if a == b else (prefix.rstrip(".") or "value")


def _lookup(obj: Any, dotted: str) -> str:
    """``repr`` of the value at a dotted key path of a JSON object, or ``missing``."""
    if dotted == "value":  # one of the two configs is absent altogether
        return "missing" if obj is None else "present"
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return "missing"
        obj = obj[part]
    return repr(obj)


def _tokenizer_fingerprint(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in TOKENIZER_FILES:
        f = folder / name
        if not f.exists():
            continue
        if name == "tokenizer.json":
            tok = _read_json(f)
            blob = json.dumps({k: tok.get(k) for k in _TOKENIZER_JSON_KEYS}, sort_keys=True).encode()
        else:
            blob = f.read_bytes()
        out[name] = hashlib.sha256(blob).hexdigest()
    return out


def weights_fingerprint(ckpt: Checkpoint) -> str:
    """sha256 over the Transformer module's safetensors files (streamed in 16 MiB blocks)."""
    h = hashlib.sha256()
    tdir = Path(ckpt.transformer_dir)
    for rel in ckpt.weights:
        if Path(rel).parent != tdir:
            continue
        h.update(rel.encode())
        with open(ckpt.root / rel, "rb") as f:
            while block := f.read(16 << 20):
                h.update(block)
    return h.hexdigest()


def _layout_error(ref: Checkpoint, other: Checkpoint, what: str, hint: str, where: Path | None = None) -> ModelError:
    return ModelError(f"{what} (reference member: {ref.describe()})", where=str(where or other.path), hint=hint)


def _pipeline_modules(ckpt: Checkpoint) -> list[tuple[str, str]]:
    return [(str(m.get("path", "")).strip("/"), str(m.get("type", ""))) for m in ckpt.modules]


def check_same_layout(ref: Checkpoint, other: Checkpoint) -> None:
    """Raise a one-line :class:`ModelError` naming the first difference between two full layouts."""
    mismatch_hint = "soup only checkpoints fine-tuned from the same base model with the same pipeline"
    # 1. pipeline: module types, then each non-Transformer module's config (pooling mode, latent sizes, ...)
    mods_a, mods_b = _pipeline_modules(ref), _pipeline_modules(other)
    if mods_a != mods_b:
        for i in range(max(len(mods_a), len(mods_b))):
            a = mods_a[i] if i < len(mods_a) else None
            b = mods_b[i] if i < len(mods_b) else None
            if a != b:
                raise _layout_error(ref, other, f"pooling/pipeline differs: module {i} is "
                                    f"{b[1] + ' at ' + repr(b[0]) if b else 'missing'} but "
                                    f"{a[1] + ' at ' + repr(a[0]) if a else 'missing'} in the reference",
                                    mismatch_hint, other.root / "modules.json")
    for mod_path, mod_type in mods_a:
        if mod_type.endswith("Transformer") or not mod_path:
            continue
        ca, cb = ref.root / mod_path / "config.json", other.root / mod_path / "config.json"
        ja = _read_json(ca) if ca.exists() else None
        jb = _read_json(cb) if cb.exists() else None
        diff = _first_dict_difference(ja, jb)
        if diff is not None:
            va, vb = _lookup(ja, diff), _lookup(jb, diff)
            raise _layout_error(ref, other, f"pooling config differs: {mod_path}/config.json '{diff}' is {vb}, "
                                f"not {va}", mismatch_hint, cb)
    # 2. architecture
    ha, hb = ref.transformer_path / "config.json", other.transformer_path / "config.json"
    if not hb.exists():
        raise ModelError("missing config.json of the Transformer module", where=str(hb), hint="re-save the checkpoint")
    cfg_a, cfg_b = _read_json(ha), _read_json(hb)
    for key in ("model_type", "architectures"):
        if cfg_a.get(key) != cfg_b.get(key):
            raise _layout_error(ref, other, f"architecture differs: config '{key}' is {cfg_b.get(key)!r}, "
                                f"not {cfg_a.get(key)!r}", mismatch_hint, hb)
    # the keys that fix tensor shapes: two configs that disagree here describe different networks, even when the
    # weights files happen to agree (a config edited or copied from another model)
    for key in SHAPE_CONFIG_KEYS:
        if cfg_a.get(key) != cfg_b.get(key):
            va = "missing" if key not in cfg_a else repr(cfg_a[key])
            vb = "missing" if key not in cfg_b else repr(cfg_b[key])
            raise _layout_error(ref, other, f"architecture (shape-determining config) differs: '{key}' is {vb} "
                                f"in {hb}, not {va} as in {ha}", mismatch_hint, hb)
    # 3. tokenizer
    ta, tb = _tokenizer_fingerprint(ref.transformer_path), _tokenizer_fingerprint(other.transformer_path)
    for name in sorted(set(ta) | set(tb)):
        if ta.get(name) != tb.get(name):
            state = "is missing" if name not in tb else ("is extra" if name not in ta else "has a different vocabulary")
            raise _layout_error(ref, other, f"tokenizer differs: {name} {state}", mismatch_hint,
                                other.transformer_path / name)
    # 4. weights files, then tensor names and shapes
    for rel in sorted(set(ref.weights) | set(other.weights)):
        if rel not in other.weights:
            raise _layout_error(ref, other, f"missing weights file {rel}", "every member needs the same weights files")
        if rel not in ref.weights:
            raise _layout_error(ref, other, f"extra weights file {rel}", "every member needs the same weights files")
    for rel in ref.weights:
        sa = {s.name: s for s in ref.header(rel)}
        sb = {s.name: s for s in other.header(rel)}
        for name in sorted(set(sa) | set(sb)):
            if name not in sb:
                raise _layout_error(ref, other, f"parameter names differ: tensor '{name}' of {rel} is missing",
                                    mismatch_hint, other.root / rel)
            if name not in sa:
                raise _layout_error(ref, other, f"parameter names differ: tensor '{name}' of {rel} is extra",
                                    mismatch_hint, other.root / rel)
            if sa[name].shape != sb[name].shape:
                raise _layout_error(ref, other, f"parameter shapes differ: tensor '{name}' of {rel} has shape "
                                    f"{list(sb[name].shape)}, not {list(sa[name].shape)}", mismatch_hint,
                                    other.root / rel)


def check_compatible(members: list[Checkpoint], base: Checkpoint | None = None) -> None:
    """Refuse members that cannot be averaged (see the module docstring); ``base`` must match them too.

    LoRA members must all be adapters (no mix with full checkpoints) on the same base: the same folder, or folders
    whose Transformer weights have the same sha256 fingerprint.
    """
    if not members:
        raise InputError("no checkpoints to soup", hint="pass at least one checkpoint folder")
    kinds = {m.kind for m in members}
    if len(kinds) > 1:
        lora = next(m for m in members if m.kind == "lora")
        raise ModelError("cannot mix LoRA adapters and full checkpoints in one soup", where=str(lora.path),
                         hint="merge the adapter into its base first (embedkit.models.lora.merge_lora + save)")
    ref = members[0]
    if ref.kind == "lora":
        fingerprints: dict[Path, str] = {}
        for m in members[1:]:
            if m.root.resolve() == ref.root.resolve():
                continue
            # other base folders (e.g. two runs saved with merge_on_save: false): the same pipeline and shapes,
            # and the same frozen backbone weights
            check_same_layout(ref.as_full(), m.as_full())
            fa = fingerprints.setdefault(ref.root, weights_fingerprint(ref))
            fb = fingerprints.setdefault(m.root, weights_fingerprint(m))
            if fa != fb:
                raise ModelError(
                    f"LoRA members have different bases: {m.root} (weights sha256 {fb[:12]}) vs {ref.root} "
                    f"(weights sha256 {fa[:12]}, base of {ref.path})",
                    where=str(m.path / "adapter_config.json"),
                    hint="soup only adapters trained on the same base model",
                )
    else:
        for m in members[1:]:
            check_same_layout(ref, m)
    if base is not None:
        check_same_layout(ref if ref.kind == "full" else ref.as_full(), base)
