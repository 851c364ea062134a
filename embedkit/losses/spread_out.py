"""The spread-out regulariser (global orthogonal regularisation, Zhang et al. 2017; EmbeddingGemma 2025).

Contrastive losses pull each query to its positive but say little about how the whole space is used; the
spread-out term pushes unrelated embeddings of a batch towards orthogonality, which keeps them spread over the
sphere -- the property that lets an embedding survive truncation (Matryoshka) and quantisation. For ``n``
L2-normalised embeddings ``e_1..e_n`` of dimension ``d`` (``n >= 2``) and their off-diagonal cosines
``s_ij = e_i . e_j`` (``i != j``)::

    M1 = mean_{i != j} s_ij,   M2 = mean_{i != j} s_ij ** 2
    form "second_moment" (EmbeddingGemma, the default):   R = M2
    form "gor" (Zhang et al. 2017's GOR):                  R = M1 ** 2 + max(0, M2 - 1 / d)

(``1/d`` is the second moment of independent uniform directions on the sphere, so GOR stops pushing there.) ``over``
chooses the embeddings: ``queries`` (the batch's queries) or ``queries_and_positives`` (default: ``R(queries) +
R(positives)``; hard negatives are left to the contrastive term, they are meant to be close to the positive).
Rows whose embeddings are all zero cannot occur (the positive slot is always valid).

**Across devices the regulariser is computed over the gathered batch** -- every rank's queries and positives,
not only the local rows -- and each rank computes the same value: with the all-gather that keeps gradients, DDP's
gradient average then equals the gradient one process computes on the whole batch (tested in
``tests/test_spread_out.py``), whereas a per-rank value would drop every cross-rank pair. With GradCache it is a
function of the cached embeddings like every embedkit loss, so cached and uncached gradients agree.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import SpreadOutLoss, make_batch
    >>> q = F.normalize(torch.randn(4, 8), dim=-1); d = F.normalize(torch.randn(4, 8), dim=-1)
    >>> loss, stats = SpreadOutLoss(over="queries")(make_batch(q, d, 1))
    >>> bool(loss >= 0), sorted(stats)
    (True, ['loss', 'spread_out_m1_queries', 'spread_out_m2_queries'])
"""

from __future__ import annotations

import torch
from torch import Tensor

from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss
from embedkit.losses.config import SpreadOutConfig, loss_settings

__all__ = ["SpreadOutLoss", "spread_out_moments"]


def spread_out_moments(emb: Tensor) -> tuple[Tensor, Tensor]:
    """``(M1, M2)``: the mean and the mean square of the off-diagonal cosines of ``emb`` ``(n, d)``; zeros (with
    a graph) for ``n < 2``. ``emb`` is re-normalised, so the moments are those of cosines whatever its norm.

    Example:
        >>> m1, m2 = spread_out_moments(torch.eye(3))       # orthogonal: both moments are 0
        >>> float(m1), float(m2)
        (0.0, 0.0)
    """
    n = emb.shape[0]
    if n < 2:
        zero = emb.sum() * 0.0
        return zero, zero
    e = torch.nn.functional.normalize(emb.float(), dim=-1)
    sim = e @ e.T
    off = ~torch.eye(n, dtype=torch.bool, device=e.device)
    s = sim[off]
    return s.mean(), s.pow(2).mean()


class SpreadOutLoss(EmbeddingLoss):
    """The spread-out / GOR regulariser of the batch's queries (and positives); see the module docstring.

    Args:
        over: ``"queries"`` or ``"queries_and_positives"``.
        form: ``"second_moment"`` (``R = M2``) or ``"gor"`` (``R = M1**2 + max(0, M2 - 1/d)``).
    """

    def __init__(self, over: str = "queries_and_positives", form: str = "second_moment") -> None:
        super().__init__()
        cfg = loss_settings(SpreadOutConfig, "losses.spread_out", over=over, form=form)
        self.over = cfg.over
        self.form = cfg.form

    def extra_repr(self) -> str:
        return f"over={self.over!r}, form={self.form!r}"

    def _term(self, emb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m1, m2 = spread_out_moments(emb)
        if self.form == "gor":
            return m1.pow(2) + torch.clamp(m2 - 1.0 / emb.shape[-1], min=0.0), m1, m2
        return m2, m1, m2

    def forward(self, batch: EmbeddingBatch) -> tuple[Tensor, dict[str, float]]:
        # every row, not batch.rows: the gathered batch's value (see "Across devices" in the module docstring)
        groups = {"queries": batch.q}
        if self.over == "queries_and_positives":
            groups["positives"] = batch.docs[:, 0]
        loss: Tensor | None = None
        stats: dict[str, float] = {}
        for name, emb in groups.items():
            r, m1, m2 = self._term(emb)
            loss = r if loss is None else loss + r
            stats[f"spread_out_m1_{name}"] = float(m1.detach().item())
            stats[f"spread_out_m2_{name}"] = float(m2.detach().item())
        assert loss is not None
        stats["loss"] = float(loss.detach().item())
        return loss, stats
