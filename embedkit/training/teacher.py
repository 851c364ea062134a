"""Train a cross-encoder teacher in-house: sentence-transformers' ``CrossEncoder`` and ``CrossEncoderTrainer`` on the
user's pairs and their mined negatives.

Why in-house? Listwise distillation and Margin-MSE need a teacher that scores (query, document) pairs better than
the student, and no cross-encoder ships offline (distilling from a bi-encoder such as all-mpnet-base-v2 lost nDCG
here). A cross-encoder initialised from any local encoder (the MiniLM alias by default) and trained for a few hundred
steps on the same mined negatives is that teacher. The training loop is sentence-transformers' own (its trainer
and its cross-encoder losses): embedkit only turns :class:`~embedkit.data.schema.Pair` records into the rows those
losses expect, checks the inputs first, and saves the result atomically with a model card.

Losses (``loss``):

* ``bce`` -- :class:`~sentence_transformers.cross_encoder.losses.BinaryCrossEntropyLoss` on (query, document,
  label) rows: each positive is a 1, each of the first ``num_negatives`` negatives a 0; positives are weighted by
  the negatives-per-positive ratio (``pos_weight``), as sentence-transformers' MS MARCO reranker recipe does;
* ``listnet`` -- :class:`~sentence_transformers.cross_encoder.losses.ListNetLoss` over each query's list
  (positives then negatives, labels 1 / 0);
* ``lambda`` -- :class:`~sentence_transformers.cross_encoder.losses.LambdaLoss` (NDCG-Loss2++ weighting) over the
  same lists.

``batch_size`` counts training rows: (query, document) pairs for ``bce``, queries (each with its whole list) for
the listwise losses.

Records without negatives cannot teach ranking: they are skipped and counted; when no record has negatives the
input is refused with the command that mines them (``embedkit mine``). The output is a normal ``CrossEncoder``
folder (safetensors): ``CrossEncoder(path)`` and ``Teacher.load(path, "cross")`` load it, and ``embedkit mine
--teacher`` scores with it.

Example:
    >>> from embedkit.training.teacher import TeacherConfig, train_teacher
    >>> result = train_teacher("mined.jsonl", "teachers/ce", TeacherConfig(loss="lambda", steps=300))  # doctest: +SKIP
    >>> result.path                                                                                   # doctest: +SKIP
    'teachers/ce'
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedkit.data.schema import Pair
from embedkit.errors import InputError, ModelError

__all__ = ["TeacherConfig", "TeacherResult", "build_rows", "check_teacher_output", "train_teacher"]

TeacherLoss = Literal["bce", "listnet", "lambda"]

#: the sentence-transformers loss class behind each ``loss`` name (for the model card)
LOSS_CLASSES: dict[str, str] = {"bce": "BinaryCrossEntropyLoss", "listnet": "ListNetLoss", "lambda": "LambdaLoss"}


class TeacherConfig(BaseModel):
    """Settings of ``embedkit teacher`` (each field is a flag: ``batch_size`` -> ``--batch-size``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("minilm", description="encoder to initialise the cross-encoder from: a local folder or alias")
    loss: TeacherLoss = Field("bce", description="bce: binary cross-entropy on (query, document) rows; listnet / "
                                                 "lambda: listwise over each query's positives and negatives")
    steps: int = Field(500, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="rows per step: (query, document) pairs for bce, queries for "
                                                  "listnet / lambda")
    lr: float = Field(2e-5, gt=0, description="peak learning rate (linear warm-up, then linear decay)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of the steps spent warming up")
    max_seq_length: int = Field(256, ge=8, description="tokens of query + document (longer pairs are truncated)")
    num_negatives: int = Field(7, ge=1, description="mined negatives used per query (the first ones of each record)")
    pos_weight: float | None = Field(None, gt=0, description="bce only: weight of a positive row (none: negatives "
                                                             "per positive in the data)")
    seed: int = Field(42, ge=0, description="random seed (head initialisation, data order)")


@dataclass
class TeacherResult:
    """What :func:`train_teacher` did (also in ``OUT/embedkit_teacher.json``)."""

    path: str
    base_model: str
    loss: str
    steps: int
    train_loss: float
    records: int  # records used (with negatives)
    skipped_without_negatives: int
    rows: int  # training rows built from them
    seconds: float
    source: str = ""

    def summary(self) -> str:
        skipped = f", {self.skipped_without_negatives} without negatives skipped" if self.skipped_without_negatives \
            else ""
        return (f"trained a cross-encoder teacher ({self.loss}, {self.steps} steps, final train loss "
                f"{self.train_loss:.4f}) on {self.records} records ({self.rows} rows){skipped} in {self.seconds:.0f} s")


def build_rows(pairs: Sequence[Pair], loss: TeacherLoss, num_negatives: int) -> tuple[dict[str, list[Any]], int]:
    """The training columns the loss expects, and how many records were skipped for having no negatives.

    ``bce``: ``{"query": [...], "document": [...], "label": [1.0 | 0.0, ...]}`` (one row per document);
    ``listnet`` / ``lambda``: ``{"query": [...], "docs": [[pos..., neg...]], "labels": [[1.0..., 0.0...]]}``.

    Example:
        >>> rows, skipped = build_rows([Pair("q", ["p"], ["n1", "n2"]), Pair("q2", ["p2"])], "bce", 1)
        >>> rows["document"], rows["label"], skipped
        (['p', 'n1'], [1.0, 0.0], 1)
    """
    skipped = 0
    if loss == "bce":
        cols: dict[str, list[Any]] = {"query": [], "document": [], "label": []}
    else:
        cols = {"query": [], "docs": [], "labels": []}
    for p in pairs:
        negs = list(p.negatives[:num_negatives])
        if not negs:
            skipped += 1
            continue
        query = f"{p.instruction} {p.query}" if p.instruction else p.query
        docs = [*p.positives, *negs]
        labels = [1.0] * len(p.positives) + [0.0] * len(negs)
        if loss == "bce":
            cols["query"] += [query] * len(docs)
            cols["document"] += docs
            cols["label"] += labels
        else:
            cols["query"].append(query)
            cols["docs"].append(docs)
            cols["labels"].append(labels)
    return cols, skipped


def check_teacher_output(output: Path, overwrite: bool) -> None:
    """Refuse, before any work and creating nothing, an output that is a file, exists (without overwrite) or
    cannot be created."""
    from embedkit.errors import OutputError
    from embedkit.utils.io import check_parent_creatable

    if output.exists() and not output.is_dir():
        raise OutputError(f"output {output} is a file; a teacher is a folder", where="--output",
                          hint="give a folder path that does not exist yet")
    if output.exists() and not overwrite:
        raise OutputError(f"output folder {output} already exists", where="--output",
                          hint="pass a new path, or --overwrite to replace it")
    check_parent_creatable(output, where="--output")


def _load_pairs(pairs: str | os.PathLike | Sequence[Pair], *, skip_invalid: bool, split: str) -> tuple[list[Pair], str]:
    if isinstance(pairs, (str, os.PathLike)):
        from embedkit.data.readers import load_pairs
        from embedkit.data.samples import resolve_data_path

        loaded = load_pairs(resolve_data_path(pairs), skip_invalid=skip_invalid, split=split)
        if loaded.num_skipped:
            print(f"embedkit teacher: {loaded.summary} (first: {loaded.first_error})", file=sys.stderr)
        return list(loaded), str(pairs)
    return list(pairs), "(in-memory pairs)"


def _build_loss(model: Any, cfg: TeacherConfig, rows: dict[str, list[Any]]) -> Any:
    import torch
    from sentence_transformers.cross_encoder import losses

    if cfg.loss == "bce":
        n_pos = sum(1 for y in rows["label"] if y > 0)
        ratio = cfg.pos_weight if cfg.pos_weight is not None else (len(rows["label"]) - n_pos) / max(n_pos, 1)
        return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(max(ratio, 1e-6))))
    if cfg.loss == "listnet":
        return losses.ListNetLoss(model)
    return losses.LambdaLoss(model)


