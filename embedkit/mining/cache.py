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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from embedkit.errors import OutputError
from embedkit.mining.distributed import barrier, rank_world
from embedkit.utils.io import atomic_file

__all__ = ["EmbeddingCache", "model_fingerprint", "text_digests"]

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
                      desc: str = "encode", show_progress_bar: bool | None = None) -> np.ndarray:
        """Embeddings ``(len(texts), dim)`` in input order; only texts missing from the cache are encoded.

        ``encode_fn(list_of_texts) -> (n, dim) float32`` is called once per missing shard. Under
        ``torch.distributed`` every rank must call this with the same ``texts``; each encodes its slice.
        """
        digests = text_digests(texts)
        index, shards = self._index()
        missing: dict[bytes, int] = {}
        for i, d in enumerate(digests):
            key = d.tobytes()
            if key not in index and key not in missing:
                missing[key] = i
        rank, world = rank_world()
        barrier()  # every rank has read the same cache state before anyone writes
        todo = list(missing.values())
        self.hits = len(texts) - sum(1 for d in digests if d.tobytes() in missing)
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
            index, shards = self._index()
        return self._gather(digests, index, shards)

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
