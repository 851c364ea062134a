"""The ready GPU check (run by ``eval/gpu_check.sh``): bf16 training and encode throughput on one GPU.

Why: embedkit's CPU tests prove GradCache, FSDP2 and saving *correct*; they say nothing about speed or memory on
the hardware users train on. This script measures, for MiniLM (all-MiniLM-L6-v2, full fine-tune) and SmolLM2-135M
(bidirectional, mean pooling, LoRA), under bf16 autocast with sdpa attention (and flash-attention 2 when
``flash_attn`` imports):

* a plain contrastive step (InfoNCE, in-batch negatives) at batch 64 and a GradCache step at batch 4,096 (chunks
  of 64): seconds per step, tokens/s, peak GPU memory, MFU (model FLOPs: 6 x params x tokens for a full
  fine-tune, 4 x for LoRA -- the frozen base needs no weight gradients; GradCache's extra no-grad forward is
  overhead, not counted);
* encode throughput of :func:`embedkit.encode` (token-budget batches) vs sentence-transformers' own
  ``SentenceTransformer.encode`` on the same model and texts.

It writes ``gpu_check.json`` (one record per measurement) and ``gpu_check.md`` (the same as a table) into
``--out``. ``--dry-run`` runs everything on CPU in seconds with 2-layer random models and tiny batches (what CI
runs: ``tests/test_gpu_check.py``); its figures mean nothing, its fields are the real ones. Never make CI depend
on the GPU figures; record them in BENCHMARKS.md.

Example:
    $ eval/gpu_check.sh --out eval/results/gpu_check          # on a GPU machine, <= 8 minutes on one H100/H200
    $ python eval/gpu_check.py --dry-run --out /tmp/gc         # anywhere, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

#: dense bf16 peak FLOP/s by device-name fragment (vendor data sheets, SXM parts)
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}
RESULT_FIELDS = ("model", "attn", "mode", "batch", "chunk", "step_s", "tokens_per_s", "peak_mem_gb", "mfu")
ENCODE_FIELDS = ("model", "attn", "texts", "embedkit_texts_per_s", "st_texts_per_s", "speedup")


def _texts(n: int) -> tuple[list[str], list[str]]:
    """``n`` (query, document) pairs of real text: the bundled Debian sample, cycled."""
    from embedkit.data.readers import pair_from_record
    from embedkit.data.samples import sample_path

    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        pairs = [pair_from_record(json.loads(line)) for line in f]
    pairs = [pairs[i % len(pairs)] for i in range(n)]
    return [p.query for p in pairs], [p.positives[0] for p in pairs]


def _tiny_models(root: Path) -> dict[str, dict[str, Any]]:
    """2-layer random BERT and Llama folders with MiniLM's tokenizer (the dry run's stand-ins)."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, LlamaConfig

    from embedkit.models.folders import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    torch.manual_seed(0)
    bert, llama = root / "tiny-bert", root / "tiny-llama"
    AutoModel.from_config(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=128)).save_pretrained(bert)
    AutoModel.from_config(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      pad_token_id=tok.pad_token_id)).save_pretrained(llama)
    tok.save_pretrained(bert)
    tok.save_pretrained(llama)
    return {"minilm": {"name": str(bert)},
            "smollm2-bidir-lora": {"name": str(llama), "bidirectional": True, "pooling": "mean",
                                   "lora": {"r": 4, "alpha": 8}}}


def _real_models() -> dict[str, dict[str, Any]]:
    return {"minilm": {"name": "minilm"},
            "smollm2-bidir-lora": {"name": "smollm2", "bidirectional": True, "pooling": "mean",
                                   "lora": {"r": 16, "alpha": 32}}}


def _to(features: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _attn_impls(device: torch.device) -> list[str]:
    impls = ["sdpa"]
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        impls.append("flash_attention_2")
    return impls


def _train_step_time(model, queries, docs, *, batch: int, chunk: int | None, steps: int, device: torch.device,
                     ) -> tuple[float, int]:
    """Mean seconds per optimizer step (after one warm-up step) and padded-free tokens per step."""
    from embedkit.losses import InfoNCELoss, make_batch
    from embedkit.training.gradcache import GradCache, compute_loss_uncached

    loss_fn = InfoNCELoss(temperature=0.05)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    qf = _to(model.preprocess(queries[:batch]), device)
    df = _to(model.preprocess(docs[:batch]), device)
    tokens = int(qf["attention_mask"].sum() + df["attention_mask"].sum())
    build = lambda q, d: make_batch(q, d, 1)  # noqa: E731
    amp = torch.autocast(device.type, dtype=torch.bfloat16)
    times = []
    for i in range(steps + 1):
        if i == 1 and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        with amp:
            if chunk:
                GradCache(model, loss_fn, chunk_size=chunk).forward_backward(qf, df, build)
            else:
                loss, _ = compute_loss_uncached(model, loss_fn, qf, df, build)
                loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times), tokens


