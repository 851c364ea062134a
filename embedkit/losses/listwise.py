"""Listwise distillation: match the student's score distribution over each query's own documents to a teacher's.

For query ``i`` with documents ``[positive, negatives...]`` (its own row only -- in-batch documents have no
teacher score)::

    p_t = softmax(t_i / teacher_temperature),  p_s = softmax(s_i / temperature)
    loss = mean_i KL(p_t || p_s) = mean_i sum_j p_t[j] * (log p_t[j] - log p_s[j])

The mean runs over every row this process computes: a row without a ranking to distil (no teacher scores, or only
one scored slot) adds 0. A mean over the scored rows only would not split over ranks: the trainer weights each
rank's loss by its share of the rows so that DDP's gradient average equals the single-process batch, and that
needs a plain mean over the local rows (``distilled_rows`` in the stats counts the rows with a ranking).

``t`` are the teacher scores the miner stored (``Pair.positive_scores`` / ``negative_scores``), ``s`` the student's
cosines. Padding slots and slots with an unknown (``NaN``) teacher score are left out of both softmaxes, so ragged
rows are handled exactly. This is the RocketQAv2 / BGE-M3 style of distillation, and Tamber et al. (2025)'s
listwise loss over a teacher-scored candidate list (student temperature 0.05, teacher 0.3: the defaults); they add
``0.1 x`` :class:`~embedkit.losses.infonce.InfoNCELoss` with ``teacher_mask_ratio`` through
:class:`~embedkit.losses.combined.CombinedLoss`.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import ListwiseDistillationLoss, make_batch
    >>> q = F.normalize(torch.randn(2, 8), dim=-1); d = F.normalize(torch.randn(6, 8), dim=-1)
    >>> batch = make_batch(q, d, 3, teacher_scores=torch.tensor([9.0, 2.0, 1.0, 8.0, 7.0, 0.0]))
    >>> loss, stats = ListwiseDistillationLoss(temperature=0.05)(batch)
    >>> bool(loss >= 0)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss
from embedkit.losses.config import ListwiseConfig, loss_settings


class ListwiseDistillationLoss(EmbeddingLoss):
    """KL(teacher || student) over each row's positive + hard negatives (see module docstring).

    Args:
        temperature: student temperature on cosine scores.
        teacher_temperature: temperature applied to the teacher's scores (their scale depends on the teacher). The
            default is 0.3, not 1.0: embedkit's teachers score in ``(0, 1)`` (sigmoid cross-encoders, cosine
            bi-encoders), where 1.0 gives a nearly flat teacher distribution; raw-logit teachers want about 1-2.
    """

    def __init__(self, temperature: float = 0.05, teacher_temperature: float = 0.3) -> None:
        super().__init__()
        cfg = loss_settings(ListwiseConfig, "losses.listwise", temperature=temperature,
                            teacher_temperature=teacher_temperature)
        self.temperature = cfg.temperature
        self.teacher_temperature = cfg.teacher_temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, teacher_temperature={self.teacher_temperature}"

    def forward(self, batch: EmbeddingBatch) -> tuple[Tensor, dict[str, float]]:
        qi, docs, teacher = batch.teacher_rows("losses.listwise", "listwise distillation")
        rows = batch.rows
        keep = batch.valid_mask()[rows] & torch.isfinite(teacher)
        student = torch.einsum("bd,bkd->bk", qi, docs) / self.temperature
        log_ps = F.log_softmax(student.masked_fill(~keep, float("-inf")), dim=1)
        log_pt = F.log_softmax(
            torch.where(keep, teacher, torch.zeros_like(teacher)).div(self.teacher_temperature)
            .masked_fill(~keep, float("-inf")),
            dim=1,
        )
        pt = log_pt.exp()
        # 0 * (-inf) would be NaN: only kept slots contribute
        kl_terms = torch.where(keep, pt * (log_pt - log_ps), torch.zeros_like(pt))
        kl = kl_terms.sum(dim=1)
        ranked = keep.sum(dim=1) >= 2  # rows with a ranking to distil (the others add 0: see the module docstring)
        loss = kl.mean() if kl.numel() else student.sum() * 0.0
        with torch.no_grad():
            hit = student.masked_fill(~keep, float("-inf")).argmax(1) == log_pt.argmax(1)
            agree = hit[ranked].float().mean() if bool(ranked.any()) else torch.tensor(0.0)
        return loss, {"loss": float(loss.detach().item()), "teacher_top1_agreement": float(agree.item()),
                      "distilled_rows": float(ranked.sum().item())}
