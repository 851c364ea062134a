"""GradCache beyond DDP: under FSDP2 (2-process ``torchrun``, gloo, CPU), with gradient checkpointing, under bf16.

* FSDP2 ``fully_shard`` + GradCache (cross-device negatives, chunks replayed with gradient reduction off but for the
  last, as accelerate's ``no_sync`` does for FSDP2) gives the same full (gathered) gradients as the uncached full
  batch: ``tests/distributed/fsdp_save.py`` with and without ``--gradcache``.
* Gradient checkpointing inside GradCache's re-forward: torch's checkpoint recomputes each layer a third time;
  with dropout on, the RNG must replay exactly there too, or the gradients would not match the uncached ones.
* bf16 autocast on CPU: GradCache equals the uncached step under the same autocast (to bf16 precision).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from embedkit.losses import InfoNCELoss, make_batch
from embedkit.models import load_model
from embedkit.training.gradcache import GradCache, compute_loss_uncached

from torchrun_helpers import copy_without_dropout, run_worker  # noqa: E402

SCRIPT = Path(__file__).parent / "fsdp_save.py"
QUERIES = [f"how do I {v} a {n}" for v, n in zip(["copy", "move", "list", "delete", "compress", "find"],
                                                   ["file", "folder", "process", "user", "archive", "package"])]
DOCS = [f"{w} text number {i} about {QUERIES[i // 2].split()[-1]} and more words" for i, w in
        enumerate(["cp copies", "mv moves"] * 6)]


def _torchrun(model: str, out: Path, *extra: str) -> dict:
    return run_worker(SCRIPT, model, out, *extra)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a and set(a) == set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.slow
def test_gradcache_under_fsdp2_equals_the_uncached_full_batch(tiny_bert: str, tmp_path: Path) -> None:
    nodrop = copy_without_dropout(tiny_bert, tmp_path / "nodrop")
    plain = _torchrun(nodrop, tmp_path / "plain", "--steps", "2")
    cached = _torchrun(nodrop, tmp_path / "cached", "--steps", "2", "--gradcache", "3", "--no-sync")
    g_plain = load_file(str(tmp_path / "plain" / "grads.safetensors"))
    g_cached = load_file(str(tmp_path / "cached" / "grads.safetensors"))
    assert max(g.abs().max().item() for g in g_plain.values()) > 1e-3
    assert _max_diff(g_plain, g_cached) <= 1e-5
    assert cached["losses"] == pytest.approx(plain["losses"], abs=1e-5)
    assert torch.allclose(torch.tensor(cached["embeddings"]), torch.tensor(plain["embeddings"]), atol=1e-5)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _step(model, *, cached: bool, seed: int = 7, autocast: bool = False) -> tuple[float, dict[str, torch.Tensor]]:
    qf, df = model.preprocess(QUERIES), model.preprocess(DOCS)
    loss_fn = InfoNCELoss(temperature=0.05)
    build = lambda q, d: make_batch(q, d, 2)  # noqa: E731
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        if cached:
            loss, _ = GradCache(model, loss_fn, chunk_size=4).forward_backward(qf, df, build)
        else:
            # the same chunks (length-sorted sub-batches of 4, with a graph): the same dropout masks in the same order
            loss, _ = compute_loss_uncached(model, loss_fn, qf, df, build, chunk_size=4)
            loss.backward()
    return float(loss.detach()), _grads(model)


@pytest.fixture()
def dropout_model(tiny_bert: str):
    model = load_model(tiny_bert)
    assert model[0].model.config.hidden_dropout_prob > 0
    model.train()
    return model


def test_gradient_checkpointing_inside_gradcache_replays_dropout_exactly(dropout_model) -> None:
    layer = dropout_model[0].model.encoder.layer[0].attention  # inside the checkpointed layer
    calls = []
    layer.register_forward_pre_hook(lambda *_: calls.append(1))
    loss_ref, g_ref = _step(dropout_model, cached=False)
    del calls[:]
    _step(dropout_model, cached=True)
    plain_calls = len(calls)
    dropout_model[0].model.activation_checkpointing_enable({"use_reentrant": False})
    assert dropout_model[0].model.is_activation_checkpointing
    del calls[:]
    loss_gc, g_gc = _step(dropout_model, cached=True)
    assert len(calls) > plain_calls  # the layer ran again in the backward: checkpointing really recomputed
    loss_ck, g_ck = _step(dropout_model, cached=False)
    assert max(g.abs().max().item() for g in g_ref.values()) > 1e-3
    assert loss_gc == pytest.approx(loss_ref, rel=1e-5) and loss_ck == pytest.approx(loss_ref, rel=1e-5)
    assert _max_diff(g_ref, g_gc) <= 1e-5  # GradCache + checkpointing == uncached, no checkpointing
    assert _max_diff(g_ref, g_ck) <= 1e-5
    # the contrast: another seed draws other dropout masks, so the equality above is not trivial
    _, g_other = _step(dropout_model, cached=True, seed=8)
    assert _max_diff(g_ref, g_other) > 1e-3


def test_gradcache_under_bf16_autocast_on_cpu(dropout_model) -> None:
    _, g32 = _step(dropout_model, cached=False)
    loss_ref, g_ref = _step(dropout_model, cached=False, autocast=True)
    loss_gc, g_gc = _step(dropout_model, cached=True, autocast=True)
    assert loss_gc == pytest.approx(loss_ref, rel=2e-2)
    scale = max(g.abs().max().item() for g in g_ref.values())
    assert _max_diff(g_ref, g_gc) <= 3e-2 * scale  # bf16 has ~3 significant digits
    assert all(g.dtype == torch.float32 for g in g_gc.values())  # the parameters' gradients stay fp32
    assert _max_diff(g32, g_ref) > 0  # autocast really ran in bf16


def _trainer(model: str, tmp_path: Path):
    import gzip

    from transformers import TrainingArguments

    from embedkit.data.readers import pair_from_record
    from embedkit.data.samples import sample_path
    from embedkit.training.collator import DatasetSpec, PairCollator, PairDataset
    from embedkit.training.trainer import EmbeddingTrainer

    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        pairs = [pair_from_record(json.loads(next(f))) for _ in range(8)]
    st = load_model(model)
    specs = [DatasetSpec("debian", True, 0, None)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, use_cpu=True,
                             report_to=["none"], save_strategy="no", disable_tqdm=True)
    return EmbeddingTrainer(st, args, train_dataset=PairDataset([pairs], specs),
                            collator=PairCollator(st.tokenizer, specs, max_length=32),
                            loss_fn=InfoNCELoss(temperature=0.05), gradcache_chunk_size=2)


def test_gradcache_is_refused_under_deepspeed_at_the_first_step(tiny_bert: str, tmp_path: Path) -> None:
    """``accelerate launch --config_file zero2.yaml`` turns DeepSpeed on outside the recipe: the trainer refuses."""
    from embedkit.errors import ConfigError

    trainer = _trainer(tiny_bert, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    assert trainer.training_step(trainer.model, batch) > 0  # the ordinary case trains
    trainer.is_deepspeed_enabled = True  # what the Trainer sets when accelerate's state is DEEPSPEED
    with pytest.raises(ConfigError, match="DeepSpeed") as err:
        trainer.training_step(trainer.model, batch)
    assert err.value.where == "training.gradcache_chunk_size" and err.value.hint
