"""The query generator: a local causal LM driven by transformers' ``generate``.

Batched with left padding (every prompt ends at the same position, so the first new token of each row is read
from its own last prompt token), with the KV cache on, greedy or sampled. Sampling is seeded per call, so the same
batch gives the same queries on every run; in float32, greedy output does not depend on the batch (left padding
with the attention mask is equivalent to one prompt at a time -- tests check it; in bf16 rounding may differ).

Weights load in bfloat16 where the hardware computes it natively (``dtype="auto"``): a GPU with bf16 support, or a
CPU with AVX512-BF16 / AMX, where prefill -- the cost that dominates on a CPU -- runs about twice as fast as in
float32. Elsewhere bf16 is emulated and slower, so ``auto`` falls back to float32.

The model folder is checked before any weights load: a pickle-only folder is refused
(:func:`embedkit.models.folders.refuse_pickle_weights`), as is a folder without a causal-LM head (an encoder, a
sentence-transformers folder, a bare ``LlamaModel``), which ``AutoModelForCausalLM`` would otherwise fill with
random weights and generate noise from.

Example::

    >>> from embedkit.synth.generator import Generator
    >>> gen = Generator.load("smollm2")                                              # doctest: +SKIP
    >>> gen.generate([gen.render([{"role": "user", "content": "Write a question about ls."}])])  # doctest: +SKIP
    ['What does the ls command do?']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from embedkit.errors import ModelError
from embedkit.models.folders import gguf_folder, refuse_pickle_weights, resolve_model_path
from embedkit.synth.config import GeneratorDType
from embedkit.synth.prompts import plain_prompt

__all__ = ["Generator", "check_generator_folder", "resolve_dtype"]

logger = logging.getLogger(__name__)

_LM_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), read from the kernel's CPU flags.

    No public torch API answers this (oneDNN's probe also says yes for plain AVX512, where bf16 is emulated), and
    a wrong yes makes generation slower, so anything but a Linux CPU flag that says so means no."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: GeneratorDType = "auto") -> Literal["float32", "bfloat16"]:
    """``auto`` -> ``bfloat16`` on a bf16-capable GPU or a CPU with native bf16, else ``float32``; others unchanged.

    Example:
        >>> resolve_dtype("float32")
        'float32'
    """
    if dtype != "auto":
        return dtype
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if _cpu_has_native_bf16() else "float32"


def check_generator_folder(name: str, *, where: str = "--model") -> str:
    """Resolve ``name`` (alias, folder, or a ``.gguf`` file: converted once to a cached folder, see
    :func:`~embedkit.models.folders.gguf_folder`) and refuse what cannot generate, without loading weights."""
    path = gguf_folder(name, where=where) if name.lower().endswith(".gguf") else resolve_model_path(name)
    folder = Path(path)
    if (folder / "modules.json").exists():
        raise ModelError(f"'{name}' is a sentence-transformers (embedding) model, not a text generator",
                         where=where, hint="give a causal LM folder (e.g. smollm2) or use --method crop")
    refuse_pickle_weights(folder, where=where)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {folder / 'config.json'}: {exc}", where=where,
                         hint="the model folder is corrupt; re-save it with save_pretrained") from None
    archs = config.get("architectures") or []
    if not any(a.endswith(_LM_HEADS) for a in archs):
        raise ModelError(f"'{name}' has no causal-LM head (architectures: {', '.join(archs) or 'none'})",
                         where=where, hint="save the model with AutoModelForCausalLM (e.g. LlamaForCausalLM), "
                                           "or use --method crop")
    return path


class Generator:
    """A causal LM and its tokenizer, set up for batched left-padded generation."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ModelError("the generator's tokenizer has neither a pad nor an eos token",
                                 hint="set tokenizer.pad_token and save the tokenizer again")
            tokenizer.pad_token = tokenizer.eos_token
        self.chat = bool(getattr(tokenizer, "chat_template", None))

    @property
    def dtype(self) -> str:
        """The weights' precision, e.g. ``'bfloat16'``."""
        return str(self.model.dtype).removeprefix("torch.")

    @classmethod
    def load(cls, name: str, *, where: str = "--model", dtype: GeneratorDType = "auto") -> Generator:
        """Load an alias (``smollm2``) or a local causal-LM folder, safetensors only, on the best device, in
        ``dtype`` (:func:`resolve_dtype`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = check_generator_folder(name, where=where)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the tokenizer of {path}: {str(exc).splitlines()[0]}", where=where,
                             hint="the folder needs tokenizer files (tokenizer.json or a vocabulary)") from None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, resolve_dtype(dtype)),
                                                     use_safetensors=True).to(device)
        return cls(model, tokenizer)

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text: the tokenizer's chat template when it has one, else a completion-style prompt."""
        if self.chat:
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return plain_prompt(messages)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 32, sampling: bool = False,
                 temperature: float = 0.7, top_p: float = 0.95, seed: int = 0) -> list[str]:
        """Continue each prompt; returns the new text of each (special tokens removed), in input order."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        enc = {k: v.to(self.model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        eos = tok.eos_token_id if tok.eos_token_id is not None else getattr(self.model.config, "eos_token_id", None)
        gen_kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sampling, use_cache=True,
                                      pad_token_id=tok.pad_token_id, eos_token_id=eos)
        if sampling:
            gen_kw.update(temperature=temperature, top_p=top_p, top_k=0)
        config = GenerationConfig(**gen_kw)
        with torch.random.fork_rng(), torch.inference_mode():  # seeded here, the caller's RNG state untouched
            torch.manual_seed(seed)
            out = self.model.generate(**enc, generation_config=config)
        new = out[:, enc["input_ids"].shape[1]:]
        return tok.batch_decode(new, skip_special_tokens=True)
