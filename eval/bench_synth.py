"""Corpus-only adaptation, measured: base MiniLM vs MiniLM trained on synthetic pairs (LLM, per query type and the
mix) vs the crop fallback vs the same budget on the real pairs (the upper bound).

The synopses stay hidden: queries are generated only from the *training* documents (the long descriptions of the
packaged Debian train pairs, or the man pages' DESCRIPTION sections with ``--dataset manpages``); every arm is then
scored on the real held-out queries of other source families (``eval/quality.py``'s split: 400 queries x 10,000
documents by default). Every arm trains ``recipes/minilm-cpu.yaml`` at the same budget (``quality.budget``), so the
only difference is where the pairs came from. The generator's throughput (queries/s, this machine) is printed too.

    .venv/bin/python eval/bench_synth.py -o runs/synth                    # the full comparison (hours on 2 cores)
    .venv/bin/python eval/bench_synth.py --tiny -o runs/synth-tiny         # a minutes-long proof that it runs
    .venv/bin/python eval/bench_synth.py -o runs/synth --reuse --union     # one more arm: crop + LLM pairs together;
                                                                           # the sets and scores of the first run kept

Target (issue 30): synthetic >= base + 3.0 nDCG@10 and >= 60 % of the real-pairs gain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402  (the held-out split, the recipe arms and the scorer)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def documents_of(pairs: list) -> list:
    """The training documents (first positive of each pair, de-duplicated); the queries are thrown away."""
    from embedkit.synth.corpus import Document

    seen, docs = set(), []
    for i, p in enumerate(pairs):
        text = p.positives[0]
        if text not in seen:
            seen.add(text)
            docs.append(Document(id=p.id or f"d{i}", text=text))
    return docs


def generate(docs: list, out: Path, cfg_kw: dict, generator) -> tuple[Path, dict]:
    from embedkit.synth import SynthConfig, synthesize

    cfg = SynthConfig(**cfg_kw)
    t0 = time.perf_counter()
    result = synthesize(docs, out, cfg, generator=generator, resume=True, progress=True)
    info = {"summary": result.stats.summary(), "pairs": len(result.pairs), "seconds": time.perf_counter() - t0,
            "queries_per_second": result.queries_per_second, "settings": cfg.model_dump(mode="json")}
    log(f"  {out.name}: {info['summary']}; {info['queries_per_second']:.2f} queries/s")
    return out, info


#: what an arm's score depends on besides its pairs: a score is reused only when all of these are unchanged
SCORE_KEYS = ("dataset", "docs", "max_queries", "max_corpus", "steps", "batch_size", "gradcache_factor",
              "gradcache_chunk", "negatives", "seed", "bf16")


class Earlier:
    """What an earlier run recorded in ``OUT/bench_synth.json``, for ``--reuse``: a synthetic set is taken again when
    it was made with the same settings and its pairs file is still there; an arm's score when, besides, every
    training and scoring setting (``SCORE_KEYS``) is the same. Without ``--reuse`` nothing is taken."""

    def __init__(self, out: Path, args: argparse.Namespace, enabled: bool = True) -> None:
        path = out / "bench_synth.json"
        self.record = json.loads(path.read_text(encoding="utf-8")) if enabled and path.is_file() else {}
        old = self.record.get("args", {})
        self.same_budget = bool(self.record) and all(old.get(k) == str(getattr(args, k)) for k in SCORE_KEYS)

    def synth(self, name: str, path: Path, cfg_kw: dict) -> dict | None:
        from embedkit.synth import SynthConfig

        old = self.record.get("synth", {}).get(name)
        if old is None or not path.is_file() or old.get("settings") != SynthConfig(**cfg_kw).model_dump(mode="json"):
            return None
        log(f"  {path.name}: reused ({old['summary']})")
        return old

    def score(self, name: str) -> dict[str, float] | None:
        found = self.record.get("scores", {}).get(name) if self.same_budget else None
        if found is not None:
            log(f"  {name}: score reused, nDCG@10 {found['ndcg@10']:.4f}")
        return found


def union(paths: list[Path], out: Path, seed: int) -> Path:
    """The pairs of several synthetic sets in one file, shuffled with ``seed`` so that batches mix the methods; ids
    are prefixed with the set's file stem (each set numbers its queries ``<doc>#<n>`` from 0)."""
    import dataclasses
    import random

    from embedkit.data.readers import load_pairs, write_pairs

    pairs = [dataclasses.replace(p, id=f"{path.stem}:{p.id}") for path in paths for p in load_pairs(path)]
    random.Random(seed).shuffle(pairs)
    write_pairs(pairs, out)
    return out


