"""Pooling modules: mean / cls / last-token and NV-Embed latent-attention pooling.

Both modules are sentence-transformers ``Module`` subclasses, so a saved model lists them in ``modules.json``
(``embedkit.models.pooling.Pooling`` / ``embedkit.models.pooling.LatentAttentionPooling``). Load such a folder with
:func:`embedkit.load_model` (or :func:`embedkit.models.loading.load_st_folder`): it resolves these two class names to
embedkit's own classes and keeps ``trust_remote_code`` off. A plain ``SentenceTransformer(path)`` refuses them, even
with embedkit installed: sentence-transformers >= 6 imports a module class from outside its own namespace only with
``trust_remote_code=True`` (its issue #3801), which also lets the folder run any code it names. Folders whose
pooling is sentence-transformers' own ``Pooling`` (the default where it behaves identically, see
``embedkit.models.loading._plain_pooling``) load with plain ``SentenceTransformer(path)``.

Why our own pooling rather than sentence-transformers' ``Pooling``: we need the pooled tokens to be controlled per
mode *and* per padding side. Prompt/instruction tokens are located from the first real token of each row (so
``exclude_prompt`` is right for left-padded decoders too), and an attention-sink first token (a decoder's BOS,
see Tevatron's nDCG 0.02 -> 0.65 report) can be dropped from mean pooling with ``exclude_first_token``.

Example:
    >>> import torch
    >>> from embedkit.models.pooling import Pooling
    >>> pool = Pooling(embedding_dimension=4, mode="mean")
    >>> h = torch.ones(2, 3, 4); m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    >>> pool({"token_embeddings": h, "attention_mask": m})["sentence_embedding"].shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sentence_transformers.base.modules import Module
from torch import Tensor

PoolingMode = Literal["mean", "cls", "last"]


def _prompt_lengths(features: dict[str, Any], batch: int, device: torch.device) -> Tensor:
    """Per-row prompt lengths ``(batch, 1)`` from ``features["prompt_length"]``.

    Accepted: an int (one prompt for the batch, what :func:`embedkit.encode` passes), a 0-dim or shape-(1) tensor
    (the same), or a shape-(batch) tensor -- one length per row, what the training collator passes so records with
    instructions of different lengths each drop exactly their own. Any other size is refused rather than guessed.
    """
    pl = features.get("prompt_length")
    if pl is None:
        return torch.zeros(batch, 1, dtype=torch.long, device=device)
    if isinstance(pl, Tensor):
        pl = pl.reshape(-1).to(device=device, dtype=torch.long)
        if pl.numel() == batch:
            return pl.unsqueeze(1)
        if pl.numel() == 1:
            return pl.expand(batch).unsqueeze(1)
        raise ValueError(f"prompt_length holds {pl.numel()} values for a batch of {batch} rows; pass one int "
                         "for the batch or one length per row")
    return torch.full((batch, 1), int(pl), dtype=torch.long, device=device)


def pooling_mask(
    features: dict[str, Any],
    *,
    exclude_prompt: bool = False,
    exclude_first_token: bool = False,
) -> Tensor:
    """Boolean ``(batch, seq)`` mask of the tokens to pool.

    Positions are counted from each row's first real token, so left and right padding give the same result.
    ``prompt_length`` may differ per row (records with their own instructions). A row that would be left empty (a
    text made only of prompt tokens) falls back to all its real tokens.
    """
    h = features["token_embeddings"]
    mask = features.get("attention_mask")
    if mask is None:
        mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
    mask = mask.bool()
    if not exclude_prompt and not exclude_first_token:
        return mask
    skip = (_prompt_lengths(features, mask.shape[0], mask.device) if exclude_prompt
            else torch.zeros(mask.shape[0], 1, dtype=torch.long, device=mask.device))
    if exclude_first_token:
        skip = skip.clamp(min=1)
    start = mask.int().argmax(dim=1, keepdim=True)  # first real token of each row
    pos = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0) - start
    keep = mask & (pos >= skip)
    empty = ~keep.any(dim=1, keepdim=True)
    return torch.where(empty, mask, keep)


def masked_mean(h: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``h`` over the positions where ``keep`` is true (pads are zeroed with ``where``, not multiplied).

    fp16/bf16 inputs are summed in float32 and the mean is cast back, as sentence-transformers' ``Pooling`` does,
    so swapping one for the other (:func:`enable_per_row_prompt_lengths`) keeps half-precision embeddings equal.
    """
    acc = torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype
    summed = torch.where(keep.unsqueeze(-1), h.to(acc), torch.zeros((), dtype=acc, device=h.device)).sum(dim=1)
    count = keep.sum(dim=1, keepdim=True).clamp(min=1).to(acc)
    return (summed / count).to(h.dtype)


