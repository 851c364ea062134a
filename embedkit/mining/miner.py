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

import dataclasses

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
from embedkit.mining.cache import EmbeddingCache, EmbeddingView, model_fingerprint
from embedkit.mining.config import MiningConfig, make_config
from embedkit.mining.distributed import rank_world
from embedkit.mining.filters import filter_by_teacher, normalize_text, select_negatives
from embedkit.mining.index import RowSource, as_rows, build_index, build_ivfpq, search, search_blocked, search_ivfpq
from embedkit.utils.io import check_writable_parent

__all__ = ["MiningResult", "MiningStats", "embed_texts", "mine_hard_negatives", "retrieve"]

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
    num_candidates: int | None = None
    candidates_added: int = 0
    teacher_scored: int = 0
    teacher_from_cache: int = 0
    teacher_scored_per_rank: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def pairs_per_second(self) -> float:
        """Teacher throughput: pairs scored (all ranks) per second of the teacher stage (0 if none)."""
        t = self.seconds.get("teacher", 0.0)
        return self.teacher_scored / t if t > 0 and self.teacher_scored else 0.0

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
        if "teacher" in self.seconds:
            lines.append(f"teacher pairs scored: {self.teacher_scored} ({self.pairs_per_second:.1f} pairs/s), "
                         f"read from the score cache: {self.teacher_from_cache}"
                         + (f" (scored per rank: {', '.join(map(str, self.teacher_scored_per_rank))})"
                            if len(self.teacher_scored_per_rank) > 1 else ""))
        if self.num_candidates is not None:
            lines.append(f"candidates appended to the negatives (top {self.num_candidates}, teacher-scored): "
                         f"{self.candidates_added}")
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
                stats: MiningStats | None = None, shard_size: int = 4096,
                lazy: bool = False) -> np.ndarray | EmbeddingView:
    """L2-normalised float32 embeddings of ``texts``, through the on-disk cache when ``cache_dir`` is set.

    ``lazy`` (needs ``cache_dir``): return an :class:`~embedkit.mining.cache.EmbeddingView` that reads (and
    normalises) rows from the cache's shards on demand, instead of one in-memory matrix.
    """
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
                                  show_progress_bar=show_progress_bar, lazy=lazy)
        if stats is not None:
            stats.encoded += cache.encoded
            stats.from_cache += len(texts) - cache.encoded
        if isinstance(emb, EmbeddingView):
            emb.normalize = True
            return emb
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def check_teacher_settings(cfg: MiningConfig, teacher: str | os.PathLike | None, *, flags: bool = False) -> None:
    """Refuse teacher-only settings without a teacher, before any work (``flags``: name the CLI flag)."""
    for name in ("teacher_max_score_ratio", "num_candidates"):
        if getattr(cfg, name) is not None and teacher is None:
            what = ("filters on teacher scores" if name == "teacher_max_score_ratio"
                    else "stores the teacher's scores of the candidates")
            raise ConfigError(f"{name} {what} but no teacher is given",
                              where="--" + name.replace("_", "-") if flags else f"mining.{name}",
                              hint=f"give a teacher (--teacher FOLDER, or miner.teacher in a recipe) or unset {name}")


