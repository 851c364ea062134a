"""Offline hard-negative mining: encode the corpus once (cached), search with FAISS, filter positive-aware.

Compared with ``sentence_transformers.util.mine_hard_negatives``: the embedding cache is per text (adding documents
or queries encodes only the new ones; an interrupted run resumes from finished shards; the key includes the model's
weights, so a fine-tuned model never reuses stale vectors), encoding is token-length sorted and token-budgeted
(:func:`embedkit.encode`), encoding can be sharded over ``torchrun`` ranks, IVF/HNSW indexes serve million-document
corpora, and near-duplicate texts of a positive are removed. Selection semantics are in
:mod:`embedkit.mining.filters`.

Example:
    >>> from embedkit.data.samples import sample_path
    >>> from embedkit.mining import mine_hard_negatives
    >>> result = mine_hard_negatives(sample_path("debian-train"), "minilm", num_negatives=3,
    ...                              cache_dir="/tmp/embedkit-cache")                       # doctest: +SKIP
    >>> print(result.stats.summary())                                                       # doctest: +SKIP
    >>> result.pairs[0].negatives[:1]                                                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer

from embedkit.data.readers import PairSet, load_corpus_texts, load_pairs, write_pairs
from embedkit.data.schema import Pair
from embedkit.encode import encode, resolve_prompt
from embedkit.errors import ConfigError, InputError
from embedkit.mining.cache import EmbeddingCache, model_fingerprint
from embedkit.mining.config import MiningConfig, make_config
from embedkit.mining.distributed import rank_world
from embedkit.mining.filters import filter_by_teacher, normalize_text, select_negatives
from embedkit.mining.index import build_index, search
from embedkit.utils.io import check_writable_parent

__all__ = ["MiningResult", "MiningStats", "embed_texts", "mine_hard_negatives"]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class MiningStats:
    """What the miner did: sizes, what each filter removed, how many queries came up short, timings."""

    records: int = 0
    unique_queries: int = 0
    corpus_size: int = 0
    candidates: int = 0
    removed: Counter[str] = field(default_factory=Counter)
    num_negatives: int = 0
    short_queries: int = 0
    empty_queries: int = 0
    dropped_incomplete: int = 0
    negatives_written: int = 0
    encoded: int = 0
    from_cache: int = 0
    encoded_per_rank: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """A few human lines (the CLI prints them)."""
        lines = [f"mined {self.negatives_written} negatives for {self.records} records "
                 f"({self.unique_queries} unique queries) from a corpus of {self.corpus_size} documents",
                 f"texts encoded: {self.encoded}, read from cache: {self.from_cache}"
                 + (f" (encoded per rank: {', '.join(map(str, self.encoded_per_rank))})"
                    if len(self.encoded_per_rank) > 1 else ""),
                 f"retrieved candidates: {self.candidates}"]
        for name, n in self.removed.most_common():
            lines.append(f"  removed ({name}): {n}")
        lines.append(f"queries with fewer than {self.num_negatives} negatives: {self.short_queries} "
                     f"(none at all: {self.empty_queries})")
        if self.dropped_incomplete:
            lines.append(f"dropped (fewer than {self.num_negatives} negatives): {self.dropped_incomplete}")
        if self.seconds:
            lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)


@dataclass
class MiningResult:
    """Pairs with mined negatives (empty on ranks other than 0) and the statistics."""

    pairs: list[Pair]
    stats: MiningStats
    corpus: list[str] = field(default_factory=list, repr=False)


def embed_texts(model: SentenceTransformer, texts: Sequence[str], *, role: str | None, batch_size: int = 32,
                prompt: str | None = None, cache_dir: str | os.PathLike | None = None,
                source: str | os.PathLike | None = None, fingerprint: str | None = None,
                encode_fn: Callable[..., np.ndarray] | None = None, show_progress_bar: bool | None = None,
                stats: MiningStats | None = None, shard_size: int = 4096) -> np.ndarray:
    """L2-normalised float32 embeddings of ``texts``, through the on-disk cache when ``cache_dir`` is set."""
    encode_fn = encode_fn or encode
    used_prompt = resolve_prompt(model, role, prompt)

    def run(chunk: list[str]) -> np.ndarray:
        inner_bar = show_progress_bar is not False and len(chunk) > 1000 and len(texts) <= shard_size
        return encode_fn(model, chunk, prompt=used_prompt, batch_size=batch_size, show_progress_bar=inner_bar)

    if cache_dir is None:
        if rank_world()[1] > 1:
            raise ConfigError("sharded encoding under torchrun needs a cache folder", where="--cache-dir",
                              hint="pass --cache-dir DIR on a file system every rank can see")
        emb = np.asarray(encode_fn(model, list(texts), prompt=used_prompt, batch_size=batch_size,
                                   show_progress_bar=show_progress_bar), dtype=np.float32)
        if stats is not None:
            stats.encoded += len(texts)
    else:
        key = {"version": CACHE_VERSION, "model": fingerprint or model_fingerprint(model, source),
               "prompt": used_prompt, "max_seq_length": getattr(model, "max_seq_length", None)}
        cache = EmbeddingCache(cache_dir, key, shard_size=shard_size)
        emb = cache.get_or_encode(list(texts), run, desc=f"encode {role or 'texts'}",
                                  show_progress_bar=show_progress_bar)
        if stats is not None:
            stats.encoded += cache.encoded
            stats.from_cache += len(texts) - cache.encoded
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def _load_model(model: str | SentenceTransformer, trust_remote_code: bool) -> tuple[SentenceTransformer, str | None]:
    if isinstance(model, SentenceTransformer):
        return model, None
    from embedkit.models import load_model, resolve_model_path

    source = resolve_model_path(model)
    return load_model(model, trust_remote_code=trust_remote_code), source


def mine_hard_negatives(
    pairs: PairSet | Sequence[Pair] | str | os.PathLike,
    model: str | SentenceTransformer = "minilm",
    *,
    config: MiningConfig | dict[str, Any] | None = None,
    corpus: Sequence[str] | str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    teacher: str | os.PathLike | None = None,
    teacher_type: str = "cross",
    output: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    show_progress_bar: bool | None = None,
    trust_remote_code: bool = False,
    encode_fn: Callable[..., np.ndarray] | None = None,
    shard_size: int = 4096,
    **overrides: Any,
) -> MiningResult:
    """Add hard negatives (and optional teacher scores) to training pairs.

    Args:
        pairs: a :class:`PairSet`, a list of :class:`Pair`, or a path :func:`load_pairs` reads.
        model: a model alias/folder (then the cache key uses its files) or a loaded ``SentenceTransformer``
            (then its parameters are hashed).
        config: a :class:`MiningConfig` (or dict); keyword ``overrides`` (e.g. ``num_negatives=3``) win.
        corpus: extra documents (texts, a JSONL file with ``text``, or a BEIR folder) added to the positives and
            given negatives of the pairs.
        cache_dir: embedding cache folder (recommended; needed under ``torchrun``).
        teacher / teacher_type: a CrossEncoder (``"cross"``) or bi-encoder (``"bi"``) folder whose scores are
            stored as ``positive_scores`` / ``negative_scores``; with ``teacher_max_score_ratio`` set it also drops
            candidates it judges as relevant as the positive (:func:`~embedkit.mining.filters.filter_by_teacher`).
        output: write the pairs here as JSONL, atomically (only rank 0 writes).
        encode_fn: replace :func:`embedkit.encode` (same signature) -- for instrumentation.
        shard_size: texts per cache shard (the unit of resumption and of the work split between ranks).

    Returns:
        :class:`MiningResult`; ``result.stats.summary()`` says what each filter removed.
    """
    t0 = time.perf_counter()
    cfg = make_config(config, **overrides)
    if output is not None:
        check_writable_parent(output)
    if teacher_type not in ("cross", "bi"):
        raise ConfigError(f"unknown teacher type '{teacher_type}'", where="--teacher-type", hint="use cross or bi")
    if cfg.teacher_max_score_ratio is not None and teacher is None:
        raise ConfigError("teacher_max_score_ratio filters on teacher scores but no teacher is given",
                          where="mining.teacher_max_score_ratio",
                          hint="give a teacher (--teacher FOLDER, or miner.teacher in a recipe) or unset the ratio")
    if not isinstance(pairs, (PairSet, list, tuple)):
        pairs = load_pairs(pairs, skip_invalid=skip_invalid)
    records = list(pairs)
    if not records:
        raise InputError("no pairs to mine", hint="give at least one pair")
    extra: list[str] = []
    if corpus is not None:
        extra = list(corpus) if isinstance(corpus, (list, tuple)) else load_corpus_texts(corpus)
    tch = None
    if teacher is not None:  # load before the model and the long encoding, so a bad path fails fast
        from embedkit.mining.teacher import Teacher

        def teacher_embed(m: Any, texts: list[str], role: str) -> np.ndarray:  # the teacher's vectors are cached too
            return embed_texts(m, texts, role=role, batch_size=cfg.batch_size, cache_dir=cache_dir,
                               source=teacher, encode_fn=encode)

        tch = Teacher.load(teacher, teacher_type, batch_size=cfg.batch_size,  # type: ignore[arg-type]
                           embed_fn=teacher_embed, trust_remote_code=trust_remote_code)
    st_model, source = _load_model(model, trust_remote_code)
    stats = MiningStats(records=len(records), num_negatives=cfg.num_negatives)

    texts: dict[str, int] = {}
    for p in records:
        for t in (*p.positives, *p.negatives):
            texts.setdefault(t, len(texts))
    for t in extra:
        texts.setdefault(t, len(texts))
    corpus_texts = list(texts)
    queries = list(dict.fromkeys(p.query for p in records))
    q_index = {q: i for i, q in enumerate(queries)}
    positives: list[set[int]] = [set() for _ in queries]
    for p in records:
        positives[q_index[p.query]].update(texts[t] for t in p.positives)
    stats.unique_queries, stats.corpus_size = len(queries), len(corpus_texts)
    t_setup = time.perf_counter()

    fingerprint = model_fingerprint(st_model, source) if cache_dir is not None else None
    common = dict(batch_size=cfg.batch_size, cache_dir=cache_dir, source=source, fingerprint=fingerprint,
                  encode_fn=encode_fn, show_progress_bar=show_progress_bar, stats=stats,
                  shard_size=shard_size)
    doc_emb = embed_texts(st_model, corpus_texts, role="document", **common)
    q_emb = embed_texts(st_model, queries, role="query", **common)
    stats.seconds["encode"] = time.perf_counter() - t_setup
    rank, world = rank_world()
    if world > 1:  # every rank encoded its slice: report the totals
        import torch.distributed as dist

        counts: list[Any] = [None] * world
        dist.all_gather_object(counts, stats.encoded)
        stats.encoded_per_rank = [int(c) for c in counts]
        stats.encoded = sum(stats.encoded_per_rank)
        stats.from_cache = len(corpus_texts) + len(queries) - stats.encoded
    if rank != 0:
        return MiningResult(pairs=[], stats=stats)

    t1 = time.perf_counter()
    min_pos = np.empty(len(queries), dtype=np.float64)
    for i, pos in enumerate(positives):
        ids = np.fromiter(pos, dtype=np.int64, count=len(pos))
        min_pos[i] = float((doc_emb[ids] @ q_emb[i]).min())
    max_pos = max(len(p) for p in positives)
    k = min(cfg.range_max + max_pos, len(corpus_texts))
    index = build_index(doc_emb, cfg.index, nlist=cfg.nlist, nprobe=cfg.nprobe, hnsw_m=cfg.hnsw_m,
                        ef_search=cfg.ef_search, use_gpu=cfg.use_gpu, seed=cfg.seed)
    scores, cand = search(index, q_emb, k, ef_search=cfg.ef_search, show_progress_bar=show_progress_bar)
    del index
    stats.seconds["search"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    key_of: dict[str, int] = {}
    norm_keys = np.fromiter((key_of.setdefault(normalize_text(t), len(key_of)) for t in corpus_texts),
                            dtype=np.int64, count=len(corpus_texts))
    by_teacher = tch is not None and cfg.teacher_max_score_ratio is not None
    # with the teacher filter, keep every survivor of rules 1-5 (rank order): filter_by_teacher picks among them
    sel = select_negatives(cand, scores, positives=positives, min_pos=min_pos, norm_keys=norm_keys,
                           num_negatives=cfg.range_max - cfg.range_min if by_teacher else cfg.num_negatives,
                           range_min=cfg.range_min, range_max=cfg.range_max,
                           max_score_ratio=cfg.max_score_ratio, max_score_margin=cfg.max_score_margin,
                           drop_duplicates=cfg.drop_duplicates, sampling="top" if by_teacher else cfg.sampling,
                           seed=cfg.seed)
    stats.candidates = sel.candidates
    stats.removed = sel.removed
    teacher_scores: dict[tuple[int, int], float] | None = None
    if by_teacher:
        assert tch is not None and cfg.teacher_max_score_ratio is not None
        t_teacher = time.perf_counter()

        def score_fn(items: list[tuple[int, int]]) -> list[float]:  # one batched teacher call per round
            groups: dict[int, list[int]] = {}
            for qi, d in items:
                groups.setdefault(qi, []).append(d)
            got = tch.score_lists([queries[qi] for qi in groups], [[corpus_texts[d] for d in ds]
                                                                    for ds in groups.values()])
            table = {(qi, d): s for (qi, ds), row in zip(groups.items(), got) for d, s in zip(ds, row)}
            return [table[it] for it in items]

        tsel = filter_by_teacher(sel.negatives, positives=positives, score_fn=score_fn,
                                 num_negatives=cfg.num_negatives, max_score_ratio=cfg.teacher_max_score_ratio,
                                 sampling=cfg.sampling, seed=cfg.seed)
        sel.negatives, teacher_scores = tsel.negatives, tsel.scores
        if tsel.removed:
            stats.removed["teacher_max_score_ratio"] += tsel.removed
        stats.seconds["teacher"] = time.perf_counter() - t_teacher
    out: list[Pair] = []
    for p in records:
        negs = sel.negatives[q_index[p.query]]
        if len(negs) < cfg.num_negatives:
            stats.short_queries += 1
            stats.empty_queries += not negs
            if cfg.drop_incomplete:
                stats.dropped_incomplete += 1
                continue
        pos_s, neg_s = p.positive_scores, None
        if teacher_scores is not None:  # scored while filtering: no second teacher pass
            qi = q_index[p.query]
            pos_s = [teacher_scores[(qi, texts[t])] for t in p.positives]
            neg_s = [teacher_scores[(qi, i)] for i in negs] or None
        out.append(Pair(query=p.query, positives=list(p.positives), negatives=[corpus_texts[i] for i in negs],
                        positive_scores=pos_s, negative_scores=neg_s, instruction=p.instruction,
                        dataset=p.dataset, id=p.id))
    stats.negatives_written = sum(len(p.negatives) for p in out)
    stats.seconds["filter"] = time.perf_counter() - t2 - stats.seconds.get("teacher", 0.0)

    if tch is not None and teacher_scores is None:
        t3 = time.perf_counter()
        scored = tch.score_lists([p.query for p in out], [[*p.positives, *p.negatives] for p in out])
        for p, s in zip(out, scored):
            p.positive_scores = s[:len(p.positives)]
            p.negative_scores = s[len(p.positives):] or None
        stats.seconds["teacher"] = time.perf_counter() - t3

    if output is not None:
        write_pairs(out, output)
    stats.seconds["total"] = time.perf_counter() - t0
    return MiningResult(pairs=out, stats=stats, corpus=corpus_texts)


def default_cache_dir() -> Path:
    """``$EMBEDKIT_CACHE/embeddings`` (``~/.cache/embedkit/embeddings``); a temp folder if home is read-only."""
    from embedkit.models.folders import cache_dir

    root = cache_dir() / "embeddings"
    try:
        root.mkdir(parents=True, exist_ok=True)
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / "embedkit-embeddings"