CROP = "crop fallback (title / first line + random spans)"


def mix_name(args: argparse.Namespace) -> str:
    return f"synthetic LLM, mix {args.query_types.replace(',', '+')}"


def synthetic_sets(args: argparse.Namespace) -> dict[str, dict]:
    """Each synthetic arm's name and its ``SynthConfig`` settings (beyond the common ones). The LLM arms name their
    method: the product default (``llm+crop``) would add crops to them."""
    sets: dict[str, dict] = {} if args.skip_crop else {CROP: {"method": "crop"}}
    if not args.skip_llm:
        types = args.query_types.split(",")
        sets[mix_name(args)] = {"method": "llm", "model": args.generator, "query_types": types}
        if args.per_type:
            for t in types:
                sets[f"synthetic LLM, {t} only"] = {"method": "llm", "model": args.generator, "query_types": [t]}
    return sets


def train_and_score(args: argparse.Namespace, pairs_path: Path, out: Path, beir) -> dict[str, float]:
    arm = quality.make_arm(quality.MINILM_RECIPE, quality.budget(args, pairs_path, out),
                           {} if args.negatives is None else quality.negatives(args.negatives))
    log(f"  training {arm.describe()}")
    model, _clock = quality.run_embedkit(arm, out)
    return quality.score(model, beir)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a combination that cannot run is refused here, before anything loads."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--dataset", choices=quality.DATASETS, default="debian")
    ap.add_argument("--docs", type=int, default=2000, help="training documents to generate from (and real pairs)")
    ap.add_argument("--max-queries", type=int, default=400)
    ap.add_argument("--max-corpus", type=int, default=10000)
    ap.add_argument("--generator", default="smollm2", help="alias or causal-LM folder")
    ap.add_argument("--query-types", default="question,keyword,title,claim", help="the mix (comma-separated)")
    ap.add_argument("--per-type", action="store_true", help="also one arm per query type")
    ap.add_argument("--queries-per-doc", type=int, default=2)
    ap.add_argument("--gen-batch-size", type=int, default=8, help="documents per generate call (8 is fastest on a CPU)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="generator precision")
    ap.add_argument("--round-trip-model", default=None, help="e.g. minilm (off by default: it is the base model)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--gradcache-factor", type=int, default=1)
    ap.add_argument("--gradcache-chunk", type=int, default=32)
    ap.add_argument("--negatives", type=int, default=None, help="mined negatives per query (default: the recipe's)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--skip-llm", action="store_true", help="crop and real arms only (no generator)")
    ap.add_argument("--skip-crop", action="store_true", help="no crop arm")
    ap.add_argument("--union", action="store_true",
                    help="also an arm on the crop and LLM-mix pairs together, in one shuffled file")
    ap.add_argument("--reuse", action="store_true",
                    help="take from an earlier run's OUT/bench_synth.json each synthetic set made with the same "
                         "settings (not generated again) and, at the same training and scoring settings, each score "
                         "(not trained again); the record keeps the earlier arms this run skips")
    ap.add_argument("--skip-real", action="store_true",
                    help="no real-pairs arm (the share column needs it; it does not depend on the synthetic arms)")
    ap.add_argument("--tiny", action="store_true",
                    help="prove the script runs: 6 documents, 20 queries x 300 docs, 2 steps of 2 pairs, "
                         "1 query per document")
    args = ap.parse_args(argv)
    if args.tiny:
        args.docs, args.max_queries, args.max_corpus, args.steps, args.batch_size = 6, 20, 300, 2, 2
        args.queries_per_doc, args.max_new_tokens, args.negatives, args.query_types = 1, 16, 0, "question,keyword"
    if args.union and (args.skip_crop or args.skip_llm):
        ap.error("--union trains on the crop and the LLM-mix pairs together: drop --skip-crop / --skip-llm")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from embedkit.data.readers import write_pairs
    from embedkit.models import load_model

    args.out.mkdir(parents=True, exist_ok=True)
    pairs = quality.train_pairs(args.docs, dataset=args.dataset)
    beir = quality.eval_split(args.max_queries, args.max_corpus, args.seed, dataset=args.dataset)
    docs = documents_of(pairs)
    log(f"{len(docs)} training documents (queries hidden); held out: {len(beir.queries)} queries x "
        f"{len(beir.corpus)} documents")
    earlier = Earlier(args.out, args, enabled=args.reuse)
    base_name = "base all-MiniLM-L6-v2"
    rows: dict[str, dict[str, float]] = {}
    # the base as the trained arms start from it: the recipe's model settings (max_seq_length 128), as quality.py
    rows[base_name] = earlier.score(base_name) or quality.score(
        load_model(quality.make_arm(quality.MINILM_RECIPE).load().model), beir)
    info: dict[str, dict] = {}
    common = dict(queries_per_doc=args.queries_per_doc, batch_size=args.gen_batch_size, seed=args.seed,
                  dtype=args.dtype, max_new_tokens=args.max_new_tokens, round_trip_model=args.round_trip_model)
    sets = synthetic_sets(args)
    generator = None
    made: dict[str, Path] = {}
    for i, (name, kw) in enumerate(sets.items()):
        path = args.out / f"synth-{i}.jsonl"
        old = earlier.synth(name, path, {**common, **kw})
        llm = kw.get("method") != "crop"
        if old is None and llm and generator is None:
            from embedkit.synth.generator import Generator

            t0 = time.perf_counter()
            generator = Generator.load(args.generator, dtype=args.dtype)
            log(f"generator {args.generator} ({generator.dtype}) loaded in {time.perf_counter() - t0:.1f} s")
        info[name] = old or generate(docs, path, {**common, **kw}, generator if llm else None)[1]
        made[name] = path
        rows[name] = (old and earlier.score(name)) or train_and_score(args, path, args.out / f"arm-{i}", beir)
        log(f"  {name}: nDCG@10 {rows[name]['ndcg@10']:.4f}")
    if args.union:
        name = "crop + LLM mix, one file"
        both = union([made[CROP], made[mix_name(args)]], args.out / "synth-union.jsonl", args.seed)
        rows[name] = train_and_score(args, both, args.out / "arm-union", beir)
        log(f"  {name}: nDCG@10 {rows[name]['ndcg@10']:.4f}")
    real_name = "real pairs, same budget (upper bound)"
    if not args.skip_real:
        real = args.out / "real.jsonl"
        write_pairs(pairs, real)
        rows[real_name] = earlier.score(real_name) or train_and_score(args, real, args.out / "arm-real", beir)
    if earlier.same_budget:  # keep the earlier arms this run skipped
        rows = {**earlier.record.get("scores", {}), **rows}
        info = {**earlier.record.get("synth", {}), **info}
    base = rows[base_name]["ndcg@10"]
    gain_real = rows[real_name]["ndcg@10"] - base if real_name in rows else 0.0
    lines = ["| arm | nDCG@10 | vs base | share of the real-pairs gain | queries/s |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        d = r["ndcg@10"] - base
        share = f"{100 * d / gain_real:.0f} %" if gain_real > 0 and name not in (base_name, real_name) else ""
        qps = f"{info[name]['queries_per_second']:.2f}" if name in info else ""
        lines.append(f"| {name} | {r['ndcg@10']:.4f} | {d:+.4f} | {share} | {qps} |")
    print("\n".join(lines))
    dtype = generator.dtype if generator else earlier.record.get("generator_dtype")
    record = {"scores": rows, "synth": info, "generator_dtype": dtype,
              "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "bench_synth.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