def _load_cross_encoder(cfg: TeacherConfig) -> tuple[Any, str]:
    """A ``CrossEncoder`` with a fresh one-logit head on ``cfg.model``'s encoder, after embedkit's pre-load checks."""
    from embedkit.models.folders import resolve_model_path
    from embedkit.models.loading import check_model

    try:
        check_model(cfg.model)  # folder, pickle files, config, safetensors headers: before any weights load
        path = resolve_model_path(cfg.model)
    except ModelError as exc:
        raise ModelError(exc.message, where=exc.where or "--model", hint=exc.hint) from None
    # the encoder's positions bound the pair length (else an index error deep inside the first step); the config
    # is the one loading reads (a sentence-transformers folder's Transformer module, or the folder itself)
    from embedkit.models.folders import _hf_config_path, _read_json

    limit = _read_json(_hf_config_path(Path(path))).get("max_position_embeddings")
    if isinstance(limit, int) and cfg.max_seq_length > limit:
        raise ModelError(f"{cfg.max_seq_length} exceeds the {limit} positions of '{cfg.model}'",
                         where="--max-seq-length", hint=f"use at most {limit}")
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(path, num_labels=1, max_length=cfg.max_seq_length, local_files_only=True,
                             model_kwargs={"use_safetensors": True})
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot build a cross-encoder from '{cfg.model}': {first}", where="--model",
                         hint="pass an encoder folder (BERT-like, saved with save_pretrained or "
                              "SentenceTransformer.save)") from None
    return model, path


