"""Run by ``tests/distributed/test_lora_fsdp.py`` under ``torchrun --nproc_per_node 2`` (gloo, CPU).

A tiny BERT with a peft LoRA adapter is sharded with FSDP2 ``fully_shard`` (each ``BertLayer``, then the root, as
``fsdp_save.py`` does: accelerate ignores the Trainer's ``fsdp`` arguments on CPU), trained two steps (only the
adapter is trainable), and saved merged through ``EmbeddingTrainer._save`` and ``save_pipeline(state_dict=
full_state_dict(model))``, and unmerged (``merge_lora=False``: base pipeline + ``adapter/``). Rank 0 writes
``<out>/result.json``: parameter types, the in-memory sharded model's embeddings before and after saving, losses.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import TrainingArguments

from embedkit.data.readers import pair_from_record
from embedkit.data.samples import sample_path
from embedkit.losses import InfoNCELoss, make_batch
from embedkit.models import LoraConfig, load_model
from embedkit.training.collator import DatasetSpec, PairCollator, PairDataset
from embedkit.training.gradcache import compute_loss_uncached
from embedkit.training.trainer import EmbeddingTrainer, full_state_dict, save_pipeline

TEXTS = ["copy a file", "list running processes", "compress a folder into an archive"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=2)
    ns = ap.parse_args()
    dist.init_process_group("gloo")
    r, ws = dist.get_rank(), dist.get_world_size()
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = load_model(ns.model, lora=LoraConfig(r=4, alpha=8, dropout=0.0))
    model.train()
    layers = [m for m in model.modules() if type(m).__name__ == "BertLayer"]
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        data = [pair_from_record(json.loads(next(f))) for _ in range(8 * ws * ns.steps)]
    specs = [DatasetSpec("debian", True, 0, None)]
    args = TrainingArguments(output_dir=str(out / "trainer"), use_cpu=True, report_to=["none"], save_strategy="no",
                             disable_tqdm=True)
    trainer = EmbeddingTrainer(model, args, train_dataset=PairDataset([data], specs),
                               collator=PairCollator(model.tokenizer, specs, max_length=32),
                               loss_fn=InfoNCELoss(temperature=0.05))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=2.0)
    loss_fn = InfoNCELoss(temperature=0.05)
    losses = []
    for step in range(ns.steps):
        rows = data[(step * ws + r) * 8:(step * ws + r + 1) * 8]
        q = model.preprocess([p.query for p in rows])
        d = model.preprocess([p.positives[0] for p in rows])
        opt.zero_grad()
        loss, _ = compute_loss_uncached(model, loss_fn, q, d, lambda qe, de: make_batch(qe, de, 1),
                                        gather_across_devices=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    kinds = sorted({type(p).__name__ for p in model.parameters()})
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    model.eval()

    def embed() -> list:
        with torch.no_grad():  # every rank: FSDP all-gathers the shards in forward
            return model.encode(TEXTS, convert_to_tensor=True, batch_size=8).cpu().tolist()

    before = embed()
    trainer._save(str(out / "trainer_save"))  # what Trainer.save_model calls (every rank)
    state = full_state_dict(model)  # collective
    if r == 0:
        save_pipeline(model, out / "final", state_dict=state)
        save_pipeline(model, out / "unmerged", merge_lora=False, state_dict=state)
    dist.barrier()
    after = embed()  # the sharded model still works after saving (its shards were put back)
    if r == 0:
        (out / "result.json").write_text(json.dumps({
            "param_types": kinds, "trainable": trainable, "losses": losses, "embeddings": before,
            "embeddings_after_save": after}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
