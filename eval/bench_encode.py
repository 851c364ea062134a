"""Benchmark: embedkit.encode vs SentenceTransformer.encode -- same model, same texts, same batch size, one run.

Runs the two alternately (A B A B ...) so machine noise hits both, checks the embeddings agree, prints per-round and
median ratios. Texts: the first N documents of the packaged Debian corpus (real package descriptions).

    .venv/bin/python eval/bench_encode.py --n 5000 --batch-size 32 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from embedkit import encode, load_model  # noqa: E402
from embedkit.data.beir import load_beir  # noqa: E402
from embedkit.data.samples import sample_path  # noqa: E402
from embedkit.models import resolve_model_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    corpus = load_beir(sample_path("debian-beir")).corpus
    texts = [d["text"] for d in list(corpus.values())[: args.n]]
    words = [len(t.split()) for t in texts]
    print(f"texts: {len(texts)} Debian descriptions, {statistics.mean(words):.0f} words on average; "
          f"batch size {args.batch_size}; torch threads {torch.get_num_threads()}")

    path = resolve_model_path("minilm")
    anchor = SentenceTransformer(path)
    ours = load_model("minilm")
    anchor.encode(texts[:64], batch_size=args.batch_size)  # warm-up both
    encode(ours, texts[:64], batch_size=args.batch_size)

    ratios = []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ref = anchor.encode(texts, batch_size=args.batch_size)
        t_st = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb = encode(ours, texts, batch_size=args.batch_size, show_progress_bar=False)
        t_ek = time.perf_counter() - t0
        cos = (emb * ref).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
        ratios.append(t_st / t_ek)
        print(f"round {r + 1}: sentence-transformers {t_st:.1f} s ({len(texts) / t_st:.0f}/s), "
              f"embedkit {t_ek:.1f} s ({len(texts) / t_ek:.0f}/s), speed-up {t_st / t_ek:.2f}x, "
              f"min cosine {cos.min():.6f}")
    print(f"median speed-up over {args.rounds} rounds: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