def train_teacher(
    pairs: str | os.PathLike | Sequence[Pair],
    output: str | os.PathLike,
    config: TeacherConfig | None = None,
    *,
    overwrite: bool = False,
    skip_invalid: bool = False,
    split: str = "train",
    show_progress_bar: bool | None = None,
) -> TeacherResult:
    """Train a cross-encoder teacher on ``pairs`` (with mined negatives) and save it to ``output``, atomically.

    Args:
        pairs: a pairs file / BEIR folder / ``sample:NAME`` (read with :func:`embedkit.data.readers.load_pairs`),
            or :class:`~embedkit.data.schema.Pair` records; records need ``negatives`` (``embedkit mine``).
        output: the teacher folder to write (a ``CrossEncoder`` folder with ``README.md`` and
            ``embedkit_teacher.json``).
        config: the settings (:class:`TeacherConfig`; defaults when ``None``).
        overwrite: replace an existing ``output`` folder (only once the new one is complete).
        skip_invalid / split: as for :func:`~embedkit.data.readers.load_pairs`.
        show_progress_bar: the trainer's bar (default: when stderr is a terminal).

    Raises:
        InputError: no record has negatives (with the ``embedkit mine`` command to run), or a bad pairs file.
        ModelError: ``config.model`` is no loadable encoder folder.
        OutputError: ``output`` exists (without ``overwrite``) or cannot be created.
    """
    cfg = config or TeacherConfig()
    out = Path(output)
    check_teacher_output(out, overwrite)
    records, source = _load_pairs(pairs, skip_invalid=skip_invalid, split=split)
    rows, skipped = build_rows(records, cfg.loss, cfg.num_negatives)
    if not rows["query"]:
        raise InputError(f"none of the {len(records)} records has negatives; a cross-encoder learns to rank from "
                         "them", where=source if source != "(in-memory pairs)" else "pairs",
                         hint=f"mine them first: embedkit mine --pairs {source} -o mined.jsonl, then "
                              "embedkit teacher --pairs mined.jsonl")
    start = time.perf_counter()
    import torch
    import transformers
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    transformers.set_seed(cfg.seed)  # the new classification head is initialised from this seed
    model, base_path = _load_cross_encoder(cfg)
    dataset = Dataset.from_dict(rows)
    loss = _build_loss(model, cfg, rows)
    bar = show_progress_bar if show_progress_bar is not None else sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="embedkit-teacher-") as work:
        args = CrossEncoderTrainingArguments(
            output_dir=work, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr, warmup_steps=int(round(cfg.steps * cfg.warmup_ratio)), seed=cfg.seed,
            data_seed=cfg.seed, save_strategy="no", report_to="none", logging_steps=max(1, cfg.steps // 20),
            disable_tqdm=not bar, use_cpu=not torch.cuda.is_available(), dataloader_drop_last=False,
        )
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        train_out = trainer.train()
    seconds = time.perf_counter() - start
    result = TeacherResult(path=str(out), base_model=cfg.model, loss=cfg.loss, steps=int(train_out.global_step),
                           train_loss=float(train_out.training_loss), records=len(records) - skipped,
                           skipped_without_negatives=skipped, rows=len(rows["query"]), seconds=seconds,
                           source=source)
    from embedkit.utils.io import atomic_dir

    model.eval()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save(str(tmp), create_model_card=False, safe_serialization=True)
        (tmp / "README.md").write_text(render_teacher_card(result, cfg, base_path), encoding="utf-8")
        info = {"result": asdict(result), "config": cfg.model_dump(), "base_model_path": base_path,
                "loss_class": f"sentence_transformers.cross_encoder.losses.{LOSS_CLASSES[cfg.loss]}"}
        (tmp / "embedkit_teacher.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return result


def render_teacher_card(result: TeacherResult, cfg: TeacherConfig, base_path: str = "") -> str:
    """The teacher folder's ``README.md``: what it was trained on, with which loss, for how many steps."""
    front = ["---", "library_name: sentence-transformers", "pipeline_tag: text-ranking", "tags:",
             "- sentence-transformers", "- cross-encoder", "- reranker", "- embedkit"]
    front += [f"base_model: {json.dumps(cfg.model)}", "---"]
    lines = [*front, "", "# Cross-encoder teacher", "",
             f"Trained with embedkit (`embedkit teacher`) from `{cfg.model}`"
             f"{f' ({base_path})' if base_path and base_path != cfg.model else ''}: sentence-transformers' "
             f"`CrossEncoderTrainer` with `{LOSS_CLASSES[cfg.loss]}`, {result.steps} optimizer steps.", "",
             "## Usage", "", "```python", "from sentence_transformers import CrossEncoder", "",
             'model = CrossEncoder("PATH/TO/THIS/FOLDER")',
             'scores = model.predict([("how do I list files", "ls - list directory contents")])', "```", "",
             "As a distillation teacher: `embedkit mine --pairs train.jsonl -o scored.jsonl --teacher "
             "PATH/TO/THIS/FOLDER`; as a reranker: `embedkit eval MODEL --beir DIR --rerank PATH/TO/THIS/FOLDER "
             "-o OUT`.", "",
             "## Training data", "",
             "| source | records used | skipped (no negatives) | rows | negatives per query (at most) |",
             "|---|---|---|---|---|",
             f"| `{result.source}` | {result.records} | {result.skipped_without_negatives} | {result.rows} | "
             f"{cfg.num_negatives} |", "",
             "## Training", "", "| setting | value |", "|---|---|"]
    for key, value in cfg.model_dump().items():
        lines.append(f"| {key} | {value} |")
    lines += [f"| final train loss | {result.train_loss:.4f} |", f"| wall time | {result.seconds:.0f} s |", ""]
    return "\n".join(lines)