class _SharedScoring:
    """Teacher scoring of (query index, corpus id) pairs that every ``torchrun`` rank takes part in.

    Rank 0 decides what to score; each request is broadcast, and every rank scores its slice of the missing shards
    into the shared score cache (:meth:`TeacherScorer.score`). The other ranks sit in :meth:`serve` until rank 0
    calls :meth:`close` -- also when it fails, so no rank is left waiting. One process: plain cached scoring.
    A bi-encoder teacher's cost is encoding, which its embedding cache already shards over the ranks (with a
    barrier per call), so there every rank runs the whole request in step and only the encoding is split.
    """

    def __init__(self, scorer: Any, queries: list[str], corpus: list[str]) -> None:
        self.scorer, self.queries, self.corpus = scorer, queries, corpus
        self.world = rank_world()[1]
        self.split = self.world > 1 and getattr(scorer.teacher, "kind", "cross") == "cross"
        self.known: dict[tuple[int, int], float] = {}
        self.seconds = 0.0

    def _broadcast(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _run(self, items: list[tuple[int, int]]) -> None:
        got = self.scorer.score([(self.queries[q], self.corpus[d]) for q, d in items], collective=self.split)
        self.known.update(zip(items, (float(x) for x in got)))

    def score(self, items: Sequence[tuple[int, int]]) -> list[float]:
        """Scores of ``items`` (rank 0), each pair scored at most once per run and per cache."""
        t0 = time.perf_counter()
        new = list(dict.fromkeys(it for it in items if it not in self.known))
        if new:
            if self.world > 1:
                self._broadcast(np.asarray(new, dtype=np.int64))
            self._run(new)
        self.seconds += time.perf_counter() - t0
        return [self.known[it] for it in items]

    def serve(self) -> None:
        """Ranks other than 0: score what rank 0 broadcasts until it says stop."""
        while True:
            msg = self._broadcast(None)
            if not isinstance(msg, np.ndarray):
                if msg == "failed":
                    raise RuntimeError("rank 0 failed while teacher scoring; see its error")
                return
            self._run([(int(q), int(d)) for q, d in msg])

    def close(self, ok: bool) -> None:
        """Rank 0: release the other ranks (``ok`` False: rank 0 is failing)."""
        if self.world > 1:
            self._broadcast("done" if ok else "failed")

    def gather_counts(self, stats: MiningStats) -> None:
        """Every rank: total the pairs scored / read from the cache into ``stats``."""
        scored, cached = self.scorer.scored, self.scorer.from_cache
        if self.split:
            import torch.distributed as dist

            counts: list[Any] = [None] * self.world
            dist.all_gather_object(counts, scored)
            stats.teacher_scored_per_rank = [int(c) for c in counts]
            scored = sum(stats.teacher_scored_per_rank)
        stats.teacher_scored, stats.teacher_from_cache = scored, cached


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
    check_teacher_settings(cfg, teacher)
    stream = cfg.block_size is not None or cfg.index == "ivfpq"
    if cfg.block_size is not None and cache_dir is None:
        raise ConfigError("block_size streams the corpus from the embedding cache, but no cache folder is given",
                          where="mining.block_size", hint="pass a cache folder (--cache-dir DIR) or unset block_size")
    if cfg.index == "ivfpq" and cfg.use_gpu is True:
        raise ConfigError("index=ivfpq runs on the CPU (codes are small; exact re-scoring reads the cache)",
                          where="mining.use_gpu", hint="use use_gpu=auto or false with ivfpq, or index=flat/ivf")
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
    stats = MiningStats(records=len(records), num_negatives=cfg.num_negatives, num_candidates=cfg.num_candidates)

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
    doc_emb = embed_texts(st_model, corpus_texts, role="document", lazy=stream and cache_dir is not None,
                          **common)
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
    shared = None
    if tch is not None:
        from embedkit.mining.scores import TeacherScorer

        shared = _SharedScoring(TeacherScorer(tch, cache_dir, shard_size=shard_size,
                                              show_progress_bar=show_progress_bar), queries, corpus_texts)
    if rank != 0:
        if shared is not None:  # score the slices rank 0 asks for, then report the counts
            shared.serve()
            shared.gather_counts(stats)
        return MiningResult(pairs=[], stats=stats)
    ok = False
    try:
        out = _select_and_score(cfg, stats, records, texts, corpus_texts, queries, q_index, positives, doc_emb,
                                q_emb, shared, show_progress_bar)
        ok = True
    finally:
        if shared is not None:
            shared.close(ok)
    if shared is not None:
        shared.gather_counts(stats)
        stats.seconds["teacher"] = shared.seconds
    if output is not None:
        write_pairs(out, output)
    stats.seconds["total"] = time.perf_counter() - t0
    return MiningResult(pairs=out, stats=stats, corpus=corpus_texts)


def min_positive_scores(docs: np.ndarray | RowSource, q_emb: np.ndarray, positives: Sequence[set[int]], *,
                        max_rows: int = 65536) -> np.ndarray:
    """Each query's lowest positive score, gathering at most ``max_rows`` positive vectors at a time."""
    src = as_rows(docs)
    out = np.empty(len(positives), dtype=np.float64)
    start = 0
    while start < len(positives):
        stop, rows = start, 0
        while stop < len(positives) and (rows == 0 or rows + len(positives[stop]) <= max_rows):
            rows += len(positives[stop])
            stop += 1
        ids = [sorted(p) for p in positives[start:stop]]
        vecs = src.rows(np.fromiter((d for p in ids for d in p), dtype=np.int64, count=rows))
        at = 0
        for i, p in enumerate(ids, start):
            out[i] = float((vecs[at:at + len(p)] @ q_emb[i]).min())
            at += len(p)
        start = stop
    return out


def retrieve(cfg: MiningConfig, docs: np.ndarray | RowSource, q_emb: np.ndarray, k: int, *,
             show_progress_bar: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(scores, ids)`` of every query with the index the config asks for.

    ``docs`` is an in-memory matrix or an :class:`~embedkit.mining.cache.EmbeddingView` over the cache. With
    ``index=ivfpq`` or ``block_size`` set the corpus is read block by block (bounded memory); otherwise it is
    loaded whole into a FAISS index, as before.

    Example:
        >>> import numpy as np
        >>> from embedkit.mining.config import MiningConfig
        >>> docs = np.eye(3, dtype=np.float32)
        >>> retrieve(MiningConfig(block_size=2), docs, docs[1:2], k=1)[1].tolist()
        [[1]]
    """
    n = as_rows(docs).shape[0]
    block = cfg.block_size or 65536
    if cfg.index == "ivfpq":
        index = build_ivfpq(docs, nlist=cfg.nlist, nprobe=cfg.nprobe, pq_m=cfg.pq_m, pq_bits=cfg.pq_bits,
                            block_size=block, seed=cfg.seed)
        return search_ivfpq(index, docs, q_emb, k, refine=cfg.pq_refine, show_progress_bar=show_progress_bar)
    if cfg.block_size is not None:
        return search_blocked(docs, q_emb, k, block_size=block, show_progress_bar=show_progress_bar)
    matrix = docs if isinstance(docs, np.ndarray) else as_rows(docs).rows(np.arange(n))
    index = build_index(matrix, cfg.index, nlist=cfg.nlist, nprobe=cfg.nprobe, hnsw_m=cfg.hnsw_m,
                        ef_search=cfg.ef_search, use_gpu=cfg.use_gpu, seed=cfg.seed)
    return search(index, q_emb, k, ef_search=cfg.ef_search, show_progress_bar=show_progress_bar)


def _select_and_score(cfg: MiningConfig, stats: MiningStats, records: list[Pair], texts: dict[str, int],
                      corpus_texts: list[str], queries: list[str], q_index: dict[str, int],
                      positives: list[set[int]], doc_emb: np.ndarray | RowSource, q_emb: np.ndarray,
                      shared: _SharedScoring | None, show_progress_bar: bool | None) -> list[Pair]:
    """Rank 0: search, select the negatives, add the candidates and the teacher's scores."""
    t1 = time.perf_counter()
    min_pos = min_positive_scores(doc_emb, q_emb, positives)
    max_pos = max(len(p) for p in positives)
    k = min(max(cfg.range_max, cfg.num_candidates or 0) + max_pos, len(corpus_texts))
    scores, cand = retrieve(cfg, doc_emb, q_emb, k, show_progress_bar=show_progress_bar)
    stats.seconds["search"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    key_of: dict[str, int] = {}
    norm_keys = np.fromiter((key_of.setdefault(normalize_text(t), len(key_of)) for t in corpus_texts),
                            dtype=np.int64, count=len(corpus_texts))
    by_teacher = shared is not None and cfg.teacher_max_score_ratio is not None
    # with the teacher filter, keep every survivor of rules 1-5 (rank order): filter_by_teacher picks among them
    sel = select_negatives(cand, scores, positives=positives, min_pos=min_pos, norm_keys=norm_keys,
                           num_negatives=cfg.range_max - cfg.range_min if by_teacher else cfg.num_negatives,
                           range_min=cfg.range_min, range_max=cfg.range_max,
                           max_score_ratio=cfg.max_score_ratio, max_score_margin=cfg.max_score_margin,
                           drop_duplicates=cfg.drop_duplicates, sampling="top" if by_teacher else cfg.sampling,
                           seed=cfg.seed)
    stats.candidates = sel.candidates
    stats.removed = sel.removed
    # the listwise candidates: the top num_candidates ranks with the positives (and their duplicates) removed and
    # no score rule -- the teacher's score, not the retriever's, says how relevant they are
    candidates: list[list[int]] = [[] for _ in queries]
    if cfg.num_candidates is not None:
        candidates = select_negatives(cand, scores, positives=positives, min_pos=min_pos, norm_keys=norm_keys,
                                      num_negatives=cfg.num_candidates, range_min=0, range_max=cfg.num_candidates,
                                      max_score_ratio=None, max_score_margin=None,
                                      drop_duplicates=cfg.drop_duplicates, sampling="top").negatives
    t_filter = time.perf_counter() - t2
    if shared is not None:
        # one batched (and, under torchrun, sharded) request for everything known now: positives, candidates and,
        # without the teacher filter, the negatives; the filter's later rounds ask only for what is still missing
        first = [(q, d) for q in range(len(queries)) for d in sorted(positives[q])]
        first += [(q, d) for q in range(len(queries)) for d in candidates[q]]
        if not by_teacher:
            first += [(q, d) for q in range(len(queries)) for d in sel.negatives[q]
                      if not (cfg.drop_incomplete and len(sel.negatives[q]) < cfg.num_negatives)]
        shared.score(first)
    if by_teacher:
        assert shared is not None and cfg.teacher_max_score_ratio is not None
        tsel = filter_by_teacher(sel.negatives, positives=positives, score_fn=shared.score,
                                 num_negatives=cfg.num_negatives, max_score_ratio=cfg.teacher_max_score_ratio,
                                 sampling=cfg.sampling, seed=cfg.seed)
        sel.negatives = tsel.negatives
        if tsel.removed:
            stats.removed["teacher_max_score_ratio"] += tsel.removed
    t3 = time.perf_counter()
    kept: list[tuple[Pair, int, list[int]]] = []
    for p in records:
        qi = q_index[p.query]
        negs = sel.negatives[qi]
        if len(negs) < cfg.num_negatives:
            stats.short_queries += 1
            stats.empty_queries += not negs
            if cfg.drop_incomplete:
                stats.dropped_incomplete += 1
                continue
        chosen = set(negs)
        extra = [c for c in candidates[qi] if c not in chosen]  # the mined negatives first, as without candidates
        kept.append((p, qi, [*negs, *extra]))
        stats.negatives_written += len(negs)
        stats.candidates_added += len(extra)
    t_filter += time.perf_counter() - t3
    if shared is not None:  # normally all known already; the query of several records is scored once
        shared.score([(qi, d) for p, qi, stored in kept for d in [*(texts[t] for t in p.positives), *stored]])
    out: list[Pair] = []
    for p, qi, stored in kept:
        pos_s, neg_s = p.positive_scores, None
        if shared is not None:
            pos_s = [shared.known[(qi, texts[t])] for t in p.positives]
            neg_s = [shared.known[(qi, d)] for d in stored] or None
        # every other field of the record (instruction, id, query_type, doc_id...) is kept as it came
        out.append(dataclasses.replace(p, positives=list(p.positives), negatives=[corpus_texts[i] for i in stored],
                                       positive_scores=pos_s, negative_scores=neg_s))
    stats.seconds["filter"] = t_filter
    return out

def default_cache_dir() -> Path:
    """``$EMBEDKIT_CACHE/embeddings`` (``~/.cache/embedkit/embeddings``); a temp folder if home is read-only."""
    from embedkit.models.folders import cache_dir

    root = cache_dir() / "embeddings"
    try:
        root.mkdir(parents=True, exist_ok=True)
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / "embedkit-embeddings"