def last_token(h: Tensor, mask: Tensor) -> Tensor:
    """Hidden state of the last real token of each row -- correct for left *and* right padding."""
    seq = mask.shape[1]
    idx = seq - 1 - mask.int().flip(1).argmax(dim=1)  # last position where mask is 1
    return h[torch.arange(h.shape[0], device=h.device), idx]


def first_token(h: Tensor, mask: Tensor) -> Tensor:
    """Hidden state of the first real token ([CLS] for BERT) -- correct for left and right padding."""
    idx = mask.int().argmax(dim=1)
    return h[torch.arange(h.shape[0], device=h.device), idx]


class _JsonSafetensorsModule(Module):
    """Save/load helpers: ``config.json`` + ``model.safetensors`` only (never pickle)."""

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        os.makedirs(output_path, exist_ok=True)
        self.save_config(output_path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if state:
            save_file(state, os.path.join(output_path, "model.safetensors"))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any):  # type: ignore[override]
        folder = os.path.join(model_name_or_path, subfolder)
        with open(os.path.join(folder, cls.config_file_name), encoding="utf-8") as f:
            config = json.load(f)
        module = cls(**config)
        weights = os.path.join(folder, "model.safetensors")
        if os.path.exists(weights):
            module.load_state_dict(load_file(weights))
        return module


class Pooling(_JsonSafetensorsModule):
    """Parameter-free pooling: ``mean`` (masked mean), ``cls`` (first real token) or ``last`` (last real token).

    Args:
        embedding_dimension: hidden size of the token embeddings.
        mode: ``"mean"``, ``"cls"`` or ``"last"``.
        exclude_prompt: drop instruction/prompt tokens (``features["prompt_length"]``) from mean pooling.
        exclude_first_token: drop each row's first real token from mean pooling (decoder BOS attention sinks).
    """

    config_keys = ["embedding_dimension", "mode", "exclude_prompt", "exclude_first_token"]

    def __init__(
        self,
        embedding_dimension: int,
        mode: PoolingMode = "mean",
        exclude_prompt: bool = False,
        exclude_first_token: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("mean", "cls", "last"):
            raise ValueError(f"pooling mode must be one of mean, cls, last (got {mode!r})")
        self.embedding_dimension = int(embedding_dimension)
        self.mode = mode
        self.exclude_prompt = bool(exclude_prompt)
        self.exclude_first_token = bool(exclude_first_token)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        h = features["token_embeddings"]
        mask = features.get("attention_mask")
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.long, device=h.device)
        if self.mode == "cls":
            out = first_token(h, mask)
        elif self.mode == "last":
            out = last_token(h, mask)
        else:
            keep = pooling_mask(
                features, exclude_prompt=self.exclude_prompt, exclude_first_token=self.exclude_first_token
            )
            out = masked_mean(h, keep)
        features["sentence_embedding"] = out
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension


class LatentAttentionPooling(_JsonSafetensorsModule):
    """NV-Embed latent-attention pooling, as a loadable sentence-transformers module.

    Token hidden states are the queries; a learned array of ``num_latents`` latents supplies keys and values;
    multi-head cross-attention (no mask: every token sees every latent) with a residual, then a GEGLU MLP
    (``mlp_ratio`` x hidden) with a residual, then a masked mean over the non-prompt tokens. L2 normalisation is
    the pipeline's ``Normalize`` module.

    NV-Embed uses 512 latents, 8 heads and a per-head dim of 4096 (+0.74B params on Mistral-7B); here the per-head
    dim defaults to ``hidden / heads``. The output projections of both residual branches start at zero, so a freshly
    initialised module equals masked mean pooling and fine-tuning starts from the base model's embedding space.

    Args:
        embedding_dimension: hidden size of the backbone.
        num_latents: number of learned latents (keys/values).
        num_heads: attention heads.
        head_dim: per-head dimension (default ``embedding_dimension // num_heads``).
        mlp_ratio: GEGLU MLP expansion.
        exclude_prompt / exclude_first_token: as in :class:`Pooling`, for the final mean.
    """

    config_keys = [
        "embedding_dimension",
        "num_latents",
        "num_heads",
        "head_dim",
        "mlp_ratio",
        "exclude_prompt",
        "exclude_first_token",
    ]

    def __init__(
        self,
        embedding_dimension: int,
        num_latents: int = 512,
        num_heads: int = 8,
        head_dim: int | None = None,
        mlp_ratio: int = 4,
        exclude_prompt: bool = False,
        exclude_first_token: bool = False,
    ) -> None:
        super().__init__()
        d = int(embedding_dimension)
        if num_heads < 1 or num_latents < 1 or mlp_ratio < 1:
            raise ValueError("num_heads, num_latents and mlp_ratio must be >= 1")
        if head_dim is None:
            if d % num_heads:
                raise ValueError(f"embedding_dimension {d} is not divisible by num_heads {num_heads}; set head_dim")
            head_dim = d // num_heads
        self.embedding_dimension = d
        self.num_latents = int(num_latents)
        self.num_heads = int(num_heads)
        self.head_dim = int(head_dim)
        self.mlp_ratio = int(mlp_ratio)
        self.exclude_prompt = bool(exclude_prompt)
        self.exclude_first_token = bool(exclude_first_token)
        inner = self.num_heads * self.head_dim

        self.latents = torch.nn.Parameter(torch.randn(self.num_latents, d) * d**-0.5)
        self.norm_q = torch.nn.LayerNorm(d)
        self.norm_kv = torch.nn.LayerNorm(d)
        self.to_q = torch.nn.Linear(d, inner, bias=False)
        self.to_kv = torch.nn.Linear(d, 2 * inner, bias=False)
        self.to_out = torch.nn.Linear(inner, d)
        self.norm_mlp = torch.nn.LayerNorm(d)
        self.mlp_in = torch.nn.Linear(d, 2 * self.mlp_ratio * d)
        self.mlp_out = torch.nn.Linear(self.mlp_ratio * d, d)
        for layer in (self.to_out, self.mlp_out):  # residual branches start as identity
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def transform_tokens(self, h: Tensor) -> Tensor:
        """Cross-attention to the latents + GEGLU MLP, both residual; shape-preserving ``(B, T, D)``."""
        b, t, _ = h.shape
        q = self.to_q(self.norm_q(h)).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.to_kv(self.norm_kv(self.latents.to(h.dtype))).chunk(2, dim=-1)
        k = k.view(1, self.num_latents, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(1, self.num_latents, self.num_heads, self.head_dim).transpose(1, 2)
        attn = F.scaled_dot_product_attention(q, k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1))
        h = h + self.to_out(attn.transpose(1, 2).reshape(b, t, -1))
        a, gate = self.mlp_in(self.norm_mlp(h)).chunk(2, dim=-1)
        return h + self.mlp_out(a * F.gelu(gate))

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        h = features["token_embeddings"]
        keep = pooling_mask(features, exclude_prompt=self.exclude_prompt, exclude_first_token=self.exclude_first_token)
        features["sentence_embedding"] = masked_mean(self.transform_tokens(h), keep)
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension


