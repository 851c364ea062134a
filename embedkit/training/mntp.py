"""Masked next-token prediction (MNTP): teach a causal decoder to use bidirectional attention before contrastive
training.

Why: a decoder LLM was pretrained with every token blind to the tokens after it. Switching ``is_causal`` off lets
each token see the whole text -- what an embedding wants -- but every hidden state now mixes in inputs the weights
were never trained on, and a short contrastive run with LoRA has to repair that *and* learn the task. LLM2Vec
(BehnamGhader et al., 2024) adds a cheap adaptation step in between: mask some tokens and train the bidirectional
model to predict each masked token. embedkit's decoder ablation (``BENCHMARKS.md``) shows the need: at 120
contrastive steps, SmolLM2-135M made bidirectional without this step scores *below* the causal model.

How: the masked token at position ``i`` is predicted from the output at position ``i - 1`` (where a causal LM
predicts its next token), so the objective is transformers' own causal-LM loss -- it shifts labels by one -- with
labels that are ``-100`` except at the masked positions. Masking is transformers' ``DataCollatorForLanguageModeling``
(80 % mask token, 10 % random, 10 % kept); decoders have no mask token, so an existing single token stands in
(``_`` by default, as in LLM2Vec). Training is the HF ``Trainer`` with a peft LoRA adapter; the result is merged into
the weights and saved as a plain model folder with ``is_causal: false``, which :func:`embedkit.models.load_model`
and recipes (``model.name: that/folder``) load bidirectional.

Example::

    from embedkit.training.mntp import MNTPConfig, run_mntp

    # 1,000 steps by default; 100 is a quick try (~7 min on 2 CPU cores) that recovers less of the gap
    result = run_mntp(MNTPConfig(model="smollm2", data="sample:debian-train", steps=100), "runs/smollm2-mntp")
    print(result.eval_loss_before, "->", result.eval_loss_after)   # masked-token loss on held-out texts
    # then: embedkit train recipes/smollm2-bidirectional-lora.yaml --set model.name=runs/smollm2-mntp

CLI: ``embedkit mntp --model smollm2 --data pairs.jsonl -o runs/smollm2-mntp``.

The control, ``objective="clm"`` (``embedkit mntp --objective clm``): the same texts, steps, LoRA and schedule, but
ordinary next-token prediction with the attention left causal, and a causal model saved. MNTP's gain could be
plain domain adaptation -- the adapted model has read the pairs' texts, a causal baseline has not -- so a fair
"bidirectional vs causal" comparison gives the causal model the same steps on the same texts; this is how
``eval/quality.py``'s ``causal-clm-last`` arm does it. It is also continued pretraining for users who keep a
decoder causal (``embedkit train ... --set model.name=runs/smollm2-clm``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedkit.errors import ConfigError, InputError, ModelError
from embedkit.models.config import LoraConfig

logger = logging.getLogger(__name__)


class MNTPConfig(BaseModel):
    """Settings of one MNTP run (validated before any model is loaded).

    Each field's ``description`` is its documentation; ``embedkit mntp --help`` shows it, with the default (the
    flags are derived from this model). Why the defaults: 1,000 steps is LLM2Vec's count (at batch 32, 1-8B
    models) and the best measured here -- on SmolLM2-135M (batch 16) 120 / 360 / 1,000 steps took the
    bidirectional model from 7 nDCG@10 points below the causal one to 3 below, level, and 6 above (BENCHMARKS.md
    "Decoder LLM"), at ``lr`` 2e-4; ``mask_prob`` 0.2 is LLM2Vec's for Llama-2 and S-LLaMA. ``mask_prob`` and
    ``mask_token`` belong to MNTP and are refused with ``objective: clm``.
    """

    model_config = ConfigDict(extra="forbid")
    model: str = Field("smollm2", description="decoder folder or alias")
    data: str = Field(description="training pairs (jsonl/csv/parquet/BEIR, or sample:NAME): their queries, "
                                  "positives and negatives, de-duplicated, are the texts")
    steps: int = Field(1000, ge=1, description="optimizer steps (~70 min for a 135M model on a 2-core CPU at "
                                               "batch 16 x 64 tokens, minutes on a GPU)")
    batch_size: int = Field(16, ge=1, description="texts per optimizer step")
    lr: float = Field(2e-4, gt=0, description="learning rate")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of the steps spent in linear warm-up")
    mask_prob: float = Field(0.2, gt=0, lt=1, description="share of tokens masked per text (mntp only)")
    mask_token: str = Field("_", description="existing token that stands in for a mask when the tokenizer has "
                                             "none (mntp only)")
    max_seq_length: int = Field(128, ge=8, description="truncate texts to this many tokens")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    eval_texts: int = Field(128, ge=0, description="held-out texts for the before/after loss (0: none)")
    seed: int = Field(42, description="seed of the held-out split, the masking and the LoRA initialisation")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    bf16: bool = Field(False, description="bf16 mixed precision (GPU)")
    objective: Literal["mntp", "clm"] = Field(
        "mntp", description="mntp: masked next-token prediction, bidirectional; clm: the control -- ordinary "
                            "next-token prediction on the same texts, the model stays causal")

    @model_validator(mode="after")
    def _masking_is_mntp_only(self) -> MNTPConfig:
        given = {"mask_prob", "mask_token"} & self.model_fields_set
        if self.objective == "clm" and given:
            raise ValueError(f"{' / '.join(sorted(given))} only apply to objective 'mntp': 'clm' masks nothing "
                             "(it predicts every next token); drop them or use the mntp objective")
        return self


@dataclass
class MNTPResult:
    """What :func:`run_mntp` did: the output folder and the held-out loss of its objective before / after."""

    output_dir: Path
    texts: int
    steps: int
    train_s: float
    eval_loss_before: float | None
    eval_loss_after: float | None


def summary_line(config: MNTPConfig, result: MNTPResult) -> str:
    """One line for people: ``MNTP: 1000 steps on 3712 texts in 4257 s; held-out masked-token loss 8.170 -> 3.640``."""
    loss = ""
    if result.eval_loss_before is not None:
        kind = "masked-token" if config.objective == "mntp" else "next-token"
        loss = f"; held-out {kind} loss {result.eval_loss_before:.3f} -> {result.eval_loss_after:.3f}"
    return f"{config.objective.upper()}: {result.steps} steps on {result.texts} texts in {result.train_s:.0f} s{loss}"


def mntp_texts(data: str, *, eval_texts: int, seed: int) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` texts: every query, positive and negative of the pairs once, held-out ones at random."""
    from embedkit.data.readers import load_pairs
    from embedkit.data.samples import resolve_data_path

    seen: dict[str, None] = {}
    for pair in load_pairs(resolve_data_path(data)):
        for text in (pair.query, *pair.positives, *pair.negatives):
            seen.setdefault(text, None)
    texts = list(seen)
    random.Random(seed).shuffle(texts)
    n_eval = min(eval_texts, len(texts) // 10)  # never more than a tenth of the data
    return texts[n_eval:], texts[:n_eval]


def _mask_token_id(tokenizer: Any, mask_token: str, where: str) -> int:
    """The id of the tokenizer's mask token, or of ``mask_token`` when it must be one existing token."""
    if getattr(tokenizer, "mask_token_id", None) is not None:
        return int(tokenizer.mask_token_id)
    ids = tokenizer.convert_tokens_to_ids([mask_token])
    unk = getattr(tokenizer, "unk_token_id", None)
    if not ids or ids[0] is None or (unk is not None and ids[0] == unk):
        raise ConfigError(f"mask token {mask_token!r} is not a single token of this tokenizer", where=where,
                          hint="pass a token from the model's vocabulary, e.g. --mask-token _")
    tokenizer.mask_token = mask_token  # the collator reads it; the saved tokenizer is the original one
    return int(ids[0])


def _load_lm(config: MNTPConfig) -> tuple[Any, Any, str]:
    """``(causal LM, tokenizer, folder)``, bidirectional for MNTP and causal for CLM; refuses encoders (and, for MNTP,
    decoders whose bidirectional attention is untested)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from embedkit.models.bidirectional import check_bidirectional_supported, is_decoder_type
    from embedkit.models.folders import check_weights_match_config, refuse_pickle_weights, resolve_model_path
    from embedkit.models.lora import find_adapter

    if find_adapter(config.model) is not None:
        raise ModelError(f"{config.model} holds a LoRA adapter; MNTP adapts a plain causal LM", where="model",
                         hint="pass the base model folder, or a run saved with model.lora.merge_on_save: true")
    folder = resolve_model_path(config.model)
    if not (Path(folder) / "config.json").exists():
        raise ModelError(f"{folder} has no config.json", where="model", hint="pass a transformers model folder")
    refuse_pickle_weights(folder, where="model")
    check_weights_match_config(folder)
    model_type = str(AutoConfig.from_pretrained(folder).model_type)
    if not is_decoder_type(model_type):
        raise ModelError(f"'{model_type}' is an encoder: it is already bidirectional, MNTP is for decoder LLMs",
                         where="model", hint="fine-tune it directly with embedkit train")
    if config.objective == "mntp":
        check_bidirectional_supported(model_type)
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, config.dtype), use_safetensors=True)
    # read at every forward by the mask builders (see embedkit/models/bidirectional.py); CLM sets it too, so that a
    # folder MNTP left bidirectional is trained -- and saved -- causal
    lm.config.is_causal = config.objective == "clm"
    return lm, tok, folder


def _tokenize(tok: Any, texts: list[str], max_len: int) -> list[dict[str, list[int]]]:
    if not texts:  # eval_texts=0; fast tokenizers fail on an empty batch
        return []
    enc = tok(texts, truncation=True, max_length=max_len, add_special_tokens=True, return_special_tokens_mask=True)
    return [{"input_ids": i, "attention_mask": a, "special_tokens_mask": s}
            for i, a, s in zip(enc["input_ids"], enc["attention_mask"], enc["special_tokens_mask"])]


def masked_token_loss(lm: Any, collator: Any, features: list[dict[str, list[int]]], batch_size: int) -> float:
    """Mean loss over the tokens ``collator`` labels in ``features``: the masked ones (MNTP) or every next token
    (CLM). An MNTP collator must be seeded for a comparable before / after."""
    import torch

    total = count = 0.0
    lm.eval()
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = collator([dict(f) for f in features[start:start + batch_size]])
            batch = {k: v.to(lm.device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != -100).sum())  # position 0 has nothing before it to predict from
            if n:
                total += float(lm(**batch).loss) * n
                count += n
    lm.train()
    return total / count if count else math.nan


def run_mntp(config: MNTPConfig, output_dir: str | os.PathLike, *, overwrite: bool = False) -> MNTPResult:
    """Adapt ``config.model`` to bidirectional attention with MNTP + LoRA (or, ``objective="clm"``, train it causally
    on the same texts); write the merged model to ``output_dir``.

    The folder appears only when training finished (written atomically); ``mntp.json`` in it records the settings
    (the objective included), the number of texts and the held-out loss before and after.
    """
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed

    from embedkit.models.lora import lora_target_modules
    from embedkit.utils.io import atomic_dir, check_writable_parent

    out = Path(output_dir)
    check_writable_parent(out)
    if out.exists() and not overwrite:
        raise InputError(f"output folder {out} already exists", hint="pass a new path, or --overwrite to replace it")
    train_texts, eval_texts = mntp_texts(config.data, eval_texts=config.eval_texts, seed=config.seed)
    if len(train_texts) < config.batch_size:
        raise InputError(f"{config.data} holds {len(train_texts)} distinct texts, fewer than one batch",
                         where="data", hint=f"give more pairs or a --batch-size below {config.batch_size}")
    set_seed(config.seed)
    lm, tok, folder = _load_lm(config)
    mlm = config.objective == "mntp"
    if mlm:
        _mask_token_id(tok, config.mask_token, "mask_token")
    train = _tokenize(tok, train_texts, config.max_seq_length)
    held_out = _tokenize(tok, eval_texts, config.max_seq_length)

    def collator(seed: int | None = None) -> Any:
        # mlm=False: labels are the input ids (padding -100); the model's causal-LM loss shifts them by one
        return DataCollatorForLanguageModeling(tok, mlm=mlm, mlm_probability=config.mask_prob, seed=seed)

    before = masked_token_loss(lm, collator(config.seed), held_out, config.batch_size) if held_out else None
    lm = get_peft_model(lm, PeftLoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha,
                                           lora_dropout=config.lora.dropout, task_type="CAUSAL_LM",
                                           target_modules=lora_target_modules(lm, config.lora)))
    from datasets import Dataset

    with tempfile.TemporaryDirectory(prefix="embedkit-mntp-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=config.steps, per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr, warmup_steps=config.warmup_ratio, lr_scheduler_type="linear", seed=config.seed,
            logging_steps=max(1, config.steps // 10), save_strategy="no", report_to=[], bf16=config.bf16,
            remove_unused_columns=False, dataloader_drop_last=True,
            dataloader_pin_memory=torch.cuda.is_available(),
            disable_tqdm=os.environ.get("EMBEDKIT_NO_PROGRESS", "") not in ("", "0"),
        )
        trainer = Trainer(model=lm, args=args, train_dataset=Dataset.from_list(train), data_collator=collator())
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
    lm = lm.merge_and_unload()
    after = masked_token_loss(lm, collator(config.seed), held_out, config.batch_size) if held_out else None
    result = MNTPResult(out, len(train_texts), config.steps, round(train_s, 1), before, after)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        lm.config.is_causal = not mlm
        lm.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(folder).save_pretrained(tmp)  # without the stand-in mask token
        summary = {**asdict(result), "output_dir": str(out), "config": config.model_dump(mode="json")}
        (tmp / "mntp.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("%s: %d steps on %d texts, held-out loss %s -> %s", config.objective.upper(), config.steps,
                len(train_texts), before, after)
    return result
