"""On-disk embedding cache: encode a corpus once, re-mine with other filters in seconds.

Why: mining is tuned by trial (window, ratio, sampling), but encoding the corpus is >90 % of its cost. The cache
keys every text by ``blake2b(text)`` inside a *namespace* that hashes what changes an embedding: the model's
identity (its weight files' names/sizes/mtimes, or a hash of its parameters when it only lives in memory), the
prompt, ``max_seq_length`` and the architecture description. Change any of them and nothing stale is reused.

Layout (no pickle; plain ``.npy``)::

    <cache_dir>/<namespace>/meta.json                  what the namespace hashes (for humans)
    <cache_dir>/<namespace>/shard-<hash>.npy           float32 (n, dim) embeddings
    <cache_dir>/<namespace>/shard-<hash>.keys.npy      uint8 (n, 16) text digests (written last: marks completion)

Shards are written atomically as they finish, so an interrupted run resumes from the finished shards. Under
``torchrun`` each rank encodes its own slice of the missing texts and writes its own shards; all ranks then read the
merged cache (see :func:`embedkit.mining.distributed.rank_world`).

Example:
    >>> import numpy as np, tempfile
    >>> from embedkit.mining.cache import EmbeddingCache
    >>> calls = []
    >>> def fake_encode(texts):
    ...     calls.append(len(texts))
    ...     return np.ones((len(texts), 4), dtype=np.float32)
    >>> cache = EmbeddingCache(tempfile.mkdtemp(), namespace_key={"model": "fake"})
    >>> cache.get_or_encode(["a", "b"], fake_encode).shape
    (2, 4)
    >>> _ = cache.get_or_encode(["b", "a"], fake_encode)   # served from disk
    >>> calls
    [2]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from embedkit.errors import OutputError
from embedkit.mining.distributed import barrier, rank_world
from embedkit.utils.io import atomic_file

__all__ = ["EmbeddingCache", "EmbeddingView", "model_fingerprint", "text_digests"]

logger = logging.getLogger(__name__)

DIGEST_BYTES = 16


def text_digests(texts: Sequence[str]) -> np.ndarray:
    """``(n, 16)`` uint8 blake2b digests of ``texts`` (the cache keys)."""
    out = np.empty((len(texts), DIGEST_BYTES), dtype=np.uint8)
    for i, t in enumerate(texts):
        out[i] = np.frombuffer(hashlib.blake2b(t.encode("utf-8"), digest_size=DIGEST_BYTES).digest(), np.uint8)
    return out


def model_fingerprint(model: Any, source: str | os.PathLike | None = None) -> str:
    """A string that changes whenever the model's embeddings may change.

    With ``source`` (the folder the model was loaded from, unchanged since) the weight files' relative names,
    sizes and mtimes are hashed -- instant even for 7B models. Without it every parameter and buffer is hashed
    (exact, ~0.2 s for MiniLM). The module pipeline (``repr``: pooling, normalisation, max length) is always
    included.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(model).encode())
    if source is not None and Path(source).is_dir():
        root = Path(source)
        for p in sorted(root.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        h.update(str(root.resolve()).encode())
        return "files:" + h.hexdigest()
    import torch

    state = model.state_dict() if hasattr(model, "state_dict") else {}
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return "params:" + h.hexdigest()


class EmbeddingCache:
    """Content-addressed embedding store for one namespace (model + prompt + max length).

    Args:
        cache_dir: root folder (created if needed).
        namespace_key: JSON-serialisable dict of everything that determines an embedding besides the text.
        shard_size: texts per shard (the unit of resumption).
    """

    def __init__(self, cache_dir: str | os.PathLike, namespace_key: dict[str, Any], shard_size: int = 4096) -> None:
        blob = json.dumps(namespace_key, sort_keys=True, default=str)
        self.namespace = hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()
        self.root = Path(cache_dir) / self.namespace
        self.shard_size = shard_size
        self.namespace_key = namespace_key
        #: texts encoded by this object (not read from disk) -- for summaries and tests
        self.encoded = 0
        self.hits = 0
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the cache folder {self.root}: {exc.strerror}",
                              where="--cache-dir", hint="choose a writable --cache-dir") from None
        meta = self.root / "meta.json"
        if not meta.exists() and rank_world()[0] == 0:
            with atomic_file(meta) as tmp:
                Path(tmp).write_text(blob + "\n", encoding="utf-8")

    # ----------------------------------------------------------------------------------------------------------
    def _shards(self) -> list[Path]:
        """Finished shards: both the embeddings and the keys file exist."""
        out = []
        for keys in sorted(self.root.glob("shard-*.keys.npy")):
            emb = keys.with_name(keys.name.replace(".keys.npy", ".npy"))
            if emb.exists():
                out.append(emb)
        return out

    def _index(self) -> tuple[dict[bytes, tuple[int, int]], list[Path]]:
        shards = self._shards()
        index: dict[bytes, tuple[int, int]] = {}
        for s, emb in enumerate(shards):
            keys = np.load(emb.with_name(emb.name.replace(".npy", ".keys.npy")), allow_pickle=False)
            for row, key in enumerate(keys):
                index.setdefault(key.tobytes(), (s, row))
        return index, shards

    def _write_shard(self, digests: np.ndarray, emb: np.ndarray) -> None:
        name = hashlib.blake2b(digests.tobytes(), digest_size=8).hexdigest()
        emb_path = self.root / f"shard-{name}.npy"
        with atomic_file(emb_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)
        with atomic_file(self.root / f"shard-{name}.keys.npy") as tmp:  # last: marks the shard complete
            with open(tmp, "wb") as f:
                np.save(f, digests, allow_pickle=False)

    def get_or_encode(self, texts: Sequence[str], encode_fn: Callable[[list[str]], np.ndarray], *,
                      desc: str = "encode", show_progress_bar: bool | None = None,
                      lazy: bool = False) -> np.ndarray | EmbeddingView:
        """Embeddings ``(len(texts), dim)`` in input order; only texts missing from the cache are encoded.

        ``encode_fn(list_of_texts) -> (n, dim) float32`` is called once per missing shard. Under
        ``torch.distributed`` every rank must call this with the same ``texts``; each encodes its slice.
        ``lazy=True`` returns an :class:`EmbeddingView` over the shards instead of one in-memory matrix (bounded
        memory for large corpora: the blocked search of :mod:`embedkit.mining.index` reads it block by block).
        """
        digests = text_digests(texts)
        shard_of, _ = _locate(digests, self._shards())
        missing_rows = np.flatnonzero(shard_of < 0)
        # one row per distinct missing text (its first occurrence)
        _, first = np.unique(np.ascontiguousarray(digests[missing_rows]).view(_KEY).ravel(), return_index=True)
        rank, world = rank_world()
        barrier()  # every rank has read the same cache state before anyone writes
        todo = missing_rows[np.sort(first)].tolist()
        self.hits = len(texts) - len(missing_rows)
        if todo:
            # longest first, so shards hold similar lengths (less padding); deterministic order for every rank
            todo.sort(key=lambda i: (-len(texts[i]), i))
            chunks = [todo[i:i + self.shard_size] for i in range(0, len(todo), self.shard_size)]
            mine = chunks[rank::world]
            if show_progress_bar is None:
                show_progress_bar = len(todo) > 1000
            total = sum(len(c) for c in mine)
            # one shard: the encoder's own bar shows progress; several: one bar over shards
            with tqdm(total=total, desc=f"{desc} (rank {rank})" if world > 1 else desc, unit="text",
                      disable=not show_progress_bar or len(mine) < 2) as bar:
                for chunk in mine:
                    emb = np.asarray(encode_fn([texts[i] for i in chunk]), dtype=np.float32)
                    if emb.shape[0] != len(chunk):
                        raise RuntimeError(f"encode_fn returned {emb.shape[0]} rows for {len(chunk)} texts")
                    self._write_shard(digests[chunk], emb)
                    self.encoded += len(chunk)
                    bar.update(len(chunk))
            barrier()
        shards = self._shards()
        shard_of, row_of = _locate(digests, shards)
        if not len(digests):
            return np.zeros((0, 0), dtype=np.float32)
        view = EmbeddingView(shards, shard_of, row_of)
        return view if lazy else view.to_array()

    @staticmethod
    def _gather(digests: np.ndarray, index: dict[bytes, tuple[int, int]], shards: list[Path]) -> np.ndarray:
        rows_by_shard: dict[int, list[tuple[int, int]]] = {}
        for i, d in enumerate(digests):
            s, row = index[d.tobytes()]
            rows_by_shard.setdefault(s, []).append((i, row))
        out: np.ndarray | None = None
        for s, items in rows_by_shard.items():
            data = np.load(shards[s], mmap_mode="r", allow_pickle=False)
            if out is None:
                out = np.empty((len(digests), data.shape[1]), dtype=np.float32)
            dst = np.fromiter((i for i, _ in items), dtype=np.int64, count=len(items))
            src = np.fromiter((r for _, r in items), dtype=np.int64, count=len(items))
            order = np.argsort(src)
            out[dst[order]] = data[src[order]]
        if out is None:
            return np.zeros((0, 0), dtype=np.float32)
        return out

    def view(self, texts: Sequence[str], *, normalize: bool = False) -> EmbeddingView:
        """The cached embeddings of ``texts`` (all already cached) as an :class:`EmbeddingView`: nothing is loaded.

        Raises KeyError when a text is not in the cache (call :meth:`get_or_encode` with ``lazy=True`` first).
        """
        shards = self._shards()
        shard_of, row_of = _locate(text_digests(texts), shards)
        if (shard_of < 0).any():
            raise KeyError(f"{int((shard_of < 0).sum())} texts are not in the cache {self.root}")
        return EmbeddingView(shards, shard_of, row_of, normalize=normalize)