def reads_per_row_prompt_length(module: torch.nn.Module) -> bool:
    """Whether ``module`` pools every row right when ``features["prompt_length"]`` holds one length per row.

    embedkit's :class:`Pooling` and :class:`LatentAttentionPooling` do (see :func:`pooling_mask`), and so does any
    module that ignores prompts (sentence-transformers' ``Pooling`` with ``include_prompt=True``).
    sentence-transformers' ``Pooling`` with ``include_prompt=False`` does not: it reads ``prompt_length[0]`` for the
    whole batch, so with per-record instructions of different lengths it would drop the first row's prompt length
    from every row.

    Example:
        >>> from sentence_transformers.sentence_transformer.modules import Pooling as STPooling
        >>> reads_per_row_prompt_length(STPooling(8, include_prompt=False))
        False
        >>> reads_per_row_prompt_length(Pooling(8, exclude_prompt=True))
        True
    """
    from sentence_transformers.sentence_transformer.modules import Pooling as STPooling

    if isinstance(module, STPooling):
        return bool(module.include_prompt)
    return True


def _per_row_equivalent(module: torch.nn.Module) -> torch.nn.Module | None:
    """embedkit's :class:`Pooling` that pools as sentence-transformers' ``module`` does, or ``None``."""
    from sentence_transformers.sentence_transformer.modules import Pooling as STPooling

    if not isinstance(module, STPooling) or module.include_prompt:
        return None
    mode = module.pooling_mode
    mode = mode[0] if isinstance(mode, (tuple, list)) and len(mode) == 1 else mode
    own = {"mean": "mean", "lasttoken": "last"}.get(mode) if isinstance(mode, str) else None
    if own is None:  # cls after the prompt, max, weighted means, concatenations: no embedkit equivalent
        return None
    return Pooling(module.embedding_dimension, mode=own, exclude_prompt=True)  # type: ignore[arg-type]


def enable_per_row_prompt_lengths(model: torch.nn.Sequential) -> bool:
    """Make ``model`` pool each row without exactly its own prompt tokens where it can; ``True`` if every module
    now reads per-row prompt lengths (then pass ``per_row_prompt_lengths=True`` to the training collator).

    Training batches mix records whose own instructions differ in length, so the collator can pass one prompt
    length per row. sentence-transformers' ``Pooling`` (``include_prompt=False``) reads one length per batch; in
    ``mean`` and ``lasttoken`` mode it is replaced by embedkit's :class:`Pooling`, which gives the same embeddings
    for one shared prompt (counted from each row's first real token on either padding side; a row made only of
    prompt tokens, truncated, is the one difference: embedkit pools all its tokens, not a zero vector) and reads
    per-row lengths. Its other prompt-excluding modes (``cls`` after the prompt, ``max``, weighted means) have no
    embedkit equivalent: they stay, and the result is ``False``. Idempotent; the replacement has no parameters, so
    checkpoints and optimiser state are unaffected. A folder saved afterwards names
    ``embedkit.models.pooling.Pooling`` in ``modules.json`` and loads with :func:`embedkit.load_model` (see the
    module docstring for plain sentence-transformers).

    Example:
        >>> from embedkit.models import load_model
        >>> model = load_model("minilm", exclude_prompt=True)      # doctest: +SKIP
        >>> enable_per_row_prompt_lengths(model)                   # doctest: +SKIP
        True
        >>> type(model[1]).__module__                              # doctest: +SKIP
        'embedkit.models.pooling'
    """
    for name, module in list(model.named_children()):
        replacement = _per_row_equivalent(module)
        if replacement is not None:
            model._modules[name] = replacement.to(next(model.parameters(), torch.empty(0)).device)
    return all(reads_per_row_prompt_length(m) for m in model.children())
