"""fp16 loss scaling reaches GradCache's own backward; bf16 training with GradCache keeps working (issue 27, item 2).

GradCache runs its backward itself, so ``accelerator.backward`` -- which multiplies the loss by the fp16 grad
scaler's scale -- never runs, while the optimizer step still unscales (divides by that scale). These tests use a
real ``torch.amp.GradScaler`` on CPU (accelerate only builds one for fp16 on an accelerator) and check that the
parameter update equals the unscaled fp32 one.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
import torch

from embedkit.losses import InfoNCELoss, make_batch
from embedkit.models import load_model
from embedkit.training.gradcache import GradCache, compute_loss_uncached

SCALE = 2.0**12
QUERIES = ["copy a file", "move a folder", "list processes", "delete a user", "compress an archive", "find a package"]
DOCS = ["cp copies files and folders", "mv moves or renames files", "ps lists the running processes",
        "userdel removes a user account", "tar and gzip compress archives", "apt-cache searches for packages"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _build(q: torch.Tensor, d: torch.Tensor):
    return make_batch(q, d, 1)


def test_gradcache_with_grad_scaler_gives_the_fp32_update(tiny_bert: str) -> None:
    base = load_model(tiny_bert)
    base.train()
    qf, df = base.preprocess(QUERIES), base.preprocess(DOCS)
    loss_fn = InfoNCELoss(temperature=0.05)

    # fp32 reference: plain loss, plain backward, plain SGD step
    ref = copy.deepcopy(base)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.5)
    torch.manual_seed(0)
    loss, _ = compute_loss_uncached(ref, loss_fn, qf, df, _build, chunk_size=2)
    loss.backward()
    ref_grads = {n: p.grad.detach().clone() for n, p in ref.named_parameters() if p.grad is not None}
    opt_ref.step()

    # GradCache + a real GradScaler: gradients carry the scale, scaler.step unscales, the update is the same
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    torch.manual_seed(0)
    loss_c, _ = GradCache(model, loss_fn, chunk_size=2).forward_backward(qf, df, _build, grad_scaler=scaler)
    assert loss_c.item() == pytest.approx(loss.item(), rel=1e-5)  # the returned loss is unscaled
    name = next(iter(ref_grads))
    scaled = dict(model.named_parameters())[name].grad
    assert torch.allclose(scaled, ref_grads[name] * SCALE, rtol=1e-4, atol=1e-6 * SCALE)
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == SCALE  # no inf/nan found: the step was taken, not skipped

    after_ref, after = _params(ref), _params(model)
    moved = max((after_ref[n] - _params(base)[n]).abs().max().item() for n in after_ref)
    assert moved > 1e-4  # the step really changed the weights
    assert max((after[n] - after_ref[n]).abs().max().item() for n in after) < 1e-5


# ---- the trainer: the accelerator's scaler is used by the GradCache step


def _pairs() -> list:
    from embedkit.data.readers import pair_from_record
    from embedkit.data.samples import sample_path

    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        return [pair_from_record(json.loads(next(f))) for _ in range(16)]


def _trainer(tiny_bert: str, out: Path, *, gradcache: int | None, bf16: bool = False, steps: int = 2):
    from transformers import TrainingArguments

    from embedkit.training.collator import DatasetSpec, PairCollator, PairDataset
    from embedkit.training.trainer import EmbeddingTrainer

    torch.manual_seed(0)
    model = load_model(tiny_bert)
    specs = [DatasetSpec("debian", True, 0, None)]
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=8, learning_rate=1e-3, max_steps=steps,
                             max_grad_norm=0.0, warmup_steps=0, seed=3, report_to=["none"], save_strategy="no",
                             use_cpu=True, bf16=bf16, disable_tqdm=True, logging_steps=100)
    collator = PairCollator(model.tokenizer, specs, max_length=32)
    return EmbeddingTrainer(model, args, train_dataset=PairDataset([_pairs()], specs), collator=collator,
                            loss_fn=InfoNCELoss(temperature=0.05), gradcache_chunk_size=gradcache)


def test_trainer_gradcache_training_with_a_grad_scaler_matches_fp32(tiny_bert: str, tmp_path: Path) -> None:
    """The real Trainer loop (accelerate's optimizer wrapper calls scaler.step / scaler.update) with a grad scaler:
    the same weights as the unscaled run. Before the fix the GradCache step never scaled, and the first
    ``scaler.step`` failed ("_scale is None") -- or, with a scaler already used, divided unscaled gradients."""
    ref = _trainer(tiny_bert, tmp_path / "ref", gradcache=4)
    ref.train()
    scaled = _trainer(tiny_bert, tmp_path / "fp16", gradcache=4)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    scaled.accelerator.scaler = scaler  # what Accelerator(mixed_precision="fp16") sets up on a GPU
    scaled.train()
    assert scaler._scale is not None and scaler.get_scale() == SCALE  # used, and no step skipped
    a, b = _params(ref.model), _params(scaled.model)
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-5
    start = _params(load_model(tiny_bert))
    assert max((a[n] - start[n]).abs().max().item() for n in a) > 1e-4  # training moved the weights


def test_bf16_gradcache_training_keeps_working(tiny_bert: str, tmp_path: Path) -> None:
    """bf16 autocast needs no scaler: the GradCache step trains, close to the fp32 run."""
    fp32 = _trainer(tiny_bert, tmp_path / "fp32", gradcache=4, steps=1)
    fp32.train()
    bf16 = _trainer(tiny_bert, tmp_path / "bf16", gradcache=4, bf16=True, steps=1)
    assert bf16.accelerator.scaler is None and bf16.accelerator.mixed_precision == "bf16"
    bf16.train()
    start = _params(load_model(tiny_bert))
    a, b = _params(fp32.model), _params(bf16.model)
    delta_a = torch.cat([(a[n] - start[n]).flatten() for n in a])
    delta_b = torch.cat([(b[n] - start[n]).flatten() for n in b])
    assert torch.isfinite(delta_b).all() and delta_b.abs().max() > 1e-4
    assert torch.nn.functional.cosine_similarity(delta_a, delta_b, dim=0) > 0.95