def _encode_rates(model, texts: list[str], batch: int, device: torch.device) -> tuple[float, float]:
    from embedkit.encode import encode

    model.eval()
    rates = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        for fn in (lambda: encode(model, texts, batch_size=batch, show_progress_bar=False),
                   lambda: model.encode(texts, batch_size=batch, show_progress_bar=False)):
            fn()  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            rates.append(len(texts) / (time.perf_counter() - t0))
    model.train()
    return rates[0], rates[1]


def run(dry_run: bool, out: Path, steps: int | None = None) -> dict[str, Any]:
    """Measure everything; write ``out/gpu_check.json`` and ``out/gpu_check.md``; return the JSON object."""
    from embedkit.models import load_model

    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not dry_run else "cpu")
    if not dry_run and device.type != "cuda":
        raise SystemExit("gpu_check: no CUDA device (use --dry-run for the CPU smoke run)")
    sizes = dict(plain=4, gc_batch=16, chunk=4, seq=32, encode=64, steps=1) if dry_run else \
        dict(plain=64, gc_batch=4096, chunk=64, seq=128, encode=8192, steps=3)
    steps = steps or sizes["steps"]
    if dry_run:
        torch.set_num_threads(1)  # tiny models: threads only add overhead (and CI machines are shared)
    queries, docs = _texts(max(sizes["gc_batch"], sizes["encode"]))
    tmp = tempfile.TemporaryDirectory()
    specs = _tiny_models(Path(tmp.name)) if dry_run else _real_models()
    results: list[dict[str, Any]] = []
    encodes: list[dict[str, Any]] = []
    peak = _peak_flops(device)
    for label, spec in specs.items():
        for attn in _attn_impls(device):
            rest = {k: v for k, v in spec.items() if k != "name"}
            model = load_model(spec["name"], attn_implementation=attn, max_seq_length=sizes["seq"], **rest).to(device)
            model.train()
            n_params = sum(p.numel() for p in model.parameters())
            lora = "lora" in spec
            flops_per_token = (4 if lora else 6) * n_params
            for mode, batch, chunk in (("plain", sizes["plain"], None),
                                       ("gradcache", sizes["gc_batch"], sizes["chunk"])):
                step_s, tokens = _train_step_time(model, queries, docs, batch=batch, chunk=chunk, steps=steps,
                                                  device=device)
                tps = tokens / step_s
                results.append({"model": label, "attn": attn, "mode": mode, "batch": batch, "chunk": chunk,
                                "step_s": round(step_s, 4), "tokens_per_s": round(tps, 1),
                                "peak_mem_gb": None if _peak_gb(device) is None else round(_peak_gb(device), 3),
                                "mfu": None if peak is None else round(flops_per_token * tps / peak, 4),
                                "params": n_params, "lora": lora})
            ek, st = _encode_rates(model, docs[:sizes["encode"]], sizes["plain"], device)
            encodes.append({"model": label, "attn": attn, "texts": sizes["encode"],
                            "embedkit_texts_per_s": round(ek, 1), "st_texts_per_s": round(st, 1),
                            "speedup": round(ek / st, 3)})
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    tmp.cleanup()
    import sentence_transformers
    import transformers

    report = {
        "dry_run": dry_run,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": "bfloat16 autocast",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__, "python": sys.version.split()[0]},
        "peak_bf16_flops": peak,
        "sizes": sizes,
        "train": results,
        "encode": encodes,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    return report


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def markdown(report: dict[str, Any]) -> str:
    """The report as two markdown tables (training, encode)."""
    lines = [f"# GPU check ({report['device']}, {report['dtype']}{', DRY RUN: figures meaningless' if report['dry_run'] else ''})",
             "", "| " + " | ".join(RESULT_FIELDS) + " |", "|" + "---|" * len(RESULT_FIELDS)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in RESULT_FIELDS) + " |" for r in report["train"]]
    lines += ["", "| " + " | ".join(ENCODE_FIELDS) + " |", "|" + "---|" * len(ENCODE_FIELDS)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in ENCODE_FIELDS) + " |" for r in report["encode"]]
    lines += ["", f"elapsed: {report['elapsed_s']} s", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny random models and sizes: seconds")
    ap.add_argument("--out", default="eval/results/gpu_check", help="folder for gpu_check.json / gpu_check.md")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 3; dry run 1)")
    ns = ap.parse_args(argv)
    with contextlib.suppress(AttributeError):
        torch.backends.cuda.matmul.allow_tf32 = True
    report = run(ns.dry_run, Path(ns.out), ns.steps)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
