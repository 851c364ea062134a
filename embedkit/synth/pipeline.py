"""``synthesize``: queries for every document of a corpus, filtered, written as ordinary embedkit pairs.

Why a journal: generation is the slow part (minutes to hours on a CPU), so it must survive Ctrl-C and a killed
job. Finished batches of documents go to ``<output>.partial``, one JSON line per batch, flushed as they finish; a
resumed run (``resume=True``) reads it, drops a torn last line, and generates only the batches still missing.
Batches are fixed by the corpus (documents of similar length together, :func:`plan_batches`) and each is seeded
from its index, so a resumed run writes the same file as one that ran through. The partial file's first line
records the generation settings, the generator's precision and a hash of the corpus: a resumed run with other
settings, another precision or another corpus is refused instead of mixing two runs.

Every filter runs at the end, over the whole journal (so a resumed run counts what one run would, and the filter
settings may change between a stop and its resume). The output (``query``, ``positive``, ``query_type``,
``doc_id``, ``id``) is written atomically and only then the partial file removed: the final path appears only when
it is complete.

Example::

    >>> from embedkit.synth import SynthConfig, synthesize
    >>> result = synthesize("docs.jsonl", "pairs.jsonl", SynthConfig(method="crop"))          # doctest: +SKIP
    >>> print(result.stats.summary())                                                       # doctest: +SKIP
    3 documents, 6 queries generated, 5 kept (removed: empty 0, too_long 0, copied 0, duplicate 1, round_trip 0)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedkit.data.schema import Pair
from embedkit.errors import ConfigError, InputError, OutputError
from embedkit.synth.config import SynthConfig
from embedkit.synth.corpus import Document, corpus_digest, read_documents
from embedkit.synth.crop import Candidate, crop_queries
from embedkit.synth.filters import FilterStats, duplicate_mask, first_failing
from embedkit.synth.prompts import build_messages, clean_query, truncate_words

__all__ = ["SynthResult", "partial_path", "plan_batches", "synthesize"]

#: settings that only filter (applied at the end): they may differ between a stopped run and its resume
FILTER_SETTINGS = ("max_query_words", "copy_min_words", "copy_max_ratio", "round_trip_model", "round_trip_k")
#: compared by what they resolve to (``dtype: auto`` is float32 on one machine, bfloat16 on another), not as written
RESOLVED_SETTINGS = ("dtype",)
_VERSION = 2  # 2: LLM batches hold documents of similar length (1: corpus order)


@dataclass
class SynthResult:
    """What a run wrote: the pairs, the filter counts and the generator's throughput in this run."""

    pairs: list[Pair]
    stats: FilterStats
    output: Path
    generated_this_run: int
    generation_seconds: float

    @property
    def queries_per_second(self) -> float:
        return self.generated_this_run / self.generation_seconds if self.generation_seconds > 0 else 0.0


def partial_path(output: str | os.PathLike) -> Path:
    """Where a run keeps its finished batches until the output is complete: ``<output>.partial``."""
    out = Path(output)
    return out.with_name(out.name + ".partial")


