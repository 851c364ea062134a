"""A weighted sum of embedding losses, e.g. InfoNCE + listwise distillation (NV-Embed / BGE-M3 style).

Each component sees the same :class:`~embedkit.losses.base.EmbeddingBatch` (so GradCache runs the encoder once for
all of them). Stats are merged: ``"<name>/<key>"`` for every component's stat, ``"loss"`` for the weighted total,
and each component key that only one component reports (e.g. ``"masked_false_negatives"``) also unprefixed, so
the trainer finds it under the same name whether or not the loss is combined.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import CombinedLoss, InfoNCELoss, ListwiseDistillationLoss, make_batch
    >>> loss_fn = CombinedLoss({"infonce": (InfoNCELoss(), 1.0), "kd": (ListwiseDistillationLoss(), 0.5)})
    >>> q = F.normalize(torch.randn(2, 8), dim=-1); d = F.normalize(torch.randn(4, 8), dim=-1)
    >>> loss, stats = loss_fn(make_batch(q, d, 2, teacher_scores=torch.randn(4)))
    >>> sorted(k for k in stats if k.endswith("/loss"))
    ['infonce/loss', 'kd/loss']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import torch
from torch import Tensor

from embedkit.errors import ConfigError
from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss


class CombinedLoss(EmbeddingLoss):
    """``sum(weight * loss)`` over named components ``{name: (loss, weight)}``."""

    def __init__(self, components: Mapping[str, tuple[EmbeddingLoss, float]]) -> None:
        super().__init__()
        if not components:
            raise ConfigError("no loss components given", where="losses", hint="add at least one loss")
        self.losses = torch.nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for name, (loss, weight) in components.items():
            if "/" in name or "." in name:
                raise ConfigError(f"loss name {name!r} may not contain '/' or '.'", where=f"losses.{name}")
            if not weight >= 0:
                raise ConfigError(f"weight must be >= 0, got {weight}", where=f"losses.{name}.weight")
            self.losses[name] = loss
            self.weights[name] = float(weight)

    def forward(self, batch: EmbeddingBatch) -> tuple[Tensor, dict[str, float]]:
        total: Tensor | None = None
        parts: dict[str, dict[str, float]] = {}
        for name, loss_fn in self.losses.items():
            loss, stats = loss_fn(batch)
            parts[name] = stats
            term = loss * self.weights[name]
            total = term if total is None else total + term
        assert total is not None
        out: dict[str, float] = {}
        counts = Counter(k for stats in parts.values() for k in stats)
        for name, stats in parts.items():
            for k, v in stats.items():
                out[f"{name}/{k}"] = v
                if counts[k] == 1 and k != "loss":
                    out[k] = v
        out["loss"] = float(total.detach().item())
        return total, out


#: alias: the same thing under the name other toolkits use
WeightedSum = CombinedLoss
