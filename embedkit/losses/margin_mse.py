"""Margin-MSE distillation (Hofstätter et al. 2020; GPL, Wang et al. 2022): match score *differences* to a teacher's.

For query ``i`` with positive ``p`` and each of its own hard negatives ``n`` that has a teacher score::

    loss = mean over (i, n) of ((scale * (s(q_i, p) - s(q_i, n))) - (t(q_i, p) - t(q_i, n))) ** 2

``s`` are the student's scores as embedkit computes them -- cosines, since the model pipeline L2-normalises the
embeddings (so a student margin lies in ``[-2, 2]``) -- and ``t`` the teacher scores the miner stored
(``Pair.positive_scores`` / ``negative_scores``). Only margins are compared, so the teacher's offset does not matter,
but its *spread* does: ``scale`` brings the student's margin to the teacher's units. 1.0 suits the teachers embedkit
loads (a one-label ``CrossEncoder`` scores in ``(0, 1)`` through its sigmoid; a bi-encoder teacher gives cosines);
for raw-logit teachers (margins of 5-15, as in the original paper's BERT-CAT) use ``scale`` of about 10.

Negatives of other rows have no teacher score and are not used; padding slots and ``NaN`` teacher scores are
skipped (a row without a positive teacher score contributes nothing). Each (query, negative) triple counts once, as
in sentence-transformers' ``MarginMSELoss`` with several negatives.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import MarginMSELoss, make_batch
    >>> q = F.normalize(torch.randn(2, 8), dim=-1); d = F.normalize(torch.randn(6, 8), dim=-1)
    >>> batch = make_batch(q, d, 3, teacher_scores=torch.tensor([0.9, 0.2, 0.1, 0.8, 0.7, 0.0]))
    >>> loss, stats = MarginMSELoss()(batch)
    >>> bool(loss >= 0), stats["pairs"]
    (True, 4.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss
from embedkit.losses.config import MarginMSEConfig, loss_settings

__all__ = ["MarginMSELoss"]


class MarginMSELoss(EmbeddingLoss):
    """MSE between the student's and the teacher's positive-negative margins (see module docstring).

    Args:
        scale: multiplies the student's cosine margin to bring it to the teacher's score units.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = loss_settings(MarginMSEConfig, "losses.margin_mse", scale=scale).scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def forward(self, batch: EmbeddingBatch) -> tuple[Tensor, dict[str, float]]:
        qi, docs, teacher = batch.teacher_rows("losses.margin_mse", "margin-MSE distillation")
        rows = batch.rows
        student = torch.einsum("bd,bkd->bk", qi, docs) * self.scale
        known = torch.isfinite(teacher) & batch.valid_mask()[rows]
        use = known[:, 1:] & known[:, :1]  # (b, N): negatives with a score, in rows whose positive has one
        t = torch.where(known, teacher, torch.zeros_like(teacher))  # no NaN reaches the graph
        diff = (student[:, :1] - student[:, 1:]) - (t[:, :1] - t[:, 1:])
        n = int(use.sum().item())
        # per row: the mean over its scored negatives (0 without any); then the mean over every local row, so the
        # loss splits exactly over ranks (the trainer weights each rank by its share of the rows)
        per_row = torch.where(use, diff, torch.zeros_like(diff)).pow(2).sum(1) / use.sum(1).clamp(min=1)
        loss = per_row.mean() if per_row.numel() else student.sum() * 0.0
        with torch.no_grad():
            agree = ((student[:, :1] > student[:, 1:]) == (t[:, :1] > t[:, 1:]))[use].float().mean() if n \
                else torch.tensor(0.0)
        return loss, {"loss": float(loss.detach().item()), "pairs": float(n),
                      "margin_sign_agreement": float(agree.item())}
