"""The HF ``Trainer`` glue: embedding losses, GradCache, task-homogeneous batches, crash-safe checkpoints.

``transformers.Trainer`` (with accelerate) already does the loop, optimizer, scheduler, logging / ``report_to``,
DDP under ``torchrun`` and DeepSpeed / FSDP through ``TrainingArguments``. :class:`EmbeddingTrainer` adds only
what it lacks for contrastive embedding training:

* ``compute_loss``: encode queries and documents with the ``SentenceTransformer``, lay them out as an
  :class:`~embedkit.losses.base.EmbeddingBatch` (ragged hard negatives, text hashes, teacher scores), gather across
  ranks with gradients (:func:`embedkit.training.distributed.gather_with_grad`) and apply the embedkit loss;
* ``training_step``: with ``gradcache_chunk_size`` the step runs
  :class:`~embedkit.training.gradcache.GradCache` (which does its own backward, all-reducing once per step under
  DDP via ``no_sync``, as sentence-transformers' cached losses also do) and returns the *detached* loss -- the
  Trainer's own ``accelerator.backward`` never runs, so GradCache gets the accelerator's fp16 grad scaler and
  scales the loss itself (bf16 has none);
* the train dataloader: a :class:`~embedkit.training.sampler.TaskBatchSampler` sliced per rank, not re-sharded by
  accelerate (which would give ranks batches of different data sets);
* logging of the loss statistics (accuracy, masked false negatives, mixed negatives...) next to ``loss``;
* :class:`ScoringCallback`: score held-out data every N steps with a scorer passed in (training never imports
  the evaluation package: ``embedkit train`` passes :func:`embedkit.evaluation.score_beir`);
* checkpoints: the full sentence-transformers pipeline (LoRA merged or as adapter), the model card, optimizer /
  scheduler / RNG / trainer state and the loss's own state (hard-negative mixing RNG step), written to a temporary
  folder and renamed into place when complete (:mod:`embedkit.training.checkpoint`).

Example:
    >>> from embedkit.training.runner import run_recipe          # the usual entry point  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from embedkit.errors import ConfigError, InputError, OutputError
from embedkit.losses.base import EmbeddingBatch, EmbeddingLoss, make_batch
from embedkit.training.gradcache import GradCache, compute_loss_uncached
from embedkit.training.checkpoint import (
    checkpoint_name,
    partial_name,
    publish,
    rotate,
    write_marker,
)
from embedkit.training.collator import PairCollator, PairDataset
from embedkit.training.sampler import ClusterBatchSampler, TaskBatchSampler


#: ``scorer(model, data, *, k_values, batch_size, show_progress_bar) -> {"ndcg@10": ..., ...}``, the signature of
#: :func:`embedkit.evaluation.score_beir`
Scorer = Callable[..., Mapping[str, float]]

TRAINABLE_STATE = "trainable_state.safetensors"
EMBEDKIT_STATE = "embedkit_state.json"
LOSS_STATE = "loss_state.safetensors"
#: test hook: ``SECONDS`` or ``STEP:SECONDS`` to sleep in the middle of (that step's) checkpoint save, so tests can
#: SIGKILL a save half-way
SAVE_DELAY_ENV = "EMBEDKIT_TEST_SAVE_DELAY"


def _save_delay(step: int) -> float:
    raw = os.environ.get(SAVE_DELAY_ENV, "").strip()
    if not raw:
        return 0.0
    if ":" in raw:
        at, _, seconds = raw.partition(":")
        return float(seconds) if int(at) == step else 0.0
    return float(raw)


def _with_modality(features: dict[str, Any]) -> dict[str, Any]:
    """A copy of a tokenizer dict tagged as text (what sentence-transformers' modules expect)."""
    feats = dict(features)
    feats.setdefault("modality", "text")
    return feats


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def has_lora(model: SentenceTransformer) -> bool:
    try:
        from embedkit.models.lora import has_lora as _has

        return _has(model)
    except Exception:  # pragma: no cover - peft missing
        return False


def _is_sharded(t: Tensor) -> bool:
    """True for a parameter that does not hold its full value on this rank: an FSDP2 ``DTensor`` shard, or a
    DeepSpeed ZeRO-3 partition (an empty placeholder with ``ds_id``)."""
    return type(t).__name__ == "DTensor" or hasattr(t, "ds_id")


def full_state_dict(model: torch.nn.Module) -> dict[str, Tensor] | None:
    """The consolidated (full, CPU) weights of a model sharded in place with FSDP2 ``fully_shard``, or ``None``.

    Why: a sharded model's parameters are ``DTensor`` shards, so ``model.save(...)`` would write each rank's
    slice (or fail). This is a **collective**: every rank must call it; with ``cpu_offload`` only rank 0 gets the
    tensors (the others get ``{}``), which is all the writer needs. Models that are not sharded give ``None``
    (save them as they are). Under the Trainer's own FSDP / DeepSpeed wrapping use
    :meth:`EmbeddingTrainer.full_state_dict`, which goes through accelerate.

    Example:
        >>> state = full_state_dict(model)                              # every rank  # doctest: +SKIP
        >>> if rank == 0: save_pipeline(model, "out", state_dict=state)               # doctest: +SKIP
    """
    if not any(_is_sharded(p) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


@contextlib.contextmanager
def _full_weights(model: torch.nn.Module, state_dict: Mapping[str, Tensor] | None) -> Iterator[None]:
    """Temporarily give every parameter / buffer of ``model`` its consolidated value from ``state_dict``.

    The sharded objects are put back afterwards (FSDP / DeepSpeed keep their own references to them). A sharded
    parameter missing from ``state_dict`` is an error: the folder would hold a shard or an empty tensor.
    """
    if not state_dict:
        bad = [n for n, p in model.named_parameters() if _is_sharded(p)]
        if bad:
            raise OutputError(
                f"the model is sharded ({len(bad)} sharded weights, e.g. {bad[0]}) and no consolidated state dict "
                "was given: the saved folder would hold one rank's shards", where="save",
                hint="gather the weights first (EmbeddingTrainer.full_state_dict() / full_state_dict(model), on "
                     "every rank) and pass state_dict=")
        yield
        return
    saved: list[tuple[dict[str, Any], str, Any]] = []
    missing: list[str] = []
    try:
        for prefix, module in model.named_modules():
            for name, p in list(module._parameters.items()):
                if p is None:
                    continue
                key = f"{prefix}.{name}" if prefix else name
                if key not in state_dict:
                    if _is_sharded(p):
                        missing.append(key)
                    continue
                saved.append((module._parameters, name, p))
                module._parameters[name] = torch.nn.Parameter(
                    state_dict[key].detach().to("cpu").contiguous(), requires_grad=p.requires_grad)
            for name, b in list(module._buffers.items()):
                key = f"{prefix}.{name}" if prefix else name
                if b is not None and key in state_dict:
                    saved.append((module._buffers, name, b))
                    module._buffers[name] = state_dict[key].detach().to("cpu").contiguous()
        if missing:
            raise OutputError(
                f"the consolidated state dict lacks {len(missing)} sharded weights (e.g. {missing[0]})",
                where="save", hint="DeepSpeed ZeRO-3: set stage3_gather_16bit_weights_on_model_save: true; "
                                   "save LoRA models merged")
        yield
    finally:
        for store, name, value in reversed(saved):
            store[name] = value


def save_pipeline(model: SentenceTransformer, path: str | os.PathLike, *, merge_lora: bool = True,
                  state_dict: Mapping[str, Tensor] | None = None) -> None:
    """Write ``model`` as a sentence-transformers folder (loads with ``embedkit.load_model`` / ``SentenceTransformer``).

    LoRA models are merged into a copy first (``merge_lora=True``), or keep the adapter next to the base pipeline
    under ``adapter/`` (``merge_lora=False``; :func:`embedkit.load_model` finds ``adapter/`` and merges it on load).

    ``state_dict``: the consolidated weights of a sharded model (FSDP / DeepSpeed ZeRO-3, from
    :meth:`EmbeddingTrainer.full_state_dict` or :func:`full_state_dict`); they are written instead of the local
    shards. A sharded model without it is refused (:class:`~embedkit.errors.OutputError`).
    """
    with _full_weights(model, state_dict):
        _save_pipeline(model, path, merge_lora=merge_lora)


def _save_pipeline(model: SentenceTransformer, path: str | os.PathLike, *, merge_lora: bool) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if has_lora(model):
        from embedkit.models.lora import merge_lora as _merge
        from embedkit.models.lora import save_adapter

        # merging and stripping change the module tree: work on a copy, so the live (training) model keeps its
        # adapter. A sharded model refuses deepcopy; it is copied from its gathered weights instead.
        clone = _copy_for_saving(model)
        if merge_lora:
            _merge(clone)
            clone.save(str(path), create_model_card=False)
            return
        save_adapter(clone, path / "adapter")
        clone[0].model = clone[0].model.get_base_model()  # the frozen base, without adapter layers
        _strip_lora_layers(clone[0].model)
        clone.save(str(path), create_model_card=False)
        return
    model.save(str(path), create_model_card=False)


def _is_fsdp_module(module: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return False
    return isinstance(module, FSDPModule)


def _copy_for_saving(model: SentenceTransformer) -> SentenceTransformer:
    """A copy of ``model`` that saving may modify: ``copy.deepcopy``, or :func:`_plain_copy` if FSDP2 wraps it."""
    if any(_is_fsdp_module(m) for m in model.modules()):
        return _plain_copy(model)  # type: ignore[return-value]
    return copy.deepcopy(model)


#: per-module hook registries; an FSDP2 module's hooks are FSDP's own (all-gather / reshard) and are not copied
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called", "_backward_pre_hooks", "_backward_hooks", "_state_dict_hooks",
               "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _plain_copy(module: torch.nn.Module, memo: dict[int, Any] | None = None) -> torch.nn.Module:
    """A detached CPU copy of a module tree sharded in place with FSDP2 ``fully_shard``, without the sharding.

    Why: FSDP2 modules refuse ``copy.deepcopy`` by design ("FSDP does not support deepcopy": the state object
    ``fully_shard`` inserts is not copyable, https://github.com/pytorch/pytorch/pull/117776), and merging a LoRA
    adapter in place would take it away from the model being trained. Call it inside :func:`_full_weights`, where
    every parameter holds its gathered full value: each module is rebuilt as its original class
    (``FSDPBertLayer`` -> ``BertLayer``), parameters and buffers are cloned to CPU (shared ones stay shared), other
    attributes are deep copied, and FSDP's state and hooks are left out. peft then merges the copy like any CPU
    model, instead of working on shards -- the "'weight' must be 2-D" class of FSDP failure
    (https://github.com/huggingface/transformers/issues/39186).

    Example:
        >>> with _full_weights(model, full_state_dict(model)):                             # doctest: +SKIP
        ...     plain = _plain_copy(model)          # a CPU SentenceTransformer, no DTensor, no FSDP hooks
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    cls = type(module)
    fsdp = _is_fsdp_module(module)
    if fsdp:  # FSDP2 swapped the class for FSDP<cls>(FSDPModule, cls): take the original back
        from torch.distributed.fsdp import FSDPModule

        cls = next(c for c in cls.__mro__ if issubclass(c, torch.nn.Module) and not issubclass(c, FSDPModule))
    new = cls.__new__(cls)
    memo[id(module)] = new
    skip = {"_parameters", "_buffers", "_modules", "_is_fsdp_managed_module", "_fsdp_use_orig_params", *_HOOK_DICTS}
    for key, value in module.__dict__.items():
        if key in skip or key.startswith("__"):  # "__composable_api_state_key_*": FSDP's per-module state
            continue
        new.__dict__[key] = copy.deepcopy(value, memo)
    for key in _HOOK_DICTS:
        if key in module.__dict__:
            hooks = module.__dict__[key]
            new.__dict__[key] = type(hooks)() if fsdp else copy.copy(hooks)

    def tensor(t: Tensor) -> Tensor:
        if _is_sharded(t):
            raise OutputError("a sharded weight reached the copy being saved", where="save",
                              hint="gather the weights first (full_state_dict(model)) and pass state_dict=")
        if id(t) not in memo:
            data = t.detach().to("cpu", copy=True)
            memo[id(t)] = torch.nn.Parameter(data, requires_grad=t.requires_grad) \
                if isinstance(t, torch.nn.Parameter) else data
        return memo[id(t)]

    new.__dict__["_parameters"] = {n: None if p is None else tensor(p) for n, p in module._parameters.items()}
    new.__dict__["_buffers"] = {n: None if b is None else tensor(b) for n, b in module._buffers.items()}
    new.__dict__["_modules"] = {n: None if c is None else _plain_copy(c, memo) for n, c in module._modules.items()}
    return new


def _strip_lora_layers(module: torch.nn.Module) -> None:
    """Replace peft LoRA layers by their base layers in place (the weights stay the unmerged base weights)."""
    for name, child in list(module.named_children()):
        base = getattr(child, "base_layer", None)
        if base is not None and hasattr(child, "lora_A"):
            setattr(module, name, base)
        else:
            _strip_lora_layers(child)


class EmbeddingTrainer(Trainer):
    """``transformers.Trainer`` for embedding models trained with an embedkit loss (see module docstring).

    Args:
        model: the ``SentenceTransformer`` to train.
        args: ``TrainingArguments`` (``remove_unused_columns`` is forced off).
        train_dataset: a :class:`PairDataset`.
        collator: a :class:`PairCollator` built for the model's tokenizer and prompts.
        loss_fn: an :class:`~embedkit.losses.base.EmbeddingLoss` (e.g. from :func:`embedkit.losses.build_loss`).
        sampling / weights / drop_last: see :class:`TaskBatchSampler`.
        gradcache_chunk_size: GradCache chunk size (``None``: plain backward).
        encode_chunk_size: plain path only: encode in length-sorted sub-batches of this many rows, with a graph
            (same gradient, less padding; see ``TrainingConfig.encode_chunk_size``).
        merge_lora_on_save: merge a LoRA adapter into the saved pipelines.
        card_writer: ``callable(folder, trainer)`` writing the model card (``README.md``) into a saved folder.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        args: TrainingArguments,
        *,
        train_dataset: PairDataset,
        collator: PairCollator,
        loss_fn: EmbeddingLoss,
        sampling: str = "proportional",
        weights: list[float] | None = None,
        drop_last: bool = True,
        gradcache_chunk_size: int | None = None,
        encode_chunk_size: int | None = None,
        merge_lora_on_save: bool = True,
        card_writer: Callable[[Path, EmbeddingTrainer], None] | None = None,
        callbacks: list[Any] | None = None,
        b3_clusters: list[Any] | None = None,
    ) -> None:
        args.remove_unused_columns = False
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=collator,
                         callbacks=callbacks)
        self.loss_fn = loss_fn.to(args.device)
        self.collator = collator
        self.sampling = sampling
        self.weights = weights
        self.drop_last = drop_last
        self.gradcache_chunk_size = gradcache_chunk_size
        self.encode_chunk_size = encode_chunk_size
        self.merge_lora_on_save = merge_lora_on_save
        self.card_writer = card_writer
        self.b3_clusters = b3_clusters
        self._stat_sums: dict[str, float] = {}
        self._stat_count = 0
        self._gradcache = None
        self.last_stats: dict[str, float] = {}

    # -- data ----------------------------------------------------------------------------------------------------
    def make_sampler(self) -> TaskBatchSampler:
        ds: PairDataset = self.train_dataset  # type: ignore[assignment]
        common: dict[str, Any] = dict(
            weights=self.weights, strategy=self.sampling, seed=self.args.seed, drop_last=self.drop_last,
            num_replicas=max(1, self.args.world_size), rank=max(0, self.args.process_index))
        if self.b3_clusters is not None:  # B3: one precomputed cluster (one global batch) a step
            sampler: TaskBatchSampler = ClusterBatchSampler(
                [c.clusters for c in self.b3_clusters], ds.sizes, self.args.per_device_train_batch_size,
                leftovers=[c.leftover for c in self.b3_clusters], **common)
        else:
            sampler = TaskBatchSampler(ds.sizes, self.args.per_device_train_batch_size, **common)
        sampler.epoch_listeners.append(ds.set_epoch)
        return sampler

    def get_train_dataloader(self) -> DataLoader:
        """Task-homogeneous batches, each rank slicing the same global batch (not re-sharded by accelerate)."""
        sampler = self.make_sampler()
        loader = _EpochDataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
        )
        return loader

    # -- loss ----------------------------------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def build_batch(self, q: Tensor, d: Tensor, inputs: dict[str, Any]) -> EmbeddingBatch:
        """This rank's flat query / document embeddings as an :class:`EmbeddingBatch` (ragged rows masked).

        Cross-device gathering happens in the loss path (:func:`embedkit.training.gradcache.compute_loss_uncached`
        / :class:`~embedkit.training.gradcache.GradCache` with ``gather_across_devices``).
        """
        batch = make_batch(
            q,
            d,
            inputs["docs_per_query"].tolist(),
            doc_hash=inputs.get("doc_hash"),
            teacher_scores=inputs.get("teacher_scores"),
            in_batch_negatives=bool(inputs.get("in_batch_negatives", True)),
        )
        if batch.doc_mask is None:  # every rank must send the same fields when gathering
            batch.doc_mask = torch.ones(batch.docs.shape[:2], dtype=torch.bool, device=q.device)
        return batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        """Plain path: encode with a graph, gather across ranks (with gradients), embedkit loss of this rank's rows.

        Under DDP each rank's loss is the mean over its own rows (the gathered rows are extra negatives); DDP's
        gradient averaging then gives the gradient of the mean over all rows, as one process would compute.
        """
        loss, stats = compute_loss_uncached(
            model, self.loss_fn, _with_modality(inputs["query"]), _with_modality(inputs["docs"]),
            lambda q, d: self.build_batch(q, d, inputs), gather_across_devices=self.world_size > 1,
            chunk_size=self.encode_chunk_size,
        )
        self._record(stats)
        return (loss, {}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[override]
        """With ``gradcache_chunk_size``: GradCache runs forward *and* backward; the detached loss is returned, so
        the Trainer's own ``accelerator.backward`` never runs a second backward. Otherwise the Trainer's step."""
        if not self.gradcache_chunk_size:
            return super().training_step(model, inputs, num_items_in_batch)
        self._check_gradcache_engine()
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        if self._gradcache is None or self._gradcache.model is not model:
            self._gradcache = GradCache(model, self.loss_fn, chunk_size=int(self.gradcache_chunk_size),
                                        gather_across_devices=self.world_size > 1)
        no_sync = functools.partial(self.accelerator.no_sync, model) if self.world_size > 1 else None
        with self.compute_loss_context_manager():
            loss, stats = self._gradcache.forward_backward(
                _with_modality(inputs["query"]), _with_modality(inputs["docs"]),
                lambda q, d: self.build_batch(q, d, inputs), no_sync,
                loss_scale=1.0 / self.current_gradient_accumulation_steps,
                # fp16: what accelerator.backward does (scaler.scale(loss).backward()); the optimizer step unscales
                grad_scaler=getattr(self.accelerator, "scaler", None),
            )
        self._record(stats)
        return loss.detach() / self.current_gradient_accumulation_steps

    def _check_gradcache_engine(self) -> None:
        """Refuse GradCache where its own backward is not the engine's (the recipe check only sees
        ``training.trainer_args``; ``accelerate launch --config_file zero3.yaml`` turns an engine on from outside).

        DeepSpeed: the engine must run the backward (``engine.backward``: ZeRO's gradient partitioning and
        reduction hooks), so GradCache's direct ``torch.autograd.backward`` calls would bypass it. FSDP1: untested.
        FSDP2 is allowed: its sharded gradients accumulate over GradCache's per-chunk backwards and accelerate's
        ``no_sync`` (``set_requires_gradient_sync(False)``) defers the reduce-scatter to the last chunk; equal to
        the uncached full batch in ``tests/distributed/test_gradcache_engines.py``.
        """
        if getattr(self, "is_deepspeed_enabled", False):
            raise ConfigError(
                "GradCache (training.gradcache_chunk_size) does not run under DeepSpeed: its per-chunk backward "
                "bypasses the DeepSpeed engine's backward", where="training.gradcache_chunk_size",
                hint="train with DDP (torchrun) or FSDP2 (recipes/launch/fsdp.yaml), or set gradcache_chunk_size: "
                     "null under DeepSpeed")
        plugin = getattr(getattr(self.accelerator, "state", None), "fsdp_plugin", None)
        if getattr(self, "is_fsdp_enabled", False) and getattr(plugin, "fsdp_version", 2) != 2:
            raise ConfigError(
                "GradCache (training.gradcache_chunk_size) is tested under FSDP2 only, not FSDP1",
                where="training.gradcache_chunk_size", hint="set fsdp_version: 2 (recipes/launch/fsdp.yaml)")

    # -- stats logging -------------------------------------------------------------------------------------------
    def _record(self, stats: dict[str, float]) -> None:
        self.last_stats = dict(stats)
        for k, v in stats.items():
            if k == "loss":
                continue
            self._stat_sums[k] = self._stat_sums.get(k, 0.0) + float(v)
        self._stat_count += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:  # type: ignore[override]
        if "loss" in logs and self._stat_count:
            for k, v in self._stat_sums.items():
                logs[k.replace("/", "_")] = round(v / self._stat_count, 6)
            self._stat_sums, self._stat_count = {}, 0
        super().log(logs, start_time)

    # -- saving --------------------------------------------------------------------------------------------------
    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _save_checkpoint(self, model, trial) -> None:  # type: ignore[override]
        """Write ``.checkpoint-N.partial``, then rename it to ``checkpoint-N`` once every file is written."""
        run_dir = Path(self._get_output_dir(trial=trial))
        step = self.state.global_step
        partial = run_dir / partial_name(step)
        final = run_dir / checkpoint_name(step)
        self.store_flos()
        if self.args.should_save:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True, exist_ok=True)
        self._barrier()
        self.save_model(str(partial), _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(partial))
            self._save_scaler(str(partial))
            self._save_rng_state(str(partial))
        if self.args.should_save:
            self._save_embedkit_state(partial)
            from transformers.trainer_callback import ExportableState

            for cb in [c for c in self.callback_handler.callbacks + [self.control] if isinstance(c, ExportableState)]:
                name = cb.__class__.__name__
                if isinstance(self.state.stateful_callbacks.get(name), list):
                    self.state.stateful_callbacks[name].append(cb.state())
                else:
                    self.state.stateful_callbacks[name] = cb.state()
            self.state.save_to_json(str(partial / "trainer_state.json"))
            delay = _save_delay(step)
            if delay > 0:  # test hook: a window in which a SIGKILL hits a half-written checkpoint
                (partial / "SAVING").write_text(str(os.getpid()))
                time.sleep(delay)
                (partial / "SAVING").unlink()
        self._barrier()
        if self.args.should_save:
            write_marker(partial, {"global_step": step})
            publish(partial, final)
            rotate(run_dir, self.args.save_total_limit)
        self._barrier()

    def full_state_dict(self) -> dict[str, Tensor] | None:
        """The consolidated weights when the model is sharded (FSDP / DeepSpeed ZeRO-3), else ``None``.

        A **collective** (call it on every rank), then pass the result to :func:`save_pipeline` on the writer
        (``args.should_save``). Under the Trainer's FSDP / DeepSpeed it is ``accelerator.get_state_dict`` --
        what ``Trainer.save_model`` gathers for checkpoints -- so the final folder and the checkpoints hold the
        same full weights; a model sharded by hand with ``fully_shard`` is gathered by :func:`full_state_dict`.

        Example:
            >>> state = trainer.full_state_dict()                                          # doctest: +SKIP
            >>> if trainer.args.should_save:                                               # doctest: +SKIP
            ...     save_pipeline(trainer.model, "final", state_dict=state)
        """
        if getattr(self, "is_fsdp_enabled", False) or getattr(self, "is_deepspeed_enabled", False):
            target = self.model_wrapped if getattr(self, "is_deepspeed_enabled", False) else self.model
            return self.accelerator.get_state_dict(target)
        return full_state_dict(_unwrap(self.model))

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:  # type: ignore[override]
        """Write the pipeline; ``state_dict`` is the consolidated weights ``Trainer.save_model`` gathered under FSDP
        / DeepSpeed (on every rank; only the writer writes). Without it a sharded model is gathered here."""
        model: SentenceTransformer = _unwrap(self.model)  # type: ignore[assignment]
        if not state_dict and any(_is_sharded(p) for p in model.parameters()):
            state_dict = full_state_dict(model)  # a collective: every rank reaches _save under FSDP
        if not self.args.should_save:
            return
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_pipeline(model, out, merge_lora=self.merge_lora_on_save, state_dict=state_dict)
        if has_lora(model):
            with _full_weights(model, state_dict):
                trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters()
                             if p.requires_grad}
            save_file(trainable, str(out / TRAINABLE_STATE))
        if self.card_writer is not None:
            self.card_writer(out, self)

    def _save_embedkit_state(self, folder: Path) -> None:
        tensors, other = _split_state(self.loss_fn.state_dict())
        if tensors:
            save_file(tensors, str(folder / LOSS_STATE))
        ds: PairDataset = self.train_dataset  # type: ignore[assignment]
        info = {
            "loss_state": other,
            "data": {"sizes": ds.sizes, "names": [s.name for s in ds.specs], "seed": self.args.seed,
                     "batch_size": self.args.per_device_train_batch_size, "world_size": self.args.world_size},
        }
        (folder / EMBEDKIT_STATE).write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")

    # -- resuming ------------------------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        ckpt = Path(resume_from_checkpoint)
        target: SentenceTransformer = _unwrap(model or self.model)  # type: ignore[assignment]
        if (ckpt / TRAINABLE_STATE).is_file():
            state = load_file(str(ckpt / TRAINABLE_STATE))
            names = {n for n, p in target.named_parameters() if p.requires_grad}
            if set(state) != names:
                raise InputError(
                    f"checkpoint {ckpt} does not match the model's trainable parameters",
                    where=str(ckpt), hint="resume with the recipe that wrote the checkpoint",
                )
            target.load_state_dict(state, strict=False)
        else:
            from embedkit.models.loading import load_st_folder

            loaded = load_st_folder(ckpt, device="cpu", local_files_only=True)
            missing, unexpected = target.load_state_dict(loaded.state_dict(), strict=False)
            if missing or unexpected:
                raise InputError(
                    f"checkpoint {ckpt} does not match the model (missing {len(missing)}, unexpected "
                    f"{len(unexpected)} weights)", where=str(ckpt),
                    hint="resume with the recipe that wrote the checkpoint",
                )
            del loaded
        self._load_embedkit_state(ckpt)

    def _load_embedkit_state(self, ckpt: Path) -> None:
        info_path = ckpt / EMBEDKIT_STATE
        if not info_path.is_file():
            return
        info = json.loads(info_path.read_text(encoding="utf-8"))
        ds: PairDataset = self.train_dataset  # type: ignore[assignment]
        saved = info.get("data", {})
        now = {"sizes": ds.sizes, "seed": self.args.seed, "batch_size": self.args.per_device_train_batch_size}
        for key, value in now.items():
            if key in saved and saved[key] != value:
                raise InputError(
                    f"cannot resume exactly: the training data's {key} changed ({saved[key]} -> {value})",
                    where=str(ckpt), hint="resume with the same data, seed and batch size (or start a new run)",
                )
        state = dict(info.get("loss_state", {}))
        if (ckpt / LOSS_STATE).is_file():
            state.update(load_file(str(ckpt / LOSS_STATE)))
        if state:
            self.loss_fn.load_state_dict(state, strict=False)


