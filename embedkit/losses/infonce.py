"""InfoNCE (multiple-negatives ranking) with in-batch + hard negatives, false-negative masking, hard-negative
mixing, an optional symmetric direction and focal-style hardness weighting.

For query ``i`` the candidates are every document of the batch -- each row's positive and hard negatives, so
``B x B(1+N)`` scores (or only its own ``1+N`` documents when ``in_batch_negatives`` is off) -- plus the synthetic
negatives of :class:`~embedkit.losses.mixing.HardNegativeMixing`. With ``s`` the cosine scores and ``T`` the
temperature::

    loss_i = -log softmax(s_i / T)[positive_i]
    loss   = mean_i  w_i * loss_i,    w_i = (1 - p_i) ** focal_gamma,  p_i = softmax(s_i / T)[positive_i]

The focal weight (KaLM-Embedding-V2) down-weights queries the model already solves; ``focal_gamma=0`` is plain
InfoNCE. As in focal loss the weight is part of the graph (not detached). ``symmetric=True`` averages the
query->document loss with a document->query loss (each row's positive against every query of the batch, no
focal weight; skipped when ``in_batch_negatives`` is off since a row has a single query).

**Hardness weighting** (``hardness``; LLaVE, Lan et al. 2025; the idea of sentence-transformers 6.2's
``hardness_mode``): each weighted negative's term in the softmax denominator is multiplied by a weight that grows
with its *detached* cosine, ``w_ij = exp(strength * sg(s_ij))``, so harder negatives pull harder::

    loss_i = -log( e^{s_ip/T} / (e^{s_ip/T} + sum_j w_ij e^{s_ij/T}) )

i.e. ``log w_ij`` is added to the logit of negative ``j``. With ``normalize`` (the default) the weights are
divided by their mean over the row's weighted, unmasked negatives (``w_ij = n_i exp(a s_ij) / sum_k exp(a s_ik)``),
so the loss keeps plain InfoNCE's scale -- raising ``strength`` redistributes the negatives' weight instead of
inflating the loss; ``normalize: false`` is the plain LLaVE form. ``mode`` picks the weighted negatives:
``all_negatives``, ``hard_negatives`` (the row's own mined negatives) or ``in_batch_negatives`` (other rows'
documents; nothing to weight when ``in_batch_negatives`` is off). The positive, mixed negatives and the symmetric
direction are never weighted. It composes with the focal term: ``p_i`` is then the weighted softmax's.

Masked entries (padding, :class:`~embedkit.losses.masking.FalseNegativeMasking`) get score ``-inf``.

**Teacher-aware masking** (``teacher_mask_ratio=r``; Tamber et al. 2025, who add ``0.1 x`` this loss to listwise
distillation): a row's own candidate whose *teacher* score exceeds ``r`` times the teacher's score of that row's
positive -- ``t_n > t_p - (1 - r) * |t_p|``, the TopK-PercPos form, equal to ``r * t_p`` for the positive scores
embedkit's teachers give -- is taken out of the denominator, since the teacher judges it about as relevant as the
positive. Only the row's own listed candidates have teacher scores (another row's documents, and ``NaN`` scores,
are never masked by this rule). The count per step is ``stats["teacher_masked_negatives"]``.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import InfoNCELoss, FalseNegativeMasking, HardNegativeMixing, make_batch
    >>> q = F.normalize(torch.randn(4, 16), dim=-1); d = F.normalize(torch.randn(8, 16), dim=-1)
    >>> loss_fn = InfoNCELoss(temperature=0.05, masking=FalseNegativeMasking(margin=0.1),
    ...                       mixing=HardNegativeMixing(num_mixed=2, hardest_k=4))
    >>> loss, stats = loss_fn(make_batch(q, d, docs_per_query=2))
    >>> "masked_false_negatives" in stats and "mixed_negatives" in stats
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedkit.errors import ConfigError
from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss
from embedkit.losses.config import HardnessConfig, InfoNCEConfig, loss_settings
from embedkit.losses.masking import FalseNegativeMasking
from embedkit.losses.mixing import HardNegativeMixing

NEG_INF = float("-inf")


class InfoNCELoss(EmbeddingLoss):
    """Contrastive loss over in-batch and hard negatives (see module docstring).

    Args:
        temperature: softmax temperature on cosine scores (0.01-0.05 is usual for normalised embeddings).
        symmetric: add the document->query direction.
        use_hard_negatives: score the mined negatives (``False``: positives only, i.e. classic in-batch MNRL).
        focal_gamma: hardness weighting exponent (0 = off).
        mixing: online hard-negative mixing, or ``None``.
        masking: false-negative masking, or ``None``.
        teacher_mask_ratio: mask a row's candidates that the teacher scores above this fraction of the row's
            positive (``None`` = off; needs ``teacher_scores`` in the batch).
        hardness: logit hardness weighting of the negatives (:class:`~embedkit.losses.config.HardnessConfig` or
            its dict, e.g. ``{"mode": "all_negatives", "strength": 5.0}``; ``None`` = off).
    """

    def __init__(
        self,
        temperature: float = 0.05,
        symmetric: bool = False,
        use_hard_negatives: bool = True,
        focal_gamma: float = 0.0,
        mixing: HardNegativeMixing | None = None,
        masking: FalseNegativeMasking | None = None,
        teacher_mask_ratio: float | None = None,
        hardness: HardnessConfig | dict | None = None,
    ) -> None:
        super().__init__()
        if isinstance(hardness, HardnessConfig):
            hardness = hardness.model_dump()
        cfg = loss_settings(InfoNCEConfig, "losses.infonce", temperature=temperature, symmetric=symmetric,
                            use_hard_negatives=use_hard_negatives, focal_gamma=focal_gamma,
                            teacher_mask_ratio=teacher_mask_ratio, hardness=hardness)
        self.hardness = cfg.hardness
        self.temperature = cfg.temperature
        self.symmetric = cfg.symmetric
        self.use_hard_negatives = cfg.use_hard_negatives
        self.focal_gamma = cfg.focal_gamma
        self.mixing = mixing
        self.masking = masking
        self.teacher_mask_ratio = cfg.teacher_mask_ratio

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, symmetric={self.symmetric}, "
                f"use_hard_negatives={self.use_hard_negatives}, focal_gamma={self.focal_gamma}, "
                f"masking={self.masking!r}, teacher_mask_ratio={self.teacher_mask_ratio}, "
                f"hardness={None if self.hardness is None else self.hardness.model_dump()}")

    @torch.no_grad()
    def hardness_log_weights(self, scores: Tensor, keep: Tensor, own: Tensor, labels: Tensor) -> Tensor:
        """``(b, C)`` detached ``log w`` added to the negatives' logits (0 where not weighted; see the module
        docstring). ``own`` marks each row's own slots (positive and mined negatives)."""
        assert self.hardness is not None
        h = self.hardness
        weighted = keep.clone()
        weighted.scatter_(1, labels.unsqueeze(1), False)  # never the positive
        if h.mode == "hard_negatives":
            weighted &= own
        elif h.mode == "in_batch_negatives":
            weighted &= ~own
        a = h.strength * scores.detach().float()
        logw = torch.where(weighted, a, torch.zeros_like(a))
        if h.normalize:
            n = weighted.sum(1, keepdim=True)
            lse = torch.logsumexp(a.masked_fill(~weighted, NEG_INF), dim=1, keepdim=True)
            norm = torch.where(n > 0, lse - torch.log(n.clamp(min=1).float()), torch.zeros_like(lse))
            logw = torch.where(weighted, a - norm, torch.zeros_like(a))
        return logw

    @torch.no_grad()
    def teacher_mask(self, batch: EmbeddingBatch, width: int) -> Tensor:
        """``(b, width)`` bool: the local rows' own candidates the teacher rule masks (never the positive)."""
        if batch.teacher_scores is None:
            raise ConfigError(
                "teacher-aware masking needs teacher scores in the batch", where="losses.infonce.teacher_mask_ratio",
                hint="mine negatives with a teacher (positive_scores / negative_scores) or unset teacher_mask_ratio",
            )
        assert self.teacher_mask_ratio is not None
        t = batch.teacher_scores[batch.rows, :width].float().to(batch.q.device)
        pos = t[:, :1]
        out = t > pos - (1.0 - self.teacher_mask_ratio) * pos.abs()  # NaN on either side compares False
        out[:, 0] = False
        return out & batch.valid_mask()[batch.rows, :width]

    def forward(self, batch: EmbeddingBatch) -> tuple[Tensor, dict[str, float]]:
        rows = batch.rows
        q_all = batch.q.float()
        docs = batch.docs.float()
        valid = batch.valid_mask()
        hashes = batch.doc_hash
        if not self.use_hard_negatives:
            docs, valid = docs[:, :1], valid[:, :1]
            hashes = None if hashes is None else hashes[:, :1]
        total, width, dim = docs.shape
        qi = q_all[rows]
        b = qi.shape[0]
        dev = qi.device
        row_ids = torch.arange(rows.start, rows.stop, device=dev)
        pos_hash = None if hashes is None else hashes[rows, 0]

        if batch.in_batch_negatives:
            cand = docs.reshape(total * width, dim)
            scores = qi @ cand.T  # (b, total * width)
            labels = row_ids * width
            cand_valid = valid.reshape(1, -1).expand(b, -1)
            col_hash = None if hashes is None else hashes.reshape(-1)
        else:
            cand = docs[rows]  # (b, width, D)
            scores = torch.einsum("bd,bkd->bk", qi, cand)
            labels = torch.zeros(b, dtype=torch.long, device=dev)
            cand_valid = valid[rows]
            col_hash = None if hashes is None else hashes[rows]

        stats: dict[str, float] = {}
        keep = cand_valid
        if self.masking is not None:
            masked = self.masking.find(scores, labels, cand_valid, col_hash, pos_hash)
            keep = cand_valid & ~masked
            stats["masked_false_negatives"] = float(masked.sum().item())
        if self.teacher_mask_ratio is not None:
            own = self.teacher_mask(batch, width)  # (b, width): the row's own slots
            if batch.in_batch_negatives:  # the row's own slots are columns row * width + j
                by_teacher = torch.zeros_like(keep)
                cols = (row_ids.unsqueeze(1) * width + torch.arange(width, device=dev)).reshape(b, width)
                by_teacher.scatter_(1, cols, own)
            else:
                by_teacher = own
            stats["teacher_masked_negatives"] = float((by_teacher & keep).sum().item())
            keep = keep & ~by_teacher

        logits = scores.masked_fill(~keep, NEG_INF)
        log_w = None
        if self.hardness is not None:
            if batch.in_batch_negatives:
                own = (torch.arange(total * width, device=dev).unsqueeze(0) // width) == row_ids.unsqueeze(1)
            else:
                own = torch.ones_like(keep)
            log_w = self.hardness_log_weights(scores, keep, own, labels)
        if self.mixing is not None:
            mix = self.mixing.mix(qi, cand, scores, labels, keep, row_ids=row_ids, total_rows=total)
            extra = torch.einsum("bd,bmd->bm", qi, mix.emb).masked_fill(~mix.valid, NEG_INF)
            logits = torch.cat([logits, extra], dim=1)
            stats["mixed_negatives"] = float(mix.valid.sum().item())

        z = logits / self.temperature
        if log_w is not None:  # the weight multiplies the negative's exp term; mixed negatives (appended) are not
            z = torch.cat([z[:, :log_w.shape[1]] + log_w, z[:, log_w.shape[1]:]], dim=1)
        logp = F.log_softmax(z, dim=1)
        nll = -logp[torch.arange(b, device=dev), labels]
        p_pos = torch.exp(-nll)
        if self.focal_gamma > 0:
            loss_qd = ((1.0 - p_pos).clamp(min=0.0).pow(self.focal_gamma) * nll).mean()
        else:
            loss_qd = nll.mean()
        loss = loss_qd
        stats["accuracy"] = float((logits.argmax(dim=1) == labels).float().mean().item()) if b else 0.0
        stats["p_positive"] = float(p_pos.detach().mean().item()) if b else 0.0

        if self.symmetric and batch.in_batch_negatives:
            pos = docs[rows, 0]  # (b, D)
            s_dq = pos @ q_all.T  # (b, total): each positive against every query
            lab = row_ids
            keep_dq = torch.ones_like(s_dq, dtype=torch.bool)
            if self.masking is not None:
                qh = None if hashes is None else hashes[:, 0]
                masked_dq = self.masking.find(s_dq, lab, keep_dq, qh, pos_hash)
                keep_dq = ~masked_dq
                stats["masked_false_negatives_dq"] = float(masked_dq.sum().item())
            logp_dq = F.log_softmax(s_dq.masked_fill(~keep_dq, NEG_INF) / self.temperature, dim=1)
            loss_dq = -logp_dq[torch.arange(b, device=dev), lab].mean()
            stats["loss_qd"] = float(loss_qd.detach().item())
            stats["loss_dq"] = float(loss_dq.detach().item())
            loss = (loss_qd + loss_dq) / 2
        stats["loss"] = float(loss.detach().item())
        return loss, stats