def _locate(digests: np.ndarray, shards: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """``(shard, row)`` int32 arrays of each digest (``-1`` where missing); the first shard wins for duplicates.

    Vectorised (a sort of every key, then a binary search) rather than a dict: for 1M texts a dict of bytes costs
    ~200 MB of Python objects, these arrays ~40 MB.
    """
    n = len(digests)
    shard_of = np.full(n, -1, dtype=np.int32)
    row_of = np.full(n, -1, dtype=np.int32)
    if not shards or n == 0:
        return shard_of, row_of
    keys = [np.load(e.with_name(e.name.replace(".npy", ".keys.npy")), allow_pickle=False) for e in shards]
    lengths = np.array([len(k) for k in keys], dtype=np.int64)
    all_keys = np.ascontiguousarray(np.concatenate(keys), dtype=np.uint8).view(_KEY).ravel()
    del keys
    order = np.argsort(all_keys, kind="stable")  # stable: among equal keys the earliest (shard, row) comes first
    sorted_keys = all_keys[order]
    want = np.ascontiguousarray(digests, dtype=np.uint8).view(_KEY).ravel()
    pos = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
    found = sorted_keys[pos] == want
    flat = order[pos[found]]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    s = np.searchsorted(starts, flat, side="right") - 1
    shard_of[found] = s
    row_of[found] = flat - starts[s]
    return shard_of, row_of


_KEY = np.dtype([("hi", ">u8"), ("lo", ">u8")])  # a 16-byte digest as one sortable record


class EmbeddingView:
    """Corpus-ordered embeddings read on demand from the cache's ``.npy`` shards, ``block_size`` rows at a time.

    Why: a 1M x 384 float32 corpus is 1.5 GB, and the in-memory mining path holds it up to three times (gathered,
    normalised, copied into the FAISS index). A view keeps only ``(shard, row)`` per text (8 bytes) and memory-maps
    one shard at a time, unmapping it after each read, so the resident set stays near one block.

    Example:
        >>> import numpy as np, tempfile
        >>> from embedkit.mining.cache import EmbeddingCache
        >>> cache = EmbeddingCache(tempfile.mkdtemp(), {"model": "fake"}, shard_size=2)
        >>> _ = cache.get_or_encode(["a", "bb", "ccc"], lambda t: np.full((len(t), 2), 3.0, np.float32))
        >>> view = cache.view(["ccc", "a"], normalize=True)
        >>> view.shape, [start for start, _ in view.blocks(1)]
        ((2, 2), [0, 1])
        >>> round(float(view.rows([1])[0, 0]), 4)
        0.7071
    """

    def __init__(self, shards: Sequence[Path], shard_of: np.ndarray, row_of: np.ndarray, *,
                 normalize: bool = False) -> None:
        self.shards = list(shards)
        self.shard_of = np.asarray(shard_of, dtype=np.int32)
        self.row_of = np.asarray(row_of, dtype=np.int32)
        self.normalize = normalize
        dim = 0
        if len(self.shard_of):
            dim = int(np.load(self.shards[int(self.shard_of[0])], mmap_mode="r", allow_pickle=False).shape[1])
        self.dim = dim

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.shard_of), self.dim

    def __len__(self) -> int:
        return len(self.shard_of)

    def rows(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 ``(len(ids), dim)`` rows in the order of ``ids`` (L2-normalised if the view normalises)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        shard = self.shard_of[ids]
        by_shard = np.argsort(shard, kind="stable")
        bounds = np.flatnonzero(np.diff(shard[by_shard])) + 1
        for group in np.split(by_shard, bounds):
            if not len(group):
                continue
            src = self.row_of[ids[group]]
            order = np.argsort(src)  # ascending rows: sequential reads of the memory map
            data = np.load(self.shards[int(shard[group[0]])], mmap_mode="r", allow_pickle=False)
            out[group[order]] = data[src[order]]
            del data  # unmap now: touched pages would otherwise stay in the resident set
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def blocks(self, block_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows[start:start + block_size])`` over the whole view, in order."""
        for start in range(0, len(self), block_size):
            yield start, self.rows(np.arange(start, min(start + block_size, len(self))))

    def to_array(self) -> np.ndarray:
        """Everything in memory (what the non-streaming path uses)."""
        return self.rows(np.arange(len(self)))