def plan_batches(docs: Sequence[Document], config: SynthConfig) -> list[list[int]]:
    """Document indices per batch: ``batch_size`` prompts rounded down to whole documents (at least one); crop
    batches hold ``batch_size`` documents in corpus order.

    LLM batches group documents of similar length, longest first: a left-padded batch costs its longest prompt
    times its rows (prefill dominates on a CPU), so mixing a 60-word and a 200-word document wastes most of the
    short one's row. The order depends only on the corpus and the settings, so a resumed run cuts the same batches;
    the output is written in corpus order whatever the batch order."""
    if config.method == "crop":
        order, per = list(range(len(docs))), config.batch_size
    else:
        per = max(1, config.batch_size // config.queries_per_doc)
        size = [len(truncate_words(d.full_text, config.max_doc_words)) for d in docs]
        order = sorted(range(len(docs)), key=lambda i: (-size[i], i))
    return [order[i:i + per] for i in range(0, len(order), per)]


def _header(config: SynthConfig, docs: Sequence[Document], dtype: str | None = None) -> dict[str, Any]:
    """``dtype``: the generator's precision as loaded (``None`` for crop runs)."""
    settings = {k: v for k, v in config.fingerprint().items() if k not in FILTER_SETTINGS + RESOLVED_SETTINGS}
    return {"embedkit_synth": _VERSION, "settings": settings, "corpus": corpus_digest(list(docs)),
            "documents": len(docs), "dtype": dtype}


def _read_journal(path: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The finished batches of a partial file (a torn last line is cut off); refuses another run's file."""
    raw = path.read_bytes()
    whole = raw.rfind(b"\n") + 1  # each batch is one write ending in a newline: bytes after the last are torn
    if whole < len(raw):
        with open(path, "r+b") as f:
            f.truncate(whole)
    entries: list[dict[str, Any]] = []
    for i, line in enumerate(raw[:whole].split(b"\n")[:-1]):
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise OutputError(f"line {i + 1} is not valid JSON", where=str(path),
                              hint=f"the partial file is damaged; delete {path} to start over") from None
    if not entries or not isinstance(entries[0], dict) or "embedkit_synth" not in entries[0]:
        raise OutputError("is not an embedkit synth partial file", where=str(path),
                          hint=f"delete {path} or choose another --output")
    found = entries[0]
    if found["embedkit_synth"] != _VERSION:
        raise ConfigError(f"was written by another version of embedkit synth (format {found['embedkit_synth']}, "
                          f"this one writes {_VERSION}), which cuts other batches", where=str(path),
                          hint=f"delete {path} to start over, or finish it with the embedkit that started it")
    if found.get("corpus") != header["corpus"] or found.get("documents") != header["documents"]:
        raise ConfigError("was started on another corpus", where=str(path),
                          hint=f"resume with the same --corpus, or delete {path} to start over")
    if found.get("settings") != header["settings"]:
        old, new = found.get("settings") or {}, header["settings"]
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:3])
        raise ConfigError(f"was started with other settings ({shown})", where=str(path),
                          hint=f"resume with the settings of the first run, or delete {path} to start over")
    if found.get("dtype") != header["dtype"]:
        raise ConfigError(f"was generated in {found.get('dtype')}, this run would generate in {header['dtype']}",
                          where=str(path), hint=f"resume with --dtype {found.get('dtype')}, or delete {path} to "
                                                f"start over")
    return {int(e["batch"]): e for e in entries[1:]}


def _load_examples(config: SynthConfig) -> list[tuple[str, str]]:
    if not config.uses_llm or config.examples is None or config.num_examples == 0:
        return []
    from embedkit.data.readers import load_pairs

    if not Path(config.examples).exists():
        raise InputError(f"examples file {config.examples} does not exist", where="--examples",
                         hint="give a pairs file (query / positive) or drop --examples")
    pairs = load_pairs(config.examples)
    return [(p.positives[0], p.query) for p in list(pairs)[: config.num_examples]]


def _query_type(config: SynthConfig, doc_index: int, j: int) -> str:
    """The mix: each document's queries rotate through the types, continuing from the previous document."""
    types = config.query_types
    return types[(doc_index * config.queries_per_doc + j) % len(types)]


def _llm_batch(generator: Any, docs: Sequence[Document], indices: Sequence[int], config: SynthConfig,
               examples: Sequence[tuple[str, str]], batch_index: int) -> list[list[Candidate]]:
    units = [(i, _query_type(config, i, j)) for i in indices for j in range(config.queries_per_doc)]
    prompts = [generator.render(build_messages(docs[i].full_text, t, examples, max_doc_words=config.max_doc_words))
               for i, t in units]
    texts = generator.generate(prompts, max_new_tokens=config.max_new_tokens, sampling=config.sampling,
                               temperature=config.temperature, top_p=config.top_p,
                               seed=config.seed * 1_000_003 + batch_index)
    out: dict[int, list[Candidate]] = {i: [] for i in indices}
    for (i, t), text in zip(units, texts):
        out[i].append(Candidate(clean_query(text), t, docs[i].full_text, source="llm"))
    return [out[i] for i in indices]


