"""Weighted averaging of checkpoints, streamed tensor by tensor through safetensors.

Full checkpoints are averaged **tensor-major**: for each tensor (in row blocks of at most :data:`BLOCK_ELEMENTS`
values), every member's block is read with ``safetensors.safe_open(...).get_slice`` (opened for that read only, so
no member stays memory-mapped), summed in float64 with its weight, cast back to the reference member's dtype and
appended to the output file. Peak memory is a few blocks, not the members: souping 10 checkpoints costs about what
souping 2 does.

safetensors cannot write a file incrementally (its ``save_file`` needs the whole dict in memory and then copies it:
https://github.com/huggingface/safetensors/issues/291 and /issues/458), so :class:`SafetensorsWriter` writes the
documented format itself: an 8-byte little-endian header length, a JSON header (dtype, shape, data offsets, padded
to 8 bytes) and the raw little-endian tensor bytes. Everything it writes is read back by ``safe_open`` in the tests.

LoRA adapters are merged into their base **one member at a time** with peft (``merge_and_unload``), the merged
weights are added to a running float32 sum, and the merged copy is freed before the next member: peak memory is
about two models (the running sum and one merged copy). Averaging A and B separately would be wrong -- the product
of averages is not the average of the products ``B @ A``.

Example:
    >>> from embedkit.soup.checkpoint import inspect_checkpoint                     # doctest: +SKIP
    >>> from embedkit.soup.merge import write_average                               # doctest: +SKIP
    >>> ms = [inspect_checkpoint(p) for p in ("run1", "run2")]                      # doctest: +SKIP
    >>> write_average([(ms[0], 0.5), (ms[1], 0.5)], "soup_dir")                     # doctest: +SKIP
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import torch

from embedkit.errors import ModelError
from embedkit.soup.checkpoint import EXPORT_DIRS, PICKLE_SUFFIXES, Checkpoint, TensorSpec, file_metadata

#: at most this many values of one tensor are read at a time (a 16 MiB float64 accumulator + one block)
BLOCK_ELEMENTS = 1 << 21

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)


def _torch_dtype(spec: TensorSpec, where: Path) -> torch.dtype:
    try:
        return DTYPES[spec.dtype]
    except KeyError:
        raise ModelError(f"tensor '{spec.name}' has dtype {spec.dtype}, which soups do not support", where=str(where),
                         hint="convert the checkpoint to float32/bfloat16/float16") from None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, with the header computed up front from the specs.

    Call :meth:`write` with each tensor's data (whole, or consecutive row blocks), in the order of ``specs``.
    """

    def __init__(self, f: IO[bytes], specs: list[TensorSpec], metadata: dict[str, str] | None = None) -> None:
        self.f = f
        self.specs = specs
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = metadata
        offset = 0
        self._sizes: list[int] = []
        for s in specs:
            size = _numel(s.shape) * torch.empty((), dtype=DTYPES[s.dtype]).element_size()
            header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + size]}
            offset += size
            self._sizes.append(size)
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # the format aligns the data start to 8 bytes
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        self._index = 0  # the tensor being written
        self._done = 0  # its bytes written so far

    def write(self, t: torch.Tensor) -> None:
        """Append (part of) the current tensor; its dtype must be the spec's."""
        if self._index >= len(self.specs):
            raise ValueError("all tensors of the header are already written")
        spec = self.specs[self._index]
        if t.dtype != DTYPES[spec.dtype]:
            raise ValueError(f"{spec.name}: got {t.dtype}, header says {spec.dtype}")
        flat = t.detach().contiguous().reshape(-1)
        if flat.numel():
            self.f.write(memoryview(flat.view(torch.uint8).numpy()))
        self._done += flat.numel() * flat.element_size()
        if self._done > self._sizes[self._index]:
            raise ValueError(f"{spec.name}: more data than its shape {list(spec.shape)}")
        if self._done == self._sizes[self._index]:
            self._index += 1
            self._done = 0

    def close(self) -> None:
        if self._index != len(self.specs):
            raise ValueError(f"tensor '{self.specs[self._index].name}' was not fully written")


