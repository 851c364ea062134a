"""GradCache: contrastive batches far larger than what fits in memory, with exactly the full-batch gradient.

A contrastive loss couples every query with every document of the batch, so it cannot be split into
independent micro-batches. GradCache (Gao et al., 2021) splits the *encoder* instead:

1. encode queries and documents chunk by chunk **without a graph** (``torch.no_grad``), recording each chunk's
   RNG state (CPU + CUDA) before its forward;
2. build the :class:`~embedkit.losses.base.EmbeddingBatch` from the cached embeddings (leaf tensors that require
   grad), gather it across ranks if asked, compute the loss and backpropagate to the **embeddings** only;
3. re-encode each chunk with a graph, replaying the recorded RNG state (identical dropout masks), and backpropagate
   ``sum(embedding * cached_gradient)`` -- by the chain rule this accumulates exactly the parameter gradients of the
   full-batch loss, while only one chunk's activations are alive at a time.

**One all-reduce per optimizer step under DDP.** Step 3 runs one backward per chunk; under
``DistributedDataParallel`` every backward normally all-reduces the gradients. Every re-forward except the last
runs inside the model's ``no_sync()``, so gradients accumulate locally and are all-reduced once (the last chunk).
sentence-transformers 6.2's cached losses (``CachedMultipleNegativesRankingLoss``...) do the same: their replay
runs each mini-batch but the last inside ``no_sync`` (``sentence_transformers/base/losses/gradcache.py``,
``_ddp_replay_context``; its issue #4027). What embedkit adds is below (one chunk encoded once, length-sorted and
trimmed chunks) and that it works with any embedkit loss, cross-device negatives and ragged hard negatives.

**Mixed precision.** The backward runs here, not in ``accelerator.backward``, so an fp16 ``GradScaler`` must be
passed as ``grad_scaler``: the loss is multiplied by its scale before the backward, so the cached embedding
gradients -- and through them every replayed chunk's parameter gradients -- carry the scale that the optimizer
step's ``unscale_`` divides out (without it the step divided unscaled gradients, or failed because the scaler had
never scaled anything). bf16 needs no scaler. The replay's surrogate is computed in at least float32.

Peak activation memory is that of one chunk (plus ``B x D`` embeddings); the cost is one extra no-grad forward.
Two things win most of it back. **One chunk is encoded only once**: the chunk with the most tokens keeps its graph
from step 1, the loss's backward flows straight into it, and step 3 re-encodes only the others (with 2 chunks
that halves the extra cost; its memory is still one chunk's graph). And rows are encoded **sorted by length** and each chunk is **trimmed** to its own longest row
(the embeddings and gradients are mapped back to the original rows, so the loss and the gradient do not change):
a batch of mixed-length documents then costs fewer padded tokens than the plain full-batch step, which pads every
row to the batch's longest. ``sort_by_length=False, trim_padding=False, reuse_chunk_graph=False`` gives the textbook algorithm. Measured
figures: ``eval/results/gradcache/README.md``.

The model is called as ``model(features)["sentence_embedding"]`` (a ``SentenceTransformer``, possibly wrapped in
DDP, with LoRA or latent-attention pooling); ``features`` are tokenizer dicts. Every tensor value whose first
dimension is the batch size is sliced per chunk -- a per-row ``"prompt_length"`` of shape ``(batch,)`` travels with
its rows; other values (a shared ``"prompt_length"`` of shape ``(1,)``, ``"modality"``...) are passed to every chunk.

Example:
    >>> from embedkit.models import load_model
    >>> from embedkit.losses import InfoNCELoss, make_batch
    >>> from embedkit.training.gradcache import GradCache
    >>> model = load_model("minilm"); model.train()                                        # doctest: +SKIP
    >>> q = model.preprocess(["list files", "copy a file"])                                  # doctest: +SKIP
    >>> d = model.preprocess(["ls lists directory contents", "cp copies files"])             # doctest: +SKIP
    >>> gc = GradCache(model, InfoNCELoss(temperature=0.05), chunk_size=1)                 # doctest: +SKIP
    >>> loss, stats = gc.forward_backward(q, d, lambda qe, de: make_batch(qe, de, 1))      # doctest: +SKIP
    >>> # parameter .grad now holds the full-batch gradient; call optimizer.step()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
from torch import Tensor

from embedkit.errors import ConfigError
from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss

__all__ = ["BuildBatch", "ChunkPlan", "GradCache", "RngState", "compute_loss_uncached", "plan_chunks",
           "split_features"]

#: ``build_batch(query_embeddings (B, D), doc_embeddings (M, D)) -> EmbeddingBatch``
BuildBatch = Callable[[Tensor, Tensor], EmbeddingBatch]
Features = Mapping[str, Any]


def _batch_size(features: Features) -> int:
    for key in ("input_ids", "attention_mask", "inputs_embeds"):
        v = features.get(key)
        if isinstance(v, Tensor) and v.dim() > 0:
            return int(v.shape[0])
    for v in features.values():
        if isinstance(v, Tensor) and v.dim() > 0:
            return int(v.shape[0])
    raise ConfigError("the features hold no batched tensor", where="GradCache.features",
                      hint="pass the dict returned by model.preprocess(texts)")


@dataclass
class ChunkPlan:
    """How a batch is cut into chunks: ``order[i]`` is the original row of the ``i``-th encoded row."""

    chunks: list[dict[str, Any]]
    order: Tensor | None  # None: rows kept in their original order

    def sizes(self) -> list[int]:
        return [_batch_size(c) for c in self.chunks]

    def unpermute(self, emb: Tensor) -> Tensor:
        """Chunk-order rows -> original row order."""
        if self.order is None:
            return emb
        out = torch.empty_like(emb)
        out[self.order.to(emb.device)] = emb
        return out

    def permute(self, t: Tensor) -> Tensor:
        """Original row order -> chunk order (for the cached gradients)."""
        return t if self.order is None else t[self.order.to(t.device)]


def _take(features: Features, idx: Tensor | slice, n: int, trim: bool) -> dict[str, Any]:
    out = {k: (v[idx] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n else v) for k, v in features.items()}
    mask = out.get("attention_mask")
    if trim and isinstance(mask, Tensor) and mask.dim() == 2 and mask.shape[1] > 0:
        # drop trailing columns that are padding in every row of the chunk (right padding only: leading pads of
        # left-padded decoders would shift their position ids)
        used = mask.bool().any(dim=0)
        keep = int(used.nonzero().max().item()) + 1 if bool(used.any()) else mask.shape[1]
        if keep < mask.shape[1]:
            full = tuple(mask.shape)
            out = {k: (v[:, :keep] if isinstance(v, Tensor) and v.dim() >= 2 and tuple(v.shape[:2]) == full else v)
                   for k, v in out.items()}
    return out


def plan_chunks(
    features: Features, chunk_size: int, *, sort_by_length: bool = True, trim_padding: bool = True
) -> ChunkPlan:
    """Cut a tokenizer dict into chunks of ``chunk_size`` rows.

    ``sort_by_length`` groups rows of similar length (longest first) and ``trim_padding`` drops the padding
    columns no row of a chunk needs: the same embeddings for far fewer padded tokens when lengths vary (the
    cached gradients are mapped back to the original rows, so the loss never sees the reordering). Non-batched
    values (``"modality"``, a shared ``"prompt_length"`` of shape ``(1,)``) go to every chunk; a per-row
    ``"prompt_length"`` is sliced with its rows.
    """
    n = _batch_size(features)
    mask = features.get("attention_mask")
    order = None
    if sort_by_length and isinstance(mask, Tensor) and mask.dim() == 2 and n > chunk_size:
        lengths = mask.sum(dim=1).cpu()
        order = torch.sort(lengths, descending=True, stable=True).indices
    chunks = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        idx: Tensor | slice = slice(start, stop) if order is None else order[start:stop]
        if isinstance(idx, Tensor) and isinstance(mask, Tensor):
            idx = idx.to(mask.device)
        chunks.append(_take(features, idx, n, trim_padding))
    return ChunkPlan(chunks=chunks, order=order)


def split_features(features: Features, chunk_size: int) -> list[dict[str, Any]]:
    """Split a tokenizer dict into consecutive chunks of ``chunk_size`` rows (no reordering, no trimming)."""
    return plan_chunks(features, chunk_size, sort_by_length=False, trim_padding=False).chunks


def _cuda_devices(features: Features) -> list[int]:
    devs = {v.device.index for v in features.values() if isinstance(v, Tensor) and v.is_cuda}
    return sorted(d if d is not None else torch.cuda.current_device() for d in devs)


@dataclass
class RngState:
    """CPU and CUDA RNG states captured before a chunk's first forward, replayed for its second."""

    cpu: Tensor
    cuda_devices: list[int]
    cuda: list[Tensor]

    @classmethod
    def capture(cls, features: Features) -> RngState:
        devices = _cuda_devices(features)
        return cls(
            cpu=torch.get_rng_state(),
            cuda_devices=devices,
            cuda=[torch.cuda.get_rng_state(d) for d in devices],
        )

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body with this RNG state; the surrounding RNG state is restored afterwards."""
        with torch.random.fork_rng(devices=self.cuda_devices):
            self.restore()
            yield

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, s in zip(self.cuda_devices, self.cuda):
            torch.cuda.set_rng_state(s, d)


def _embed(model: torch.nn.Module, features: Features) -> Tensor:
    # SentenceTransformer.forward adds keys to the dict it gets: give it a copy
    out = model(dict(features))
    emb = out["sentence_embedding"] if isinstance(out, Mapping) else out
    if not isinstance(emb, Tensor):
        raise ConfigError("the model did not return a 'sentence_embedding' tensor", where="GradCache.model")
    return emb


def _loss(batch: EmbeddingBatch, loss_fn: EmbeddingLoss, gather: bool) -> tuple[Tensor, dict[str, float]]:
    """Loss of the local rows; with cross-device negatives, scaled so that DDP's gradient *average* over ranks is
    the gradient of the mean over all ranks' rows even when ranks hold different numbers of rows (factor 1 when
    they hold the same)."""
    if not gather:
        return loss_fn(batch)
    from embedkit.training.distributed import gather_batch, is_distributed, world_size

    if not is_distributed():
        return loss_fn(batch)
    local = batch.num_rows
    batch = gather_batch(batch)
    loss, stats = loss_fn(batch)
    factor = world_size() * local / batch.num_rows
    return (loss * factor if factor != 1.0 else loss), stats


def compute_loss_uncached(
    model: torch.nn.Module,
    loss_fn: EmbeddingLoss,
    query_features: Features,
    doc_features: Features,
    build_batch: BuildBatch,
    *,
    gather_across_devices: bool = False,
    chunk_size: int | None = None,
    sort_by_length: bool = True,
    trim_padding: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """The plain path: encode with a graph, build the batch, return ``(loss, stats)``; the caller runs backward.

    ``chunk_size`` encodes in chunks (still with a graph, so no memory saving): same maths, and the same chunks
    and dropout draws as :class:`GradCache` with the same chunk options, which is how the tests compare the two
    exactly. Without ``chunk_size`` the whole batch is encoded at once (the other two options are unused).
    """
    if chunk_size is None:
        q = _embed(model, query_features)
        d = _embed(model, doc_features)
    else:
        embs = []
        for feats in (query_features, doc_features):
            plan = plan_chunks(feats, chunk_size, sort_by_length=sort_by_length, trim_padding=trim_padding)
            embs.append(plan.unpermute(torch.cat([_embed(model, c) for c in plan.chunks])))
        q, d = embs
    return _loss(build_batch(q, d), loss_fn, gather_across_devices)


class GradCache:
    """Full-batch contrastive gradients with chunk-sized activation memory (see module docstring).

    Args:
        model: callable on a tokenizer dict returning ``{"sentence_embedding": (n, D)}`` -- a
            ``SentenceTransformer`` or a DDP wrapper of one (then pass ``no_sync=ddp_model.no_sync``).
        loss_fn: an :class:`~embedkit.losses.base.EmbeddingLoss`.
        chunk_size: rows encoded at once (memory knob; does not change the gradient).
        gather_across_devices: compute the loss on every rank's queries and documents (cross-device negatives).
        sort_by_length: encode rows of similar length together (longest first); results are mapped back to the
            original rows, so only the padding (and the speed) changes.
        trim_padding: drop trailing padding columns that no row of a chunk needs.
        reuse_chunk_graph: encode the chunk with the most tokens once, with a graph, in step 1 and backpropagate
            the loss into it directly instead of re-encoding it (same gradient, one chunk less of extra work).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: EmbeddingLoss,
        chunk_size: int = 32,
        gather_across_devices: bool = False,
        *,
        sort_by_length: bool = True,
        trim_padding: bool = True,
        reuse_chunk_graph: bool = True,
    ) -> None:
        if chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}", where="training.gradcache.chunk_size")
        self.model = model
        self.loss_fn = loss_fn
        self.chunk_size = int(chunk_size)
        self.gather_across_devices = bool(gather_across_devices)
        self.sort_by_length = bool(sort_by_length)
        self.trim_padding = bool(trim_padding)
        self.reuse_chunk_graph = bool(reuse_chunk_graph)

    def plan(self, features: Features) -> ChunkPlan:
        """The chunks this GradCache encodes ``features`` in."""
        return plan_chunks(features, self.chunk_size, sort_by_length=self.sort_by_length,
                           trim_padding=self.trim_padding)

    @staticmethod
    def _costliest(chunks: list[dict[str, Any]]) -> int:
        """Index of the chunk with the most (padded) tokens; the later one on ties."""
        def tokens(chunk: dict[str, Any]) -> int:
            mask = chunk.get("attention_mask")
            return int(mask.numel()) if isinstance(mask, Tensor) else _batch_size(chunk)
        return max(range(len(chunks)), key=lambda i: (tokens(chunks[i]), i))

    def forward_backward(
        self,
        query_features: Features,
        doc_features: Features,
        build_batch: BuildBatch,
        no_sync: Callable[[], ContextManager[Any]] | None = None,
        *,
        loss_scale: float = 1.0,
        grad_scaler: Any | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Run one cached forward/backward; parameter ``.grad`` accumulate the full-batch gradient.

        Args:
            query_features / doc_features: tokenizer dicts of all queries / all documents of the batch.
            build_batch: turns the (cached) query and document embeddings into an ``EmbeddingBatch``.
            no_sync: the DDP model's ``no_sync`` (or any context-manager factory); every re-forward but the last
                runs inside it so DDP all-reduces once. ``None`` outside DDP.
            loss_scale: multiplies the gradient (e.g. ``1 / gradient_accumulation_steps``); the returned loss is
                unscaled.
            grad_scaler: a ``torch.amp.GradScaler`` (accelerate's ``accelerator.scaler`` under fp16): the loss goes
                through ``grad_scaler.scale`` before the backward, exactly as ``accelerator.backward`` would do, so
                ``grad_scaler.step(optimizer)`` unscales correct gradients. ``None``: no loss scaling.

        Example (fp16-style loss scaling on CPU; the update equals the unscaled one)::

            scaler = torch.amp.GradScaler("cpu")
            gc.forward_backward(q, d, build_batch, grad_scaler=scaler)
            scaler.step(optimizer)
            scaler.update()

        Returns:
            The detached loss and the loss's stats.
        """
        q_plan, d_plan = self.plan(query_features), self.plan(doc_features)
        chunks = q_plan.chunks + d_plan.chunks
        n_q = len(q_plan.chunks)
        keep = self._costliest(chunks) if self.reuse_chunk_graph else -1

        with contextlib.ExitStack() as kept_sync:
            # 1) forward in chunk order (the RNG stream is that of the plain chunked forward); every chunk but the
            #    kept one without a graph, remembering its RNG state and caching a leaf embedding
            embs: list[Tensor] = []
            states: list[RngState | None] = []
            for i, chunk in enumerate(chunks):
                if i == keep:
                    if no_sync is not None:  # its backward (in step 2) must not all-reduce: chunks follow
                        kept_sync.enter_context(no_sync())
                    with torch.enable_grad():
                        embs.append(_embed(self.model, chunk))
                    states.append(None)
                else:
                    states.append(RngState.capture(chunk))
                    with torch.no_grad():
                        embs.append(_embed(self.model, chunk).detach().requires_grad_())

            # 2) loss on the embeddings (original row order); backward fills the leaves' .grad and, through the
            #    kept chunk's graph, the parameters' .grad
            with torch.enable_grad():
                q = q_plan.unpermute(torch.cat(embs[:n_q]))
                d = d_plan.unpermute(torch.cat(embs[n_q:]))
                loss, stats = _loss(build_batch(q, d), self.loss_fn, self.gather_across_devices)
                scaled = loss * loss_scale
                if grad_scaler is not None:
                    scaled = grad_scaler.scale(scaled)
                scaled.backward()
            grads = [None if i == keep else (e.grad if e.grad is not None else torch.zeros_like(e))
                     for i, e in enumerate(embs)]
            del q, d, embs

        # 3) replay every other chunk with a graph and push its cached gradient through the encoder
        todo = [i for i in range(len(chunks)) if i != keep]
        for j, i in enumerate(todo):
            state, grad = states[i], grads[i]
            assert state is not None and grad is not None
            sync_ctx = no_sync() if (no_sync is not None and j < len(todo) - 1) else contextlib.nullcontext()
            with sync_ctx, state.replay(), torch.enable_grad():
                emb = _embed(self.model, chunks[i])
                # at least float32: a half-precision dot product of scaled gradients overflows long before the
                # gradients themselves do (sentence-transformers' replay does the same)
                dtype = torch.promote_types(torch.promote_types(emb.dtype, grad.dtype), torch.float32)
                surrogate = torch.dot(emb.flatten().to(dtype), grad.flatten().to(dtype))
                surrogate.backward()
        return loss.detach(), stats

    def compute_loss_uncached(
        self, query_features: Features, doc_features: Features, build_batch: BuildBatch
    ) -> tuple[Tensor, dict[str, float]]:
        """:func:`compute_loss_uncached` with this object's model, loss and gather setting."""
        return compute_loss_uncached(
            self.model, self.loss_fn, query_features, doc_features, build_batch,
            gather_across_devices=self.gather_across_devices,
        )