def _crop_batch(docs: Sequence[Document], indices: Sequence[int], config: SynthConfig) -> list[list[Candidate]]:
    return [crop_queries(docs[i], config.queries_per_doc, seed=config.seed, min_ratio=config.crop_min_ratio,
                         max_ratio=config.crop_max_ratio) for i in indices]


def _entry(batch_index: int, docs: Sequence[Document], indices: Sequence[int], cands: list[list[Candidate]],
           seconds: float, config: SynthConfig) -> dict[str, Any]:
    rows = []
    mark = config.method == "llm+crop"  # then a crop says so ("m"), as the copied filter skips crops only
    for i, doc_cands in zip(indices, cands):
        rows.append({"doc": i, "id": docs[i].id, "queries": [
            {"q": c.query, "t": c.query_type, **({} if c.positive == docs[i].full_text else {"p": c.positive}),
             **({"m": "crop"} if mark and c.source == "crop" else {})}
            for c in doc_cands]})
    return {"batch": batch_index, "docs": rows, "generated": sum(len(c) for c in cands), "seconds": seconds}


def _round_trip(queries: list[str], sources: list[int], docs: Sequence[Document], config: SynthConfig) -> list[bool]:
    from embedkit.encode import encode
    from embedkit.models import load_model
    from embedkit.synth.filters import round_trip_keep

    model = load_model(config.round_trip_model)
    doc_emb = encode(model, [d.full_text for d in docs], role="document", normalize=True)
    q_emb = encode(model, queries, role="query", normalize=True)
    return round_trip_keep(q_emb, doc_emb, sources, k=config.round_trip_k).tolist()


def _finish(journal: dict[int, dict[str, Any]], docs: Sequence[Document], config: SynthConfig,
            stats: FilterStats) -> list[Pair]:
    rows = sorted((row for entry in journal.values() for row in entry["docs"]), key=lambda row: int(row["doc"]))
    cands = [(int(row["doc"]), q) for row in rows for q in row["queries"]]  # corpus order, whatever the batches
    stats.documents = len(docs)
    stats.generated = len(cands)
    kept: list[tuple[int, dict[str, Any]]] = []
    for i, q in cands:
        failed = first_failing(q["q"], docs[i].full_text, max_words=config.max_query_words,
                               copy_min_words=config.copy_min_words, copy_max_ratio=config.copy_max_ratio,
                               check_copied=config.uses_llm and q.get("m") != "crop")  # crops copy by design
        if failed:
            stats.removed[failed] += 1
        else:
            kept.append((i, q))
    mask = duplicate_mask([q["q"] for _, q in kept])
    stats.removed["duplicate"] = mask.count(False)
    kept = [c for c, keep in zip(kept, mask) if keep]
    if config.round_trip_model is not None and kept:
        mask = _round_trip([q["q"] for _, q in kept], [i for i, _ in kept], docs, config)
        stats.removed["round_trip"] = mask.count(False)
        kept = [c for c, keep in zip(kept, mask) if keep]
    stats.kept = len(kept)
    pairs, counter = [], {}
    for i, q in kept:
        doc = docs[i]
        n = counter[i] = counter.get(i, -1) + 1
        pairs.append(Pair(query=q["q"], positives=[q.get("p", doc.full_text)], id=f"{doc.id}#{n}",
                          query_type=q["t"], doc_id=doc.id))
    return pairs