class _EpochDataLoader(DataLoader):
    """A DataLoader whose ``set_epoch`` reaches the batch sampler (and through it the data set)."""

    def set_epoch(self, epoch: int) -> None:
        sampler = self.batch_sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _split_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items() if isinstance(v, Tensor)}
    other = {k: v for k, v in state.items() if not isinstance(v, Tensor)}
    return tensors, other


class ScoringCallback(TrainerCallback):
    """Score held-out data with ``scorer`` every ``every_n_steps`` optimizer steps (and at the end), and log it.

    The scores land in the trainer's log history as ``<prefix><metric>`` (so ``training.png``, TensorBoard and
    W&B see them); only the main process scores. :class:`embedkit.evaluation.RetrievalEvalCallback` builds on it
    (keeping the best model); the scorer is passed in, so this module needs nothing from evaluation.

    Args:
        data: what ``scorer`` scores on (e.g. a :class:`~embedkit.data.beir.BeirData`).
        scorer: ``scorer(model, data, k_values=..., batch_size=..., show_progress_bar=False)`` -> metrics.
        every_n_steps: score after every this many optimizer steps.
        k_values: cut-offs passed to the scorer.
        batch_size: encoding batch size passed to the scorer.
        eval_at_start: also score before the first step (the baseline).
        prefix: log key prefix.
        model: the ``SentenceTransformer`` to score, when the trainer's own model is not one.

    Attributes:
        history: ``[(step, {metric: value})]`` of every evaluation.

    Example:
        >>> from embedkit.evaluation import score_beir                                       # doctest: +SKIP
        >>> cb = ScoringCallback(beir_data, score_beir, every_n_steps=50, prefix="eval_")    # doctest: +SKIP
        >>> trainer.add_callback(cb); cb.trainer = trainer; trainer.train()                  # doctest: +SKIP
        >>> cb.history[-1]                                                                   # doctest: +SKIP
        (200, {'ndcg@10': 0.71, ...})
    """

    def __init__(self, data: Any, scorer: Scorer, every_n_steps: int = 100, *, k_values: Sequence[int] = (10,),
                 batch_size: int = 32, eval_at_start: bool = False, prefix: str = "eval_",
                 model: SentenceTransformer | None = None) -> None:
        self.data = data
        self.scorer = scorer
        self.every_n_steps = every_n_steps
        self.k_values = tuple(k_values)
        self.batch_size = batch_size
        self.eval_at_start = eval_at_start
        self.prefix = prefix
        self.model = model
        self.trainer: Any = None
        self.history: list[tuple[int, dict[str, float]]] = []
        self._last_step: int | None = None

    def attach(self, trainer: Any) -> ScoringCallback:
        """Add this callback to ``trainer`` and log through ``trainer.log`` (so reporting integrations see it)."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def _resolve_model(self, kwargs: dict[str, Any]) -> SentenceTransformer:
        model = self.model or kwargs.get("model") or getattr(self.trainer, "model", None)
        if isinstance(model, SentenceTransformer):
            return model
        name = type(self).__name__
        raise ConfigError(
            f"{name} needs a SentenceTransformer, got {type(model).__name__}", where=f"{name}(model=...)",
            hint="use SentenceTransformerTrainer, or pass model=<the SentenceTransformer wrapping the backbone>")

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self.eval_at_start and state.global_step == 0:
            self._evaluate(args, state, control, kwargs)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if state.global_step > 0 and state.global_step % self.every_n_steps == 0:
            self._evaluate(args, state, control, kwargs)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if state.global_step > 0 and self._last_step != state.global_step:
            self._evaluate(args, state, control, kwargs)

    def _evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                  kwargs: dict[str, Any]) -> None:
        self._last_step = state.global_step
        model = self._resolve_model(kwargs)
        # under FSDP / ZeRO-3 every forward all-gathers the shards: a rank-0-only scoring pass would wait forever
        # for the other ranks, so they score too (the same data, in lockstep) and only rank 0 logs
        sharded = any(_is_sharded(p) for p in model.parameters())
        if not state.is_world_process_zero and not sharded:
            return
        scores = {k: float(v) for k, v in self.scorer(model, self.data, k_values=self.k_values,
                                                      batch_size=self.batch_size, show_progress_bar=False).items()}
        if not state.is_world_process_zero:
            return
        step = state.global_step
        self.history.append((step, scores))
        logs = {f"{self.prefix}{k}": v for k, v in scores.items()}
        self.scored(model, args, step, scores, logs)
        if self.trainer is not None and hasattr(self.trainer, "log"):
            # Trainer.log resets control.should_log (CallbackHandler.on_log): without this, the training loss of
            # every step that is also scored would never be logged
            pending = control.should_log
            self.trainer.log(dict(logs))
            control.should_log = pending
            if getattr(self.trainer, "control", control) is not control:
                self.trainer.control.should_log = pending
        else:
            state.log_history.append({**logs, "step": step})
        self.logged(model, args, step, scores)

    def scored(self, model: SentenceTransformer, args: TrainingArguments, step: int, scores: dict[str, float],
               logs: dict[str, float]) -> None:
        """Hook: called with the new scores before they are logged (``logs`` may be extended)."""

    def logged(self, model: SentenceTransformer, args: TrainingArguments, step: int,
               scores: dict[str, float]) -> None:
        """Hook: called after the scores were logged."""
