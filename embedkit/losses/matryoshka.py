"""Matryoshka representation learning (Kusupati et al. 2022; EmbeddingGemma's 768/512/256/128): one loss summed
over prefixes of the embedding, so that its first ``d`` dimensions are a good embedding on their own.

For dims ``d_1..d_k`` with weights ``w_1..w_k`` (1 each by default) and the wrapped loss ``L`` (every component of
the recipe's losses -- InfoNCE, the distillation losses and the spread-out regulariser alike)::

    loss = sum_k  w_k * L(batch truncated to its first d_k dimensions and re-normalised)

Truncation re-normalises because embedkit's losses take dot products as cosines; ``embedkit eval --dims`` and
:func:`truncate` score the same way. The wrapped loss only ever sees embeddings, so the sum is as
GradCache-compatible as any embedkit loss (cached == uncached gradients, tested). A dim larger than the model's
dimension is refused with a one-line :class:`~embedkit.errors.ConfigError` naming ``losses.matryoshka.dims``
(:func:`check_dims` as soon as the model is known, else on the first batch). A wrapped
:class:`~embedkit.losses.mixing.HardNegativeMixing` draws once per dim (its step counts loss calls), still
deterministically.

Stats: ``"loss"`` (the weighted sum) and ``"dim<d>/<key>"`` for each dim's own stats; the other stat keys (e.g.
``accuracy``) are those of the largest dim, so logs read the same with and without Matryoshka.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import InfoNCELoss, MatryoshkaLoss, make_batch
    >>> q = F.normalize(torch.randn(4, 16), dim=-1); d = F.normalize(torch.randn(8, 16), dim=-1)
    >>> loss, stats = MatryoshkaLoss(InfoNCELoss(), dims=[16, 8, 4])(make_batch(q, d, 2))
    >>> sorted(k for k in stats if k.endswith("/loss"))
    ['dim16/loss', 'dim4/loss', 'dim8/loss']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch.nn.functional as F
from torch import Tensor

from embedkit.errors import ConfigError
from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss
from embedkit.losses.config import MatryoshkaConfig, loss_settings

__all__ = ["MatryoshkaLoss", "check_dims", "truncate"]

KEY = "losses.matryoshka.dims"


def truncate(emb: Tensor, dim: int) -> Tensor:
    """The first ``dim`` dimensions of ``emb`` (any leading shape), L2-normalised again (zero rows stay zero).

    Example:
        >>> import torch
        >>> truncate(torch.tensor([[3.0, 4.0, 12.0]]), 2)
        tensor([[0.6000, 0.8000]])
    """
    return F.normalize(emb[..., :dim], dim=-1)


def check_dims(dims: Sequence[int], model_dim: int | None, where: str = KEY) -> None:
    """Refuse dims larger than the model's embedding dimension (``None``: unknown, nothing to check).

    Example:
        >>> check_dims([384, 128], 384)
        >>> check_dims([512, 128], 384)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        embedkit.errors.ConfigError: losses.matryoshka.dims: 512 is larger than the model's embedding dimension 384 ...
    """
    if model_dim is None:
        return
    too_big = [d for d in dims if d > model_dim]
    if too_big:
        raise ConfigError(
            f"{', '.join(map(str, too_big))} {'is' if len(too_big) == 1 else 'are'} larger than the model's "
            f"embedding dimension {model_dim}", where=where,
            hint=f"use dims of at most {model_dim}, e.g. [{model_dim}, {max(1, model_dim // 2)}, "
                 f"{max(1, model_dim // 4)}]",
        )


class MatryoshkaLoss(EmbeddingLoss):
    """``sum_k w_k * inner(truncate(batch, d_k))`` (see the module docstring).

    Args:
        inner: the loss to repeat at every dim (a :class:`~embedkit.losses.combined.CombinedLoss` for several).
        dims: prefix lengths, e.g. ``[384, 256, 128, 64]``.
        weights: one weight per dim (default 1 each).
    """

    def __init__(self, inner: EmbeddingLoss, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        cfg = loss_settings(MatryoshkaConfig, "losses.matryoshka", dims=list(dims),
                            weights=None if weights is None else list(weights))
        self.inner = inner
        self.dims = list(cfg.dims)
        self.weights = cfg.dim_weights()

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights}"

    def forward(self, batch: EmbeddingBatch) -> tuple[Tensor, dict[str, float]]:
        check_dims(self.dims, int(batch.q.shape[-1]))
        total: Tensor | None = None
        out: dict[str, float] = {}
        top = max(self.dims)
        for dim, weight in zip(self.dims, self.weights):
            sub = replace(batch, q=truncate(batch.q, dim), docs=truncate(batch.docs, dim))
            loss, stats = self.inner(sub)
            term = loss * weight
            total = term if total is None else total + term
            out.update({f"dim{dim}/{k}": v for k, v in stats.items()})
            if dim == top:
                out.update({k: v for k, v in stats.items() if k != "loss"})
        assert total is not None
        out["loss"] = float(total.detach().item())
        return total, out
