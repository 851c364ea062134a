"""Run by ``tests/distributed/test_fsdp_save.py`` under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Why by hand: with ``use_cpu`` (the only way the Trainer runs multi-process without CUDA) accelerate 1.15 builds a
``MULTI_CPU`` state and silently ignores the Trainer's ``fsdp`` arguments (``accelerate/state.py`` switches to FSDP
only for GPU-like device types), so this script shards a tiny BERT ``SentenceTransformer`` with FSDP2
``fully_shard`` itself (each ``BertLayer``, then the root), trains a few steps with embedkit's loss path, and saves
through :class:`~embedkit.training.trainer.EmbeddingTrainer` ``._save`` (the method ``Trainer.save_model`` calls)
and :func:`~embedkit.training.trainer.save_pipeline` with the consolidated state dict.

``--resume FOLDER``: load the model from a saved folder (full weights), shard it and train the remaining steps.
Rank 0 writes ``<out>/result.json``: parameter types, the in-memory sharded model's embeddings of a few texts,
the per-step losses.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.fsdp import fully_shard
from transformers import TrainerControl, TrainerState, TrainingArguments

from embedkit.data.readers import pair_from_record
from embedkit.data.samples import sample_path
from embedkit.losses import InfoNCELoss, make_batch
from embedkit.models import load_model
from embedkit.training.collator import DatasetSpec, PairCollator, PairDataset
from embedkit.training.gradcache import GradCache, compute_loss_uncached
from embedkit.training.trainer import EmbeddingTrainer, ScoringCallback, full_state_dict, save_pipeline

TEXTS = ["copy a file", "list running processes", "compress a folder into an archive"]


def pairs(n: int):
    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        return [pair_from_record(json.loads(next(f))) for _ in range(n)]


@contextlib.contextmanager
def _sync_off(model: torch.nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _fsdp2_no_sync(model: torch.nn.Module):
    return lambda: _sync_off(model)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--first-step", type=int, default=0, help="a resumed run skips the batches before it")
    ap.add_argument("--save-at", type=int, default=0, help="also save a consolidated folder mid/ after this step")
    ap.add_argument("--gradcache", type=int, default=0, help="GradCache chunk size (0: plain backward)")
    ap.add_argument("--no-sync", action="store_true",
                    help="replay all GradCache chunks but the last without gradient reduction, as accelerate's "
                         "no_sync does for FSDP2 (set_requires_gradient_sync(False))")
    ns = ap.parse_args()
    dist.init_process_group("gloo")
    r, ws = dist.get_rank(), dist.get_world_size()
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = load_model(ns.model)
    model.train()
    for layer in model[0].auto_model.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    specs = [DatasetSpec("debian", True, 0, None)]
    collator = PairCollator(model.tokenizer, specs, max_length=32)
    data = pairs(8 * ws * (ns.first_step + ns.steps))
    args = TrainingArguments(output_dir=str(out / "trainer"), use_cpu=True, report_to=["none"], save_strategy="no",
                             disable_tqdm=True)
    trainer = EmbeddingTrainer(model, args, train_dataset=PairDataset([data], specs), collator=collator,
                               loss_fn=InfoNCELoss(temperature=0.05))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = InfoNCELoss(temperature=0.05)
    losses = []
    for step in range(ns.first_step, ns.first_step + ns.steps):
        rows = data[(step * ws + r) * 8:(step * ws + r + 1) * 8]
        q = model.preprocess([p.query for p in rows])
        d = model.preprocess([p.positives[0] for p in rows])
        build = lambda qe, de: make_batch(qe, de, 1)  # noqa: E731
        opt.zero_grad()
        if ns.gradcache:
            no_sync = _fsdp2_no_sync(model) if ns.no_sync else None
            loss, _ = GradCache(model, loss_fn, chunk_size=ns.gradcache, gather_across_devices=True
                                ).forward_backward(q, d, build, no_sync)
        else:
            loss, _ = compute_loss_uncached(model, loss_fn, q, d, build, gather_across_devices=True)
            loss.backward()
        if step == ns.first_step:  # the first step's full gradients (a collective per parameter)
            g = {n: p.grad.full_tensor().detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            if r == 0:
                save_file(g, str(out / "grads.safetensors"))
        opt.step()
        losses.append(float(loss))
        if step + 1 == ns.save_at:
            state = full_state_dict(model)  # collective
            if r == 0:
                save_pipeline(model, out / "mid", state_dict=state)
    kinds = sorted({type(p).__name__ for p in model.parameters()})
    # periodic scoring (ScoringCallback) on a sharded model: every rank must join the forward's all-gathers
    calls = []

    def scorer(m, texts, **_kw):
        calls.append(1)
        return {"norm": float(m.encode(texts, convert_to_tensor=True).norm(dim=1).mean())}

    cb = ScoringCallback(TEXTS, scorer, every_n_steps=1, model=model)
    state = TrainerState()
    state.global_step, state.is_world_process_zero = ns.first_step + ns.steps, r == 0
    cb._evaluate(args, state, TrainerControl(), {})
    dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))  # a rank stuck in a lone forward fails here
    ranks_scored = [0] * ws
    dist.all_gather_object(ranks_scored, len(calls))
    model.eval()
    with torch.no_grad():  # every rank: FSDP all-gathers the shards in forward
        emb = model.encode(TEXTS, convert_to_tensor=True, batch_size=8).cpu()
    trainer._save(str(out / "trainer_save"))  # what Trainer.save_model calls (every rank)
    state = full_state_dict(model)  # collective
    if r == 0:
        save_pipeline(model, out / "final", state_dict=state)
        try:
            save_pipeline(model, out / "refused")
            refused = ""
        except Exception as exc:  # noqa: BLE001 - the message is checked by the test
            refused = f"{type(exc).__name__}: {exc}"
        (out / "result.json").write_text(json.dumps({"param_types": kinds, "embeddings": emb.tolist(),
                                                     "losses": losses, "refused": refused,
                                                     "scored": cb.history, "ranks_scored": ranks_scored}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