def _row_blocks(shape: tuple[int, ...]) -> Iterator[tuple[int, int] | None]:
    """Row ranges covering a tensor in blocks of <= BLOCK_ELEMENTS values (``None``: read it whole)."""
    if len(shape) == 0 or _numel(shape) == 0:
        yield None
        return
    row = max(1, _numel(shape[1:]))
    step = max(1, BLOCK_ELEMENTS // row)
    for start in range(0, shape[0], step):
        yield start, min(shape[0], start + step)


def _read_block(path: Path, name: str, rows: tuple[int, int] | None) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # opened per read: no member stays mapped in memory
        if rows is None:
            return f.get_tensor(name)
        return f.get_slice(name)[rows[0]:rows[1]]


#: ``source(rel, spec, rows) -> tensor block`` for tensors not read straight from a member's file
BlockSource = Callable[[str, TensorSpec, "tuple[int, int] | None"], torch.Tensor]


def _average_file(
    rel: str,
    specs: list[TensorSpec],
    sources: list[tuple[Path | BlockSource, float]],
    out_path: Path,
    metadata: dict[str, str] | None,
) -> None:
    """Write ``sum_i w_i * source_i`` for every tensor of one weights file (non-float tensors: the first source)."""
    with open(out_path, "wb") as f:
        writer = SafetensorsWriter(f, specs, metadata)
        for spec in specs:
            dtype = _torch_dtype(spec, out_path)
            for rows in _row_blocks(spec.shape):
                def read(src: Path | BlockSource) -> torch.Tensor:
                    if isinstance(src, Path):
                        return _read_block(src / rel, spec.name, rows)
                    return src(rel, spec, rows)

                if not dtype.is_floating_point:
                    writer.write(read(sources[0][0]).to(dtype))
                    continue
                acc: torch.Tensor | None = None
                for src, w in sources:
                    block = read(src).to(torch.float64)
                    if acc is None:
                        acc = block.mul_(w)
                    else:
                        acc.add_(block, alpha=w)
                    del block
                assert acc is not None
                writer.write(acc.to(dtype))
                del acc
        writer.close()


def copy_pipeline_files(src_root: Path, dst_root: Path, skip: Path | None = None) -> None:
    """Copy every non-weight file of a checkpoint (modules.json, configs, tokenizer, pooling configs, prompts).

    Weights (``*.safetensors``), pickle files, exported copies (``onnx/``, ``openvino/``), the old model card
    (``README.md``) and ``skip`` (a merged LoRA member's ``adapter/`` folder) are left out: the soup writes its own.
    """
    for dirpath, dirnames, filenames in os.walk(src_root):
        dirnames[:] = [d for d in dirnames if d not in EXPORT_DIRS and (skip is None or Path(dirpath) / d != skip)]
        rel_dir = Path(dirpath).relative_to(src_root)
        for name in filenames:
            rel = rel_dir / name
            if Path(name).suffix in (".safetensors", *PICKLE_SUFFIXES) or str(rel) == "README.md":
                continue
            (dst_root / rel_dir).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(dirpath) / name, dst_root / rel)


def write_average(sources: list[tuple[Checkpoint, float]], out_dir: str | os.PathLike) -> None:
    """Write the weighted average of compatible full checkpoints into the (existing, empty) folder ``out_dir``.

    The first source is the reference: its non-weight files are copied and its dtypes kept. Weights must already
    be normalised (the caller decides; they are used as given).
    """
    out = Path(out_dir)
    ref = sources[0][0]
    copy_pipeline_files(ref.root, out)
    for rel in ref.weights:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        _average_file(rel, ref.header(rel), [(c.root, w) for c, w in sources], out / rel, file_metadata(ref.root / rel))


# -------------------------------------------------------------------------------------------------------- LoRA