def synthesize(
    corpus: str | os.PathLike | Sequence[Document],
    output: str | os.PathLike,
    config: SynthConfig | dict[str, Any] | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    generator: Any = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Generate, filter and write synthetic pairs for ``corpus`` (see the module docstring).

    Args:
        corpus: a JSONL corpus / BEIR folder (:func:`~embedkit.synth.corpus.read_documents`) or documents.
        output: the pairs file to write (JSONL, ``.gz`` ok); ``<output>.partial`` holds the finished batches meanwhile.
        config: a :class:`SynthConfig` or its fields as a dict (validated).
        resume: continue ``<output>.partial`` (refused if it came from other settings or another corpus).
            Without it an existing partial file is an error (it is another run's work).
        progress: draw a progress bar (documents, queries/s).
        generator: an already loaded :class:`~embedkit.synth.generator.Generator` (else ``config.model`` is loaded).
        on_batch: called as ``on_batch(documents_done, documents_total)`` after each batch is saved.

    Raises:
        InputError / ConfigError / ModelError / OutputError: bad corpus, settings, generator or output -- all
        before the first query is generated.
    """
    from embedkit.utils.io import check_output_file
    from embedkit.validation import validate

    if config is None:
        config = SynthConfig()
    elif isinstance(config, dict):
        config = validate(SynthConfig, config, style="key", prefix="synth.")
    out = check_output_file(output, where="--output")
    part = partial_path(out)
    docs = list(corpus) if not isinstance(corpus, (str, os.PathLike)) else read_documents(corpus)
    if not docs:
        raise InputError("the corpus holds no documents", where="corpus", hint="give at least one document")
    examples = _load_examples(config)
    dtype: str | None = None  # the precision the queries are generated in: a given generator's, else the setting's
    if config.uses_llm:
        from embedkit.synth.generator import resolve_dtype

        dtype = generator.dtype if generator is not None else resolve_dtype(config.dtype)
    header = _header(config, docs, dtype)
    journal: dict[int, dict[str, Any]] = {}
    if part.exists():
        if not resume:
            raise OutputError(f"a stopped run's partial file {part} exists", where="--output",
                              hint="pass --resume to continue it, or delete it to start over")
        journal = _read_journal(part, header)
    if config.round_trip_model is not None:
        from embedkit.models.loading import check_model

        check_model(config.round_trip_model)
    if config.uses_llm and generator is None:
        from embedkit.synth.generator import Generator

        generator = Generator.load(config.model, dtype=dtype)
    batches = plan_batches(docs, config)
    todo = [k for k in range(len(batches)) if k not in journal]
    done_docs = sum(len(batches[k]) for k in range(len(batches)) if k in journal)
    generated, seconds = 0, 0.0
    if todo:
        from tqdm.auto import tqdm

        part.parent.mkdir(parents=True, exist_ok=True)
        fresh = not part.exists()
        with open(part, "a", encoding="utf-8") as f, tqdm(total=len(docs), initial=done_docs, unit="doc",
                                                           desc="synth", disable=not progress) as bar:
            if fresh:
                f.write(json.dumps(header) + "\n")
                f.flush()
            for k in todo:
                t0 = time.perf_counter()
                if config.method == "crop":
                    cands = _crop_batch(docs, batches[k], config)
                else:
                    cands = _llm_batch(generator, docs, batches[k], config, examples, k)
                    if config.method == "llm+crop":
                        cands = [a + b for a, b in zip(cands, _crop_batch(docs, batches[k], config))]
                dt = time.perf_counter() - t0
                entry = _entry(k, docs, batches[k], cands, dt, config)
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")  # one write per batch: whole or torn
                f.flush()
                os.fsync(f.fileno())
                journal[k] = entry
                generated += entry["generated"]
                seconds += dt
                done_docs += len(batches[k])
                bar.update(len(batches[k]))
                bar.set_postfix_str(f"{generated / seconds if seconds else 0:.1f} queries/s")
                if on_batch is not None:
                    on_batch(done_docs, len(docs))
    stats = FilterStats()
    pairs = _finish(journal, docs, config, stats)
    if not pairs:
        raise OutputError(f"every query was filtered out ({stats.summary()})", where="--output",
                          hint=f"loosen the filters (e.g. --max-query-words, --round-trip-k) and rerun with "
                               f"--resume: {part} keeps the generated queries")
    from embedkit.data.readers import write_pairs

    write_pairs(pairs, out)
    part.unlink(missing_ok=True)
    return SynthResult(pairs=pairs, stats=stats, output=out, generated_this_run=generated,
                       generation_seconds=seconds)
