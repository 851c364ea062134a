"""Cross-device helpers: rank / world size, and an all-gather that keeps gradients for every rank.

Why not ``torch.distributed.all_gather``: it returns plain tensors, so the parts that came from other ranks are
cut off from autograd and the loss's gradient w.r.t. them is silently dropped (each rank then trains on a
different, wrong objective). :func:`gather_with_grad` uses ``torch.distributed.nn.functional.all_gather``, whose
backward sums every rank's gradient for a rank's slice back onto that rank (a reduce-scatter): with 2 ranks the
total gradient equals the single-process full batch (verified in ``tests/test_distributed.py``).

Every function is a no-op (or returns the trivial answer) when ``torch.distributed`` is not initialised, so the
same training code runs on one process.

Example:
    >>> import torch
    >>> from embedkit.training.distributed import gather_with_grad, world_size
    >>> x = torch.ones(2, 3, requires_grad=True)
    >>> gather_with_grad(x) is x, world_size()      # single process: nothing to gather
    (True, 1)
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor

from embedkit.losses.base import EmbeddingBatch

__all__ = ["gather_batch", "gather_no_grad", "gather_with_grad", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sizes(n: int, device: torch.device) -> list[int]:
    t = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.zeros_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    if t.shape[0] == rows:
        return t
    pad = t.new_zeros((rows - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad], dim=0)


def gather_with_grad(t: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``t`` from every rank along dim 0, rank order, keeping gradients for all ranks.

    Ranks may hold different numbers of rows (``sizes``, gathered when not given); other dims must match.
    All ranks must call it (and later run backward) together.
    """
    if not is_distributed():
        return t
    sizes = sizes or _sizes(t.shape[0], t.device)
    # torch >= 2.10 marks torch.distributed.nn.functional.all_gather deprecated in favour of
    # torch.distributed._functional_collectives (a private module); the public function still works and is the
    # one verified here, so keep it and silence only that warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*", category=FutureWarning)
        parts = torch.distributed.nn.functional.all_gather(_pad_rows(t, max(sizes)))
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def gather_no_grad(t: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Like :func:`gather_with_grad` for tensors that need no gradient (masks, hashes, teacher scores)."""
    if not is_distributed():
        return t
    sizes = sizes or _sizes(t.shape[0], t.device)
    padded = _pad_rows(t.detach(), max(sizes)).contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def _max_width(width: int, device: torch.device) -> int:
    t = torch.tensor([width], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_batch(batch: EmbeddingBatch) -> EmbeddingBatch:
    """The global batch: every rank's rows (rank order), with ``local_rows`` set to this rank's rows.

    Rows may have different numbers of hard negatives on different ranks: the narrower ones are padded and
    masked. The loss then uses all ranks' queries and documents as negatives, and labels are offset by the rows
    of the ranks before this one.
    """
    if not is_distributed():
        return batch
    dev = batch.q.device
    b, width = batch.docs.shape[:2]
    sizes = _sizes(b, dev)
    w = _max_width(width, dev)
    docs, mask = batch.docs, batch.valid_mask()
    dh, ts = batch.doc_hash, batch.teacher_scores
    # fields present on some ranks only would deadlock the collectives below: require them everywhere
    flags = torch.tensor([batch.doc_hash is not None, batch.teacher_scores is not None], dtype=torch.long, device=dev)
    flags_min = flags.clone()
    dist.all_reduce(flags_min, op=dist.ReduceOp.MIN)
    if not torch.equal(flags, flags_min):
        raise RuntimeError("doc_hash / teacher_scores must be given on every rank or on none")
    if width < w:
        extra = w - width
        docs = torch.cat([docs, docs.new_zeros(b, extra, docs.shape[2])], dim=1)
        mask = torch.cat([mask, mask.new_zeros(b, extra)], dim=1)
        if dh is not None:
            dh = torch.cat([dh, dh.new_zeros(b, extra)], dim=1)
        if ts is not None:
            ts = torch.cat([ts, ts.new_full((b, extra), float("nan"))], dim=1)
    r = rank()
    start = sum(sizes[:r])
    return EmbeddingBatch(
        q=gather_with_grad(batch.q, sizes),
        docs=gather_with_grad(docs, sizes),
        doc_mask=gather_no_grad(mask, sizes),
        doc_hash=None if dh is None else gather_no_grad(dh, sizes),
        teacher_scores=None if ts is None else gather_no_grad(ts, sizes),
        in_batch_negatives=batch.in_batch_negatives,
        local_rows=slice(start, start + b),
    )
