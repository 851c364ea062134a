"""Fast encoding: tokenise once, sort by token length, pack token-budgeted batches, run under ``inference_mode``.

Why not just ``SentenceTransformer.encode``? It sorts by *character* length and tokenises batch by batch; we
tokenise everything once (one fast-tokenizer call), sort by the exact token count (minimal padding) and let short
texts share larger batches under a padded-token budget. Results are the same embeddings (cosine >= 0.9999);
``eval/bench_encode.py`` measures the speed ratio.

Example:
    >>> from embedkit import load_model, encode
    >>> model = load_model("minilm")                                     # doctest: +SKIP
    >>> q = encode(model, ["how do I list files"], role="query")         # doctest: +SKIP
    >>> d = encode(model, ["ls lists directory contents"], role="document")  # doctest: +SKIP
    >>> float(similarity(q, d)[0, 0]) > 0.3                              # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from embedkit.errors import InputError

Role = Literal["query", "document"]


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, bytes):
        raise InputError(f"texts must be a list of strings, got {type(texts).__name__}",
                         hint="pass a list[str] (or a single str)")
    out = list(texts)
    if not out:
        raise InputError("no texts to encode (empty input)", hint="pass at least one non-empty string")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"text #{i} is {type(t).__name__}, not a string", where=f"texts[{i}]",
                             hint="convert every item to str (or drop it) before encoding")
    return out


def resolve_prompt(model: SentenceTransformer, role: str | None, prompt: str | None) -> str:
    """An explicit ``prompt`` wins; else the model's stored prompt for ``role`` (``query``/``document``); else none."""
    if prompt is not None:
        return prompt
    if role is None:
        return ""
    if role not in ("query", "document"):
        raise InputError(f"unknown role '{role}'", hint="use role='query' or role='document'")
    return (getattr(model, "prompts", None) or {}).get(role, "") or ""


def _prompt_length(model: SentenceTransformer, prompt: str) -> int | None:
    if not prompt:
        return None
    ids = model.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    n = len(ids)
    sep = {model.tokenizer.sep_token_id, model.tokenizer.eos_token_id} - {None}
    if ids and ids[-1] in sep:
        n -= 1  # the closing special token belongs to the text, not the prompt
    return n


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Group indices longest first.

    With ``max_tokens`` (a padded-token budget) a batch takes rows while ``rows x longest row <= max_tokens``: short
    texts share big batches, long texts get small ones, and peak memory stays bounded by the budget. Without it
    (``None`` or ``0``) batches are ``batch_size`` rows, as in sentence-transformers. Every index appears exactly
    once and a batch always holds at least one row.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if max_tokens:
            full = new_max * (len(cur) + 1) > max_tokens
        else:
            full = len(cur) + 1 > batch_size
        if cur and full:
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def encode(
    model: SentenceTransformer,
    texts: Sequence[str] | str,
    *,
    role: Role | None = None,
    prompt: str | None = None,
    batch_size: int = 32,
    max_tokens: int | None = None,
    normalize: bool = False,
    output: Literal["numpy", "torch"] = "numpy",
    show_progress_bar: bool | None = None,
) -> np.ndarray | torch.Tensor:
    """Embed ``texts`` with ``model``.

    Args:
        model: a model from :func:`embedkit.load_model` (any ``SentenceTransformer`` works).
        texts: strings (a single string is treated as a list of one).
        role: ``"query"`` or ``"document"``: use the model's prompt for that role.
        prompt: explicit prefix (overrides ``role``).
        batch_size: the nominal batch: the default token budget is ``batch_size x 128`` padded tokens.
        max_tokens: padded-token budget per forward pass (default ``batch_size x 128``): short texts share bigger
            batches, long ones get smaller batches, memory stays bounded. ``0`` = fixed ``batch_size`` rows.
        normalize: L2-normalise the output (models with a ``Normalize`` module -- embedkit's default -- already are).
        output: ``"numpy"`` (float32 array) or ``"torch"`` (CPU tensor).
        show_progress_bar: default on for more than 1000 texts.

    Returns:
        ``(len(texts), dim)`` embeddings in input order.
    """
    items = _check_texts(texts)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1 (got {batch_size})")
    if max_tokens is None:
        max_tokens = batch_size * 128
    if max_tokens < 0:
        raise InputError(f"max_tokens must be >= 0 (got {max_tokens})")
    prefix = resolve_prompt(model, role, prompt)
    tok = model.tokenizer
    max_len = model.max_seq_length or getattr(tok, "model_max_length", 512)
    enc = tok([prefix + t for t in items], truncation=True, max_length=max_len, padding=False)
    ids: list[list[int]] = enc["input_ids"]
    lengths = [len(x) for x in ids]
    batches = plan_batches(lengths, batch_size, max_tokens or None)
    plen = _prompt_length(model, prefix)
    device = model.device
    has_type_ids = "token_type_ids" in enc
    dim = model.get_embedding_dimension()
    out = torch.empty(len(items), dim, dtype=torch.float32)
    if show_progress_bar is None:
        show_progress_bar = len(items) > 1000
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(items), desc="encode", unit="text",
                                          disable=not show_progress_bar) as bar:
            for rows in batches:
                feats = {"input_ids": [ids[i] for i in rows], "attention_mask": [enc["attention_mask"][i] for i in rows]}
                if has_type_ids:
                    feats["token_type_ids"] = [enc["token_type_ids"][i] for i in rows]
                batch = tok.pad(feats, return_tensors="pt")
                batch = {k: v.to(device) for k, v in batch.items()}
                batch["modality"] = "text"
                if plen is not None:
                    batch["prompt_length"] = plen
                emb = model(batch)["sentence_embedding"]
                # a model with truncate_dim set (Matryoshka) gives its first `dim` dimensions, as model.encode does
                out[torch.tensor(rows)] = emb[:, :dim].float().cpu()
                bar.update(len(rows))
    finally:
        model.train(was_training)
    if normalize:
        out = torch.nn.functional.normalize(out, dim=-1)
    return out.numpy() if output == "numpy" else out


def similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine similarity matrix ``(len(a), len(b))`` of two embedding sets."""
    a_t = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    b_t = torch.as_tensor(np.asarray(b), dtype=torch.float32)
    a_t = torch.nn.functional.normalize(a_t, dim=-1)
    b_t = torch.nn.functional.normalize(b_t, dim=-1)
    return (a_t @ b_t.T).numpy()
