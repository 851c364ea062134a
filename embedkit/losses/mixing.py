"""Online hard-negative mixing (MoCHi, Kalantidis et al. 2020; used by KaLM-Embedding-V2).

For each query the hardest negatives of the current batch (in-batch and mined, after false-negative masking) are
mixed into *synthetic* negatives that are harder still, which the loss appends as extra logits:

* negative-negative mixes: ``h = a * n_i + (1 - a) * n_j`` for two distinct negatives among the query's
  ``hardest_k``, ``a ~ U(0, 1)``;
* query-negative mixes (``mix_query``): ``h = b * q + (1 - b) * n_j`` with ``b ~ U(0, alpha_max)`` and
  ``alpha_max <= 0.5``, so the negative dominates and the mix stays a negative;

each L2-normalised (points on the arc between their sources).

**Gradients.** The synthetic negatives are *detached*, as in MoCHi: gradient reaches the query through
``q . h`` but never the source documents through ``h``. Letting it flow would push real documents around by their
synthetic mixtures (and pull the query towards itself through query mixes), which MoCHi avoids; it also keeps
GradCache exact, since only the cached query/document embeddings carry gradient.

**When to use it.** Mixing makes the task harder; it is meant for long runs whose mined negatives have become
easy. On the Debian quality benchmark (all-MiniLM-L6-v2, 40 steps, BENCHMARKS.md) adding 8 negative-negative
mixes of the 4 hardest negatives cost 1.4 nDCG@10 points, and query-negative mixes at ``alpha_max=0.5`` scored
above the positive on the base model (mean p(positive) 0.82 -> 0.14 on 64 real pairs). So the shipped recipes
leave mixing off and ``mix_query`` is opt-in; measure on your held-out split before switching it on.

**Determinism.** Draws come from a ``torch.Generator`` seeded with ``(seed, step)``; ``step`` counts loss calls and
is part of the module's ``state_dict`` (restore it to resume exactly). Random numbers are drawn for every row of the
(global) batch and indexed by row, so a 2-rank run with cross-device negatives mixes exactly like one process with
the full batch, and GradCache mixes exactly like the uncached computation.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from embedkit.losses import HardNegativeMixing
    >>> mix = HardNegativeMixing(num_mixed=4, hardest_k=3, mix_query=True, seed=0)
    >>> q = F.normalize(torch.randn(2, 8), dim=-1); cand = F.normalize(torch.randn(6, 8), dim=-1)
    >>> res = mix.mix(q, cand, q @ cand.T, labels=torch.tensor([0, 3]))
    >>> res.emb.shape, bool(torch.allclose(res.emb.norm(dim=-1), torch.ones(2, 8)))
    (torch.Size([2, 8, 8]), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from embedkit.losses.config import MixingConfig, loss_settings


@dataclass
class MixResult:
    """Synthetic negatives for ``b`` rows; ``M = num_mixed + num_query_mixed``.

    Attributes:
        emb: ``(b, M, D)`` unit-norm synthetic negatives (detached).
        valid: ``(b, M)`` bool; ``False`` where a row had too few negatives to mix.
        src: ``(b, M, 2)`` candidate columns of the sources; for query mixes ``src[..., 0] == -1`` (the query).
        weight: ``(b, M)`` weight of the first source (``a`` or the query weight ``b``) before normalisation.
    """

    emb: Tensor
    valid: Tensor
    src: Tensor
    weight: Tensor


class HardNegativeMixing(torch.nn.Module):
    """Synthesise extra hard negatives per query (see module docstring).

    Args:
        num_mixed: negative-negative mixes per query.
        hardest_k: how many of the query's hardest negatives are mixed.
        mix_query: also make query-negative mixes (off by default, see "When to use it").
        num_query_mixed: their count (default: ``num_mixed``).
        alpha_max: largest query weight in query-negative mixes (``<= 0.5``).
        seed: base seed of the draws.
    """

    def __init__(
        self,
        num_mixed: int = 8,
        hardest_k: int = 8,
        mix_query: bool = False,
        num_query_mixed: int | None = None,
        alpha_max: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # the bounds live in MixingConfig (alpha_max <= 0.5: a heavier query weight would make the mix closer to
        # the query than to the negative)
        cfg = loss_settings(MixingConfig, "losses.infonce.mixing", num_mixed=num_mixed, hardest_k=hardest_k,
                            mix_query=mix_query, num_query_mixed=num_query_mixed, alpha_max=alpha_max, seed=seed)
        self.num_mixed = cfg.num_mixed
        self.hardest_k = cfg.hardest_k
        self.mix_query = cfg.mix_query
        self.num_query_mixed = (cfg.num_query_mixed if cfg.num_query_mixed is not None else cfg.num_mixed) \
            if cfg.mix_query else 0
        self.alpha_max = cfg.alpha_max
        self.seed = cfg.seed
        self.step = 0

    def extra_repr(self) -> str:
        return (f"num_mixed={self.num_mixed}, hardest_k={self.hardest_k}, num_query_mixed={self.num_query_mixed}, "
                f"alpha_max={self.alpha_max}, seed={self.seed}")

    # the call counter travels in state_dict so that a resumed run draws the same numbers
    def get_extra_state(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.seed = int(state.get("seed", self.seed))

    def generator(self, step: int | None = None) -> torch.Generator:
        """The CPU generator of call ``step`` (default: the current one)."""
        step = self.step if step is None else step
        return torch.Generator().manual_seed((self.seed * 0x9E3779B1 + step * 0x85EBCA6B + 1) % (2**63 - 1))

    @torch.no_grad()
    def mix(
        self,
        q: Tensor,
        cand: Tensor,
        scores: Tensor,
        labels: Tensor,
        valid: Tensor | None = None,
        row_ids: Tensor | None = None,
        total_rows: int | None = None,
        advance: bool = True,
    ) -> MixResult:
        """Make the synthetic negatives of ``b`` queries.

        Args:
            q: ``(b, D)`` queries.
            cand: ``(C, D)`` candidates shared by all rows (in-batch) or ``(b, C, D)`` per row.
            scores: ``(b, C)`` query-candidate scores (hardness ranking).
            labels: ``(b,)`` column of each row's positive (never a source).
            valid: ``(b, C)`` bool, usable negatives (padding and masked false negatives are ``False``).
            row_ids: ``(b,)`` global row index of each query (default ``arange(b)``); draws are per global row.
            total_rows: rows in the global batch (default ``b``).
            advance: increment ``step`` afterwards.
        """
        b, c = scores.shape
        dev = q.device
        d = q.shape[-1]
        m1, m2 = self.num_mixed, self.num_query_mixed
        total = b if total_rows is None else int(total_rows)
        rid = torch.arange(b) if row_ids is None else row_ids.detach().cpu().long()
        g = self.generator()
        u = torch.rand(total, m1, 3, generator=g)[rid].to(dev, torch.float32)
        v = torch.rand(total, m2, 2, generator=g)[rid].to(dev, torch.float32)
        if advance:
            self.step += 1

        s = scores.detach().float().clone()
        if valid is not None:
            s = s.masked_fill(~valid, float("-inf"))
        rows = torch.arange(b, device=dev)
        s[rows, labels] = float("-inf")
        k = min(self.hardest_k, c)
        top_s, top_i = s.topk(k, dim=1)  # (b, k), hardest first
        n_valid = torch.isfinite(top_s).sum(dim=1, keepdim=True)  # (b, 1)
        nv = n_valid.clamp(min=1).float()

        def take(cols: Tensor) -> Tensor:  # cols (b, m) candidate columns -> (b, m, D)
            if cand.dim() == 2:
                return cand.detach().float()[cols]
            idx = cols.unsqueeze(-1).expand(-1, -1, d)
            return torch.gather(cand.detach().float(), 1, idx)

        # negative-negative: two distinct positions i != j among the row's valid hardest
        i = (u[..., 0] * nv).long().clamp(max=k - 1)
        off = 1 + (u[..., 1] * (nv - 1).clamp(min=0)).long()
        j = torch.remainder(i + off, n_valid.clamp(min=1))
        a = u[..., 2]
        ci, cj = top_i.gather(1, i), top_i.gather(1, j)
        h_nn = a.unsqueeze(-1) * take(ci) + (1 - a).unsqueeze(-1) * take(cj)
        ok_nn = (n_valid >= 2).expand(b, m1)

        # query-negative: query weight beta < alpha_max <= 0.5
        jq = (v[..., 0] * nv).long().clamp(max=k - 1)
        beta = v[..., 1] * self.alpha_max
        cq = top_i.gather(1, jq)
        h_qn = beta.unsqueeze(-1) * q.detach().float().unsqueeze(1) + (1 - beta).unsqueeze(-1) * take(cq)
        ok_qn = (n_valid >= 1).expand(b, m2)

        emb = F.normalize(torch.cat([h_nn, h_qn], dim=1), dim=-1)
        src = torch.cat([torch.stack([ci, cj], -1), torch.stack([torch.full_like(cq, -1), cq], -1)], dim=1)
        return MixResult(
            emb=emb.detach(),
            valid=torch.cat([ok_nn, ok_qn], dim=1),
            src=src,
            weight=torch.cat([a, beta], dim=1),
        )