def _load_backbone(ckpt: Checkpoint) -> torch.nn.Module:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one base load per member: no "Loading weights" bar each time
    try:
        return AutoModel.from_pretrained(str(ckpt.transformer_path), dtype=torch.float32, use_safetensors=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the LoRA base model ({str(exc).splitlines()[0]})",
                         where=str(ckpt.transformer_path), hint="check the base folder is a complete model") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def merged_lora_state(member: Checkpoint) -> dict[str, torch.Tensor]:
    """Base weights with ``member``'s adapter merged in (peft ``merge_and_unload``), as a float32 state dict."""
    from peft import PeftModel

    backbone = _load_backbone(member)
    try:
        peft_model = PeftModel.from_pretrained(backbone, str(member.adapter_dir or member.path), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"the adapter does not fit its base model ({str(exc).splitlines()[0]})",
                         where=str(member.path), hint="check base_model_name_or_path in adapter_config.json") from None
    merged = peft_model.merge_and_unload()
    state = {k: v.detach() for k, v in merged.state_dict().items()}
    del peft_model, merged, backbone
    return state


def write_lora_average(
    members: list[tuple[Checkpoint, float]],
    out_dir: str | os.PathLike,
    base: tuple[Checkpoint, float] | None = None,
) -> None:
    """Merge each adapter into its base, average the merged weights, write the base's layout to ``out_dir``.

    ``members`` weights must sum to 1 - ``base`` weight. Pooling/other module weights come from each member's
    base folder (one shared base for bare adapters; each run's own pipeline for runs saved with
    ``merge_on_save: false``, whose pooling may have trained too), averaged with the members' weights and
    interpolated with ``base`` when given. A run's ``adapter/`` folder is merged, never copied.
    """
    out = Path(out_dir)
    ref = members[0][0]
    acc: dict[str, torch.Tensor] = {}
    ptrs: dict[str, int] = {}
    for ckpt, w in members:  # one merged copy alive at a time
        state = merged_lora_state(ckpt)
        for k, v in state.items():
            ptrs.setdefault(k, v.data_ptr())
            if k in acc:
                acc[k].add_(v.to(torch.float32), alpha=w)
            else:
                acc[k] = v.to(torch.float32) * w
        del state
        gc.collect()
    base_w = base[1] if base else 0.0
    lora_sum = sum(w for _, w in members)
    tdir = Path(ref.transformer_dir)
    copy_pipeline_files(ref.root, out, skip=ref.adapter_dir)
    seen: set[str] = set()
    for rel in ref.weights:
        specs = ref.header(rel)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sources: list[tuple[Path | BlockSource, float]]
        if Path(rel).parent == tdir:
            names = {s.name for s in specs}
            seen |= names

            def merged_block(r: str, spec: TensorSpec, rows: tuple[int, int] | None) -> torch.Tensor:
                if spec.name in acc:  # already weighted by the members' weights
                    t = acc[spec.name]
                    return t if rows is None else t[rows[0]:rows[1]]
                # a buffer the model does not hold as state (e.g. old position_ids): the base's value
                t = _read_block(ref.root / r, spec.name, rows)
                return t * lora_sum if t.is_floating_point() else t

            sources = [(merged_block, 1.0)]
        else:
            sources = [(ckpt.root, w) for ckpt, w in members]
        if base:
            sources.append((base[0].root, base_w))
        _average_file(rel, specs, sources, out / rel, file_metadata(ref.root / rel))
    by_ptr = {ptrs[k]: k for k in seen if k in ptrs}
    lost = [k for k in acc if k not in seen and by_ptr.get(ptrs[k]) is None]
    if lost:  # a merged weight the base file does not name (not a tied alias): refuse rather than drop an update
        raise ModelError(f"merged weight '{lost[0]}' has no tensor of that name in the base weights files",
                         where=str(ref.transformer_path), hint="re-save the base model with save_pretrained")
