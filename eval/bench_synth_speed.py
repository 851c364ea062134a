"""Query-generation throughput: embedkit's length-grouped batches and precision vs the same prompts batched in corpus
order in float32 (what a hand-written ``generate`` loop does).

Every arm sends the same prompts (the documents of the packaged train pairs, the query types rotated as
``embedkit synth`` rotates them) through the same loaded generator with the same greedy settings; only the
grouping of prompts into ``generate`` calls differs. On a CPU the prefill of a left-padded batch dominates, and it
costs the longest prompt times the rows, so the corpus-order arm pays for padding; on a CPU with native bf16
(AVX512-BF16 / AMX) bfloat16 weights halve the prefill. Each batch size runs the arms back to back; the table prints
queries/s and the ratio to the float32 corpus-order arm.

    .venv/bin/python eval/bench_synth_speed.py --dataset manpages --docs 64 --batch-sizes 8,16
    .venv/bin/python eval/bench_synth_speed.py --tiny          # seconds: proves it runs (no figure)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402  (the packaged train pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=quality.DATASETS, default="manpages")
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--generator", default="smollm2")
    ap.add_argument("--batch-sizes", default="8,16")
    ap.add_argument("--query-types", default="question,keyword")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="precisions of the length-grouped arms")
    ap.add_argument("--tiny", action="store_true", help="4 documents, batch 2, 4 new tokens")
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.tiny:
        args.docs, args.batch_sizes, args.max_new_tokens = 4, "2", 4

    import torch

    from embedkit.synth import SynthConfig
    from embedkit.synth.generator import Generator
    from embedkit.synth.pipeline import _query_type, plan_batches
    from embedkit.synth.prompts import build_messages

    from bench_synth import documents_of

    docs = documents_of(quality.train_pairs(args.docs, dataset=args.dataset))[: args.docs]
    gen = Generator.load(args.generator, dtype="float32")
    rows = []
    anchor = "corpus order, float32"
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        cfg = SynthConfig(model=args.generator, query_types=args.query_types.split(","), queries_per_doc=1,
                          batch_size=bs, max_new_tokens=args.max_new_tokens)

        def prompt(i: int) -> str:
            qtype = _query_type(cfg, i, 0)
            return gen.render(build_messages(docs[i].full_text, qtype, max_doc_words=cfg.max_doc_words))

        corpus_order = [list(range(i, min(i + bs, len(docs)))) for i in range(0, len(docs), bs)]
        arms = [(anchor, corpus_order, "float32")] + [
            (f"embedkit length-grouped, {d}", plan_batches(docs, cfg), d) for d in args.dtypes.split(",")]
        figures = {}
        for name, plan, dtype in arms:
            gen.model.to(getattr(torch, dtype))
            gen.generate([prompt(plan[0][0])], max_new_tokens=2)  # warm-up (first call in this precision)
            t0 = time.perf_counter()
            for batch in plan:
                gen.generate([prompt(i) for i in batch], max_new_tokens=cfg.max_new_tokens)
            dt = time.perf_counter() - t0
            figures[name] = len(docs) / dt
            print(f"batch {bs}, {name}: {len(docs)} queries in {dt:.1f} s, {figures[name]:.2f} queries/s",
                  file=sys.stderr, flush=True)
        rows.append({"batch_size": bs, **figures})
    names = list(rows[0])[1:]
    print("| batch | " + " | ".join(f"{n} q/s" for n in names) + " |\n|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['batch_size']} | " + " | ".join(
            f"{r[n]:.2f}" + ("" if n == anchor else f" ({r[n] / r[anchor]:.2f}x)") for n in names) + " |")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}},
                                          indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
