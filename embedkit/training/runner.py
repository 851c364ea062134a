"""Run a validated recipe end to end: data -> (mining) -> model -> Trainer -> final model + card (+ stages).

Order matters for users: everything that can be checked without heavy work is checked first (recipe keys, output
folder state, data files with ``file:line`` errors, data-level contradictions), then the model is loaded, and only
then is the output folder created. A failure before training leaves no output folder behind.

Output layout (``OUT`` = ``-o`` or ``output.dir``)::

    OUT/recipe.yaml                       the resolved recipe (a resume must use the same one)
    OUT/checkpoints/checkpoint-N/         crash-safe checkpoints (single-stage recipes)
    OUT/training.png                      loss, in-batch accuracy, held-out nDCG per step (a row per stage)
    OUT/training_log.json                 the numbers behind it (per stage: OUT/stages/01-NAME/training_log.json)
    OUT/tensorboard/                      TensorBoard events, with ``training.report_to: [tensorboard]``
    OUT/stages/01-NAME/{checkpoints,final,tensorboard} per stage (multi-stage recipes)
    OUT/final/                            the trained model (sentence-transformers folder + README.md card)

Retrieval scores (``eval.beir``) are computed by a ``scorer`` passed in (``embedkit train`` passes
:func:`embedkit.evaluation.score_beir`): training never imports the evaluation package, which sits above it.

Example:
    >>> from embedkit.evaluation import score_beir
    >>> from embedkit.training.config import load_recipe
    >>> from embedkit.training.runner import run_recipe
    >>> recipe = load_recipe("recipes/minilm-cpu.yaml", sets=["training.max_steps=20"])   # doctest: +SKIP
    >>> result = run_recipe(recipe, "runs/minilm", scorer=score_beir)                      # doctest: +SKIP
    >>> result.final_dir                                                                    # doctest: +SKIP
    PosixPath('runs/minilm/final')
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from embedkit.data.schema import Pair
from embedkit.errors import ConfigError, EmbedkitError, InputError, OutputError
from embedkit.training.checkpoint import clean_stale, is_complete, last_complete_checkpoint, write_marker
from embedkit.training.config import DatasetConfig, Recipe, recipe_to_yaml
from embedkit.training.model_card import DataStats, write_card

if TYPE_CHECKING:  # the trainer module imports torch: not needed by --dry-run
    from embedkit.training.trainer import Scorer
from embedkit.utils.io import atomic_dir, atomic_file, check_parent_creatable

logger = logging.getLogger(__name__)

#: recipe keys that may change between a run and its resume (they do not change the trained weights)
RESUME_MUTABLE = ("output", "eval", "miner.cache_dir", "training.logging_steps", "training.report_to",
                  "training.dataloader_num_workers")


@dataclass
class StageResult:
    name: str
    final_dir: Path
    global_step: int
    metrics: dict[str, float] = field(default_factory=dict)
    #: the stage's :class:`~embedkit.training.plots.StageLog` (``None`` for a stage skipped on resume)
    log: Any = None


@dataclass
class TrainResult:
    """What :func:`run_recipe` did: the final model folder, per-stage results and metrics."""

    output_dir: Path
    final_dir: Path
    stages: list[StageResult]

    @property
    def metrics(self) -> dict[str, float]:
        return self.stages[-1].metrics if self.stages else {}


# ------------------------------------------------------------------------------------------------------------------
# data


@dataclass
class LoadedData:
    pairs: list[list[Pair]]
    stats: list[DataStats]


def load_data(recipe: Recipe, *, stage_prefix: str = "") -> LoadedData:
    """Read every data set of a (stage) recipe with the data readers; check data-level contradictions."""
    all_pairs: list[list[Pair]] = []
    stats: list[DataStats] = []
    for i, d in enumerate(recipe.data.datasets):
        key = f"{stage_prefix}data.datasets.{i}"
        ps = _read_dataset(recipe, i, key)
        pairs = list(ps)
        if d.max_pairs is not None:
            pairs = pairs[: d.max_pairs]
        with_negs = sum(1 for p in pairs if p.negatives)
        stats.append(DataStats(
            name=d.display_name, source=d.path, pairs=len(pairs), skipped=ps.num_skipped,
            skip_summary=ps.summary if ps.num_skipped else "", with_negatives=with_negs,
            mean_negatives=(sum(min(len(p.negatives), d.max_negatives) for p in pairs) / max(1, len(pairs))),
            with_teacher_scores=sum(1 for p in pairs if p.positive_scores or p.negative_scores),
            in_batch_negatives=d.in_batch_negatives, weight=d.weight, mined=recipe.miner is not None,
        ))
        all_pairs.append(pairs)
        if recipe.miner is None and not d.in_batch_negatives and with_negs == 0:
            raise ConfigError(
                f"data set '{d.display_name}' has no negatives: '{key}.in_batch_negatives' is false, its records "
                "carry no hard negatives and no 'miner' is configured",
                where=key, hint="mine negatives (add a 'miner:' section), or turn in_batch_negatives on",
            )
    if recipe.losses.needs_teacher_scores and recipe.miner is None:
        missing = [s.name for s in stats if s.with_teacher_scores == 0]
        if missing:
            key = recipe.losses.teacher_score_keys(prefix=f"{stage_prefix}losses.")[0]
            raise ConfigError(
                f"'{key}' needs teacher scores but data set '{missing[0]}' has none and "
                f"'{stage_prefix}miner.teacher' is not set",
                where=key,
                hint="add positive_scores/negative_scores to the data, or a miner with a teacher",
            )
    return LoadedData(all_pairs, stats)


def _read_dataset(recipe: Recipe, i: int, key: str) -> Any:
    """Read data set ``i`` of ``recipe``; errors about the file or folder as a whole (missing, unknown sample,
    no train split...) name the recipe key and line (``recipe.yaml:6: 'data.datasets.0.path' (...): ...``);
    errors inside the data keep their own ``file:line``."""
    from embedkit.data.readers import load_pairs

    d = recipe.data.datasets[i]
    where = recipe.where(f"data.datasets.{i}.path")
    path: Path | None = None
    try:
        path = d.resolved_path()
        if not path.exists():
            raise InputError(f"data file {path} does not exist",
                             hint="check the path (relative paths are relative to the working directory)")
        return load_pairs(path, skip_invalid=recipe.data.skip_invalid, dataset=d.display_name, split=d.split)
    except InputError as exc:
        if exc.where is not None and exc.where != str(path):
            raise  # a record's file:line
        raise InputError(f"'{key}.path' ({d.path}): {exc.message}", where=where or exc.where,
                         hint=exc.hint) from None


def mine(recipe: Recipe, data: LoadedData, stage_dir: Path, model_name: str, *,
         mined_dir: Path | None = None) -> LoadedData:
    """Replace each data set's negatives by mined ones (cached as ``stage_dir/mined/NAME.jsonl``, or under
    ``mined_dir``); a data set whose mined file exists is not mined again."""
    from embedkit.data.readers import load_pairs
    from embedkit.mining import mine_hard_negatives

    assert recipe.miner is not None
    cfg = recipe.miner
    out_pairs = []
    stats = [copy.copy(st) for st in data.stats]
    for pairs, st in zip(data.pairs, stats):
        target = (mined_dir or stage_dir / "mined") / f"{st.name}.jsonl"
        if not target.is_file():
            mine_hard_negatives(pairs, cfg.model or model_name, output=target, **_miner_kwargs(recipe, stage_dir))
        _barrier()  # under torchrun only rank 0 writes the mined pairs; the others read them after it is done
        mined = list(load_pairs(target, dataset=st.name))
        st.with_negatives = sum(1 for p in mined if p.negatives)
        spec = next(d for d in recipe.data.datasets if d.display_name == st.name)
        st.mean_negatives = sum(min(len(p.negatives), spec.max_negatives) for p in mined) / max(1, len(mined))
        if st.with_negatives == 0 and not spec.in_batch_negatives:
            raise InputError(
                f"mining found no hard negative for any query of data set '{st.name}', which has in-batch negatives "
                "off: training would see no negatives at all",
                where=str(target),
                hint="relax miner.max_score_ratio / widen miner.range_max, or set in_batch_negatives: true",
            )
        st.with_teacher_scores = sum(1 for p in mined if p.positive_scores or p.negative_scores)
        st.mined = True
        out_pairs.append(mined)
    return LoadedData(out_pairs, stats)


def _miner_kwargs(recipe: Recipe, stage_dir: Path) -> dict[str, Any]:
    """:func:`~embedkit.mining.mine_hard_negatives`' settings from the recipe's ``miner:`` section (all but the
    model, the pairs and the output), shared by the first mining and the refreshes."""
    assert recipe.miner is not None
    cfg = recipe.miner
    return dict(config=cfg.model_dump(exclude=set(cfg.RUN_KEYS)), corpus=cfg.corpus,
                cache_dir=cfg.cache_dir or stage_dir / "mined" / "cache", teacher=cfg.teacher,
                teacher_type=cfg.teacher_type)


def refresh_callback(recipe: Recipe, stage_dir: Path, dataset: Any, raw: LoadedData) -> Any:
    """The :class:`~embedkit.training.refresh.NegativeRefreshCallback` of ``miner.refresh_every_steps``: it re-mines
    ``raw`` (the records as read) with the live model and the first mining's settings."""
    from embedkit.mining import mine_hard_negatives
    from embedkit.training.refresh import NegativeRefreshCallback

    assert recipe.miner is not None and recipe.miner.refresh_every_steps is not None
    kwargs = _miner_kwargs(recipe, stage_dir)

    def mine_fn(records: Any, model: Any, output: Path) -> None:
        mine_hard_negatives(list(records), model, output=output, show_progress_bar=False, **kwargs)

    return NegativeRefreshCallback(dataset, raw.pairs, [s.name for s in raw.stats],
                                   every_n_steps=recipe.miner.refresh_every_steps, mined_dir=stage_dir / "mined",
                                   mine_fn=mine_fn, barrier=_barrier)


# ------------------------------------------------------------------------------------------------------------------
# the teacher chain (``teacher:``): mine without scores -> train the teacher -> mine again with it

#: where the chain writes, under the stage folder
TEACHER_DIR = "teacher"
TEACHER_DATA_DIR = Path("mined") / "teacher-data"


def check_teacher_path(recipe: Recipe) -> None:
    """A ``teacher.path`` (in any stage) must be a safetensors CrossEncoder folder: one line before any work."""
    from embedkit.errors import ModelError
    from embedkit.models.folders import refuse_pickle_weights

    for i, (_, r) in enumerate(recipe.stage_recipes()):
        if r.teacher is None or r.teacher.path is None:
            continue
        key = f"stages.{i}.teacher.path" if recipe.stages is not None else "teacher.path"
        where = r.where("teacher.path") or key
        folder = Path(r.teacher.path)
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise ModelError(f"'{key}' ({folder}) is not a CrossEncoder folder (no config.json)", where=where,
                             hint="pass a folder written by embedkit teacher (or CrossEncoder.save), or drop "
                                  f"{key} to train one")
        refuse_pickle_weights(folder, where=where)
        if not any(folder.rglob("*.safetensors")):
            raise ModelError(f"'{key}' ({folder}) has no safetensors weights; embedkit loads no pickle",
                             where=where, hint="re-save it with safe_serialization=True")


def teacher_is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a finished :func:`~embedkit.training.teacher.train_teacher` output (it is written
    atomically, with ``embedkit_teacher.json`` last-in-folder, so a present file means a complete teacher)."""
    return (folder / "embedkit_teacher.json").is_file() and (folder / "config.json").is_file()


def prepare_teacher(recipe: Recipe, data: LoadedData, stage_dir: Path, model_name: str) -> Recipe:
    """Resolve the recipe's ``teacher:`` section into ``miner.teacher`` (the returned recipe), training the
    teacher into ``stage_dir/teacher`` first unless it is complete there (a resumed run never retrains it).

    The teacher learns from the same miner settings without teacher scores (``stage_dir/mined/teacher-data/``,
    skipped when present); the embedding cache is shared, so the second mining re-encodes nothing."""
    assert recipe.teacher is not None and recipe.miner is not None
    if recipe.teacher.path is not None:
        path = recipe.teacher.path
    else:
        folder = stage_dir / TEACHER_DIR
        if not teacher_is_complete(folder):
            plain = recipe.miner.model_copy(update={"teacher": None, "teacher_max_score_ratio": None,
                                                    "num_candidates": None})  # the teacher-only settings
            first = recipe.model_copy(update={"miner": plain, "teacher": None})
            mined = mine(first, data, stage_dir, model_name, mined_dir=stage_dir / TEACHER_DATA_DIR)
            if _is_main():
                from embedkit.training.teacher import TeacherConfig, train_teacher

                cfg = TeacherConfig.model_validate(recipe.teacher.model_dump(exclude={"path"}))
                records = [p for pairs in mined.pairs for p in pairs]
                res = train_teacher(records, folder, cfg, overwrite=folder.exists())
                logger.warning("teacher: %s -> %s", res.summary(), folder)
            _barrier()
        path = str(folder)
    return recipe.model_copy(update={"miner": recipe.miner.model_copy(update={"teacher": path})})


# ------------------------------------------------------------------------------------------------------------------
# evaluation


def load_eval_data(recipe: Recipe) -> Any:
    """The BEIR split named by ``eval.beir`` (a seeded :meth:`BeirData.subset` when capped), or ``None``."""
    if recipe.eval.beir is None:
        return None
    from embedkit.data.beir import load_beir
    from embedkit.data.samples import resolve_data_path

    e = recipe.eval
    data = load_beir(resolve_data_path(e.beir), split=e.split)
    return data.subset(e.max_queries, e.max_corpus, seed=recipe.training.seed)


def evaluate(model: Any, beir: Any, k: int, scorer: Scorer) -> dict[str, float]:
    """``scorer``'s metrics of ``model`` on ``beir`` at cut-off ``k`` (e.g. ``{"ndcg@10": ...}``)."""
    return {key: float(v) for key, v in scorer(model, beir, k_values=(k,)).items()}


def check_scorer(recipe: Recipe, scorer: Scorer | None) -> None:
    """A recipe with ``eval.beir`` (in any stage) needs a scorer; say so before any work."""
    for i, (_, r) in enumerate(recipe.stage_recipes()):
        if r.eval.beir is not None and scorer is None:
            key = f"stages.{i}.eval.beir" if recipe.stages is not None else "eval.beir"
            raise ConfigError(
                f"'{key}' asks for retrieval scores, but run_recipe got no scorer", where=r.where("eval.beir") or key,
                hint="pass scorer=embedkit.evaluation.score_beir (embedkit train does), or remove the eval section")


def check_report_to(recipe: Recipe) -> None:
    """Every ``training.report_to`` integration must be installed: one line now, not a traceback from the Trainer
    after the model loaded."""
    for i, (_, r) in enumerate(recipe.stage_recipes()):
        wanted = [n for n in r.training.report_to if n not in ("none", "all")]
        if not wanted:
            continue
        from transformers.integrations import get_available_reporting_integrations

        available = set(get_available_reporting_integrations())
        for name in wanted:
            if name not in available:
                key = f"stages.{i}.training.report_to" if recipe.stages is not None else "training.report_to"
                package = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}.get(name, name)
                raise ConfigError(f"'{key}' names {name}, which is not installed", where=r.where("training.report_to")
                                  or key, hint=f"pip install {package}, or drop {name} from {key}")


def _report_callbacks(recipe: Recipe, stage_dir: Path) -> tuple[list[str], list[Any]]:
    """``report_to`` for the ``TrainingArguments`` and the callbacks embedkit builds itself: TensorBoard writes into
    ``stage_dir/tensorboard`` (transformers' default would be ``checkpoints/runs/DATE_HOST``, inside the folder
    whose checkpoints are rotated)."""
    names = list(recipe.training.report_to)
    if "tensorboard" not in names or not _is_main():
        return [n for n in names if n != "tensorboard"] or ["none"], []
    from transformers.integrations import TensorBoardCallback

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # transformers accepts tensorboardX as well
        from tensorboardX import SummaryWriter
    writer = SummaryWriter(log_dir=str(stage_dir / "tensorboard"))
    return [n for n in names if n != "tensorboard"] or ["none"], [TensorBoardCallback(tb_writer=writer)]


# ------------------------------------------------------------------------------------------------------------------
# output folder


def resolve_output_dir(recipe: Recipe, output_dir: str | os.PathLike | None) -> Path:
    out = output_dir or recipe.output.dir
    if not out:
        raise ConfigError("no output folder", where="output.dir", hint="set output.dir in the recipe or pass -o DIR")
    return Path(out)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def check_resume_recipe(saved_text: str, recipe: Recipe, where: str) -> None:
    """A resume must use the same recipe (except keys that do not change the weights)."""
    raw = yaml.safe_load(saved_text) or {}
    try:  # fill in the defaults of keys added since that run (e.g. data.datasets.N.split), so they compare equal
        raw = Recipe.model_validate(raw).model_dump(mode="json")
    except Exception:  # a recipe this version no longer accepts: compare it as written
        pass
    saved = _flatten(raw)
    now = _flatten(recipe.model_dump(mode="json"))
    for key in sorted(set(saved) | set(now)):
        if any(key == m or key.startswith(m + ".") for m in RESUME_MUTABLE):
            continue
        if saved.get(key) != now.get(key):
            raise ConfigError(
                f"cannot resume: '{key}' was {saved.get(key)!r} in the run being resumed, now {now.get(key)!r}",
                where=where, hint="resume with the same recipe and --set options, or start a new run with -o",
            )


def prepare_output(out: Path, *, resume: bool | str, overwrite: bool) -> None:
    """Check the output folder's state before any work (nothing is created here)."""
    check_parent_creatable(out, where="-o")
    exists = out.exists() and any(out.iterdir()) if out.is_dir() else out.exists()
    if resume:
        if not out.is_dir() or not (out / "recipe.yaml").is_file():
            raise OutputError(f"nothing to resume in {out}: no recipe.yaml from an earlier run",
                              hint="check -o / output.dir, or drop --resume to start a new run")
        return
    if exists and not overwrite:
        raise OutputError(f"output folder {out} already exists",
                          hint="pass --resume to continue that run, --overwrite to replace it, or a new -o")


# ------------------------------------------------------------------------------------------------------------------
# one stage


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _training_args(recipe: Recipe, checkpoints: Path, report_to: list[str] | None = None) -> Any:
    from transformers import TrainingArguments

    t = recipe.training
    o = recipe.output
    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoints),
        per_device_train_batch_size=t.batch_size,
        learning_rate=t.lr,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        warmup_steps=t.warmup_steps if t.warmup_steps > 0 else t.warmup_ratio,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        seed=t.seed,
        logging_steps=t.logging_steps,
        report_to=t.report_to if report_to is None else report_to,
        bf16=t.bf16,
        save_strategy="steps" if o.save_steps else "no",
        save_steps=o.save_steps or 500,
        save_total_limit=o.save_total_limit,
        dataloader_num_workers=t.dataloader_num_workers,
        remove_unused_columns=False,
        disable_tqdm=os.environ.get("EMBEDKIT_NO_PROGRESS", "") not in ("", "0"),
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _cuda_available():
        # under torchrun on a machine without CUDA, TrainingArguments (transformers 5.23 + accelerate 1.15) builds a
        # non-distributed PartialState unless use_cpu is set: every rank would train alone on the whole data set
        # while torch.distributed is initialised (found by tests/training/test_training_ddp.py)
        kwargs["use_cpu"] = True
    kwargs.update(t.trainer_args)
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"transformers rejected the training arguments: {str(exc).splitlines()[0]}",
                          where="training", hint="check training.* and training.trainer_args") from None


def _loss_summary(recipe: Recipe) -> str:
    parts = []
    for name in type(recipe.losses).model_fields:  # every loss the recipe sets, new ones included
        cfg = getattr(recipe.losses, name)
        if cfg is not None:
            parts.append(f"- **{name}**: `{cfg.model_dump_json()}`")
    gc = recipe.training.gradcache_chunk_size
    ec = recipe.training.encode_chunk_size
    parts.append(f"- GradCache: {'chunk size ' + str(gc) if gc else 'off'}; batch size {recipe.training.batch_size}"
                 " per device" + (f"; encoded in length-sorted chunks of {ec}" if ec else ""))
    return "\n".join(parts)


def _prompt_lengths_vary(collator: Any, datasets: list[list[Any]], specs: list[Any]) -> bool:
    """Whether the training queries' prompts (record instruction, else the data set's) differ in token length.

    Only then does pooling need one prompt length per row; otherwise the model keeps sentence-transformers' own
    ``Pooling`` and its saved folder loads in plain ``SentenceTransformer(path)``."""
    prompts = {collator.query_prompt_for(pair, spec) for pairs, spec in zip(datasets, specs) for pair in pairs}
    return len({collator.prompt_length(p) for p in prompts}) > 1


def run_stage(
    recipe: Recipe,
    stage_dir: Path,
    data: LoadedData,
    *,
    model_name: str | None,
    resume: bool | str,
    stage: str = "",
    callbacks: list[Any] | None = None,
    scorer: Scorer | None = None,
    plot: Path | None = None,
    previous_logs: list[Any] | None = None,
) -> StageResult:
    """Train one stage into ``stage_dir`` (``checkpoints/`` + ``final/`` + ``training_log.json``); redraw ``plot``
    (``OUT/training.png``, after the rows of ``previous_logs``)."""
    from transformers import set_seed

    from embedkit.losses.build import build_loss
    from embedkit.models import load_model
    from embedkit.training.collator import DatasetSpec, PairCollator, PairDataset
    from embedkit.training.plots import TRAINING_LOG, TRAINING_PLOT, TrainingPlotCallback
    from embedkit.training.trainer import EmbeddingTrainer, ScoringCallback, save_pipeline

    final_dir = stage_dir / "final"
    checkpoints = stage_dir / "checkpoints"
    t = recipe.training
    model_cfg = recipe.model
    if model_name is not None:  # a later stage starts from the previous stage's model (its pooling included)
        model_cfg = model_cfg.model_copy(update={"name": model_name, "pooling": None})
    report_to, report_cbs = _report_callbacks(recipe, stage_dir)
    args = _training_args(recipe, checkpoints, report_to)
    _ = args.device  # sets up torch.distributed under torchrun (the barrier after mining needs it)
    set_seed(t.seed)  # new layers (latent attention, LoRA) start identically in a run and its resume
    model = load_model(model_cfg)
    if recipe.teacher is not None:  # train (or reuse) the teacher; mining below then scores with it
        recipe = prepare_teacher(recipe, data, stage_dir, model_cfg.name)
    raw = data  # the records as read: refreshes re-mine them
    if recipe.miner is not None:  # every rank: the corpus encoding is sharded over ranks, rank 0 searches and writes
        data = mine(recipe, data, stage_dir, model_cfg.name)

    ckpt: str | None = None
    if resume:
        if isinstance(resume, str):
            ckpt_path = Path(resume)
            if not is_complete(ckpt_path):
                raise InputError(f"{ckpt_path} is not a complete embedkit checkpoint", where=str(ckpt_path),
                                 hint="pass a checkpoint-N folder, or --resume alone for the latest")
            ckpt = str(ckpt_path)
        else:
            removed = clean_stale(checkpoints)
            if removed:
                logger.warning("removed incomplete checkpoint leftovers: %s", ", ".join(removed))
            last = last_complete_checkpoint(checkpoints)
            ckpt = str(last) if last is not None else None

    specs = [DatasetSpec(d.display_name, d.in_batch_negatives, d.max_negatives, d.instruction)
             for d in recipe.data.datasets]
    dataset = PairDataset(data.pairs, specs)
    prompts = getattr(model, "prompts", {}) or {}
    max_len = model.max_seq_length or getattr(model.tokenizer, "model_max_length", 512)
    collator = PairCollator(
        model.tokenizer, specs, max_length=min(int(max_len), 1 << 20),
        query_prompt=prompts.get("query", ""), document_prompt=prompts.get("document", ""),
        prompt_style=model_cfg.prompts.style,
    )
    if model_cfg.exclude_prompt and _prompt_lengths_vary(collator, data.pairs, specs):
        from embedkit.models.pooling import enable_per_row_prompt_lengths

        # each query drops exactly its own instruction; where the pooling cannot, the collator warns once
        collator.per_row_prompt_lengths = enable_per_row_prompt_lengths(model)
    loss_fn = build_loss(recipe.losses)
    beir = load_eval_data(recipe)
    if beir is not None and scorer is None:
        check_scorer(recipe, scorer)
    cbs = [*report_cbs, *(callbacks or [])]
    refresh_cb = None
    if recipe.miner is not None and recipe.miner.refresh_every_steps is not None:
        refresh_cb = refresh_callback(recipe, stage_dir, dataset, raw)
        cbs.insert(0, refresh_cb)  # first: the callbacks after it see the negatives the next steps use
    eval_cb = None
    if beir is not None and recipe.eval.every_steps:
        assert scorer is not None
        eval_cb = ScoringCallback(beir, scorer, every_n_steps=recipe.eval.every_steps, k_values=(recipe.eval.k,),
                                  prefix="eval_", model=model)
        cbs.append(eval_cb)
    metrics: dict[str, float] = {}
    baseline: dict[str, float] = {}
    if beir is not None and recipe.eval.before_training and ckpt is None:
        assert scorer is not None
        baseline = evaluate(model, beir, recipe.eval.k, scorer)
        metrics.update({f"base_{k}": v for k, v in baseline.items()})
    plot_cb = TrainingPlotCallback(plot or stage_dir / TRAINING_PLOT, stage_dir / TRAINING_LOG, stage=stage,
                                   previous=previous_logs or [], baseline=baseline)
    cbs.append(plot_cb)  # last: it draws what the callbacks before it logged
    lora_merge = model_cfg.lora.merge_on_save if model_cfg.lora is not None else True
    recipe_yaml = recipe_to_yaml(recipe)
    card_common = dict(recipe_yaml=recipe_yaml, data_stats=data.stats, base_model=model_cfg.name,
                       losses=_loss_summary(recipe), trust_remote_code=model_cfg.trust_remote_code, stage=stage)

    def card_writer(folder: Path, trainer: EmbeddingTrainer) -> None:
        write_card(folder, metrics=dict(metrics), step=trainer.state.global_step, **card_common)

    trainer = EmbeddingTrainer(
        model, args, train_dataset=dataset, collator=collator, loss_fn=loss_fn,
        sampling=recipe.data.sampling, weights=[d.weight for d in recipe.data.datasets],
        drop_last=recipe.data.drop_last, gradcache_chunk_size=t.gradcache_chunk_size,
        encode_chunk_size=t.encode_chunk_size,
        merge_lora_on_save=lora_merge, card_writer=card_writer, callbacks=cbs,
        b3_clusters=b3_clusters(recipe, data, stage_dir, model, world=max(1, args.world_size)),
    )
    if eval_cb is not None:
        eval_cb.trainer = trainer
    trainer.train(resume_from_checkpoint=ckpt)
    if refresh_cb is not None and refresh_cb.history:
        metrics["refreshes"] = float(len(refresh_cb.history))
        metrics["refresh_seconds"] = refresh_cb.seconds / len(refresh_cb.history)  # mean per refresh
        logger.warning("negatives refreshed %d times (%.1f s per refresh)", len(refresh_cb.history),
                       metrics["refresh_seconds"])
    final_scores: dict[str, float] = {}
    if eval_cb is not None and eval_cb.history and eval_cb.history[-1][0] == trainer.state.global_step:
        metrics.update(eval_cb.history[-1][1])  # the callback already scored the final step
    elif beir is not None:
        assert scorer is not None
        final_scores = evaluate(trainer.model, beir, recipe.eval.k, scorer)
        metrics.update(final_scores)
    log = plot_cb.stage_log(trainer.state.log_history)
    full_state = trainer.full_state_dict()  # a collective: every rank gathers a sharded model's full weights
    if trainer.args.should_save:
        log = plot_cb.finish(trainer.state, final_scores)
        with atomic_dir(final_dir, overwrite=True) as tmp:
            save_pipeline(trainer.model, tmp, merge_lora=lora_merge, state_dict=full_state)
            write_card(tmp, metrics=dict(metrics), step=trainer.state.global_step, final=True, **card_common)
            write_marker(tmp, {"global_step": trainer.state.global_step})
    _barrier()
    return StageResult(stage or "train", final_dir, trainer.state.global_step, metrics, log)


# ------------------------------------------------------------------------------------------------------------------
# corpus-only adaptation (``synth:``): generate pairs -> one more data set

SYNTH_PAIRS = Path("synth") / "pairs.jsonl"


def _synth_config(recipe: Recipe) -> Any:
    from embedkit.synth.config import SynthConfig

    assert recipe.synth is not None
    return SynthConfig.model_validate(recipe.synth.model_dump(exclude={"corpus", "name", "max_negatives"}))


def check_synth(recipe: Recipe) -> None:
    """The ``synth:`` corpus and generator, checked before the output folder is touched (one line each)."""
    from embedkit.synth.corpus import read_documents

    assert recipe.synth is not None
    s = recipe.synth
    path = s.resolved_corpus()
    if not path.exists():
        raise InputError(f"'synth.corpus' ({s.corpus}) does not exist", where=recipe.where("synth.corpus"),
                         hint="point synth.corpus at a JSONL file with 'text' per line, or a BEIR folder")
    read_documents(path, where=recipe.where("synth.corpus") or "synth.corpus")
    if s.uses_llm:
        from embedkit.synth.generator import check_generator_folder

        check_generator_folder(s.model, where=recipe.where("synth.model") or "synth.model")
    if s.round_trip_model is not None:
        from embedkit.models.loading import check_model

        check_model(s.round_trip_model)


def run_synth(recipe: Recipe, out: Path) -> Recipe:
    """Write ``out/synth/pairs.jsonl`` (continuing a stopped run's partial file; a finished file is reused) and
    return the recipe with it appended to ``data.datasets`` as data set ``synth.name``."""
    from embedkit.synth.pipeline import partial_path, synthesize

    assert recipe.synth is not None
    s = recipe.synth
    target = out / SYNTH_PAIRS
    if _is_main() and not target.is_file():
        res = synthesize(s.resolved_corpus(), target, _synth_config(recipe), resume=partial_path(target).exists(),
                         progress=sys.stderr.isatty())
        logger.warning("synth: %s -> %s", res.stats.summary(), target)
    _barrier()  # the other ranks read what rank 0 wrote
    spec = DatasetConfig(path=str(target), name=s.name, max_negatives=s.max_negatives)
    data = recipe.data.model_copy(update={"datasets": [*recipe.data.datasets, spec]})
    updated = recipe.model_copy(update={"data": data})
    updated._locator, updated._prefix = recipe._locator, recipe._prefix
    return updated


def b3_clusters(recipe: Recipe, data: LoadedData, stage_dir: Path, model: Any, *, world: int) -> list[Any] | None:
    """``data.batching: b3``: each data set's clusters of one global batch (:mod:`embedkit.mining.b3`), ranked by
    ``data.b3.model`` (default: ``model``, before training) through the mining embedding cache; else ``None``.
    Every rank builds the same clusters (exact search, seeded partition)."""
    if recipe.data.batching != "b3":
        return None
    import time

    from embedkit.mining.b3 import build_b3_for_datasets
    from embedkit.training.config import B3Config

    cfg = recipe.data.b3 or B3Config()
    teacher = model
    if cfg.model is not None:
        from embedkit.models import load_model

        teacher = load_model(cfg.model)
    cache = (recipe.miner.cache_dir if recipe.miner is not None and recipe.miner.cache_dir else None) \
        or stage_dir / "mined" / "cache"
    start = time.perf_counter()
    built = build_b3_for_datasets(data.pairs, teacher, cluster_size=recipe.training.batch_size * world, p=cfg.p,
                                  m=cfg.m, seed=recipe.training.seed, partitioner=cfg.partitioner,
                                  rank_by=cfg.rank_by, cache_dir=cache)  # keyed by the weights themselves
    for st, c in zip(data.stats, built):
        logger.warning("b3: data set '%s': %d clusters of %d (%s), %d left over, %.0f%% of the link weight inside "
                       "batches (%.1f s)", st.name, len(c.clusters), recipe.training.batch_size * world,
                       c.partitioner, len(c.leftover), 100 * c.intra_weight, time.perf_counter() - start)
    return built


def check_matryoshka_dims(stages: list[tuple[str, Recipe]], first: Any) -> None:
    """``losses.matryoshka.dims`` above the model's embedding size: one line before any work (every stage trains
    the first stage's model onwards, so its size is every stage's)."""
    wanted = [(r, r.losses.matryoshka.dims) for _, r in stages if r.losses.matryoshka is not None]
    if not wanted:
        return
    from embedkit.losses.matryoshka import check_dims
    from embedkit.models.loading import embedding_dimension

    size = embedding_dimension(first)
    for r, dims in wanted:
        check_dims(dims, size, where=r.where("losses.matryoshka.dims") or f"{r._prefix}losses.matryoshka.dims")


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ------------------------------------------------------------------------------------------------------------------
# the whole recipe


def run_recipe(
    recipe: Recipe,
    output_dir: str | os.PathLike | None = None,
    *,
    resume: bool | str = False,
    overwrite: bool = False,
    callbacks: list[Any] | None = None,
    scorer: Scorer | None = None,
) -> TrainResult:
    """Train a recipe (all its stages); see the module docstring for the output layout.

    Args:
        recipe: a validated :class:`Recipe` (:func:`embedkit.training.config.load_recipe`).
        output_dir: overrides ``output.dir``.
        resume: ``True``: continue from the latest complete checkpoint of ``output_dir`` (finished stages are
            skipped); a path: that checkpoint.
        overwrite: replace an existing output folder (removed only once data and model loaded fine).
        callbacks: extra ``transformers.TrainerCallback`` objects.
        scorer: computes the ``eval.beir`` scores, e.g. :func:`embedkit.evaluation.score_beir`; needed when the
            recipe has an ``eval.beir`` (checked before any work).
    """
    check_scorer(recipe, scorer)
    check_report_to(recipe)
    check_teacher_path(recipe)
    out = resolve_output_dir(recipe, output_dir)
    if _is_main():  # under torchrun only rank 0 judges (and later creates) the output folder
        prepare_output(out, resume=resume, overwrite=overwrite)
    stages = recipe.stage_recipes()
    multi = recipe.stages is not None
    # all data of all stages is read (and checked) before anything is written
    datas = [load_data(r, stage_prefix=f"stages.{i}." if multi else "") for i, (_, r) in enumerate(stages)]
    recipe_text = recipe_to_yaml(recipe)
    from embedkit.models.loading import runs_unadapted_bidirectional

    if recipe.synth is not None:
        check_synth(recipe)
    first = stages[0][1].model
    # load_model's checks: a bad model folder fails here, before the output folder is touched
    unadapted = runs_unadapted_bidirectional(first)
    check_matryoshka_dims(stages, first)
    if _is_main() and not resume and unadapted:
        logger.warning("model %s: a causal decoder trained with bidirectional attention it was never adapted to "
                       "(measured 7 nDCG@10 points below it left causal, BENCHMARKS.md); run 'embedkit mntp --model "
                       "%s --data ...' first and train from its folder, or set model.bidirectional: false",
                       first.name, first.name)
    created = not resume and not out.exists()
    if resume:
        check_resume_recipe((out / "recipe.yaml").read_text(encoding="utf-8"), recipe, str(out / "recipe.yaml"))
    elif _is_main():
        if overwrite and out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        out.mkdir(parents=True, exist_ok=True)
        with atomic_file(out / "recipe.yaml") as tmp:
            Path(tmp).write_text(recipe_text, encoding="utf-8")
    _barrier()
    try:
        if recipe.synth is not None:  # generate (or reuse) the pairs, then read them as one more data set
            recipe = run_synth(recipe, out)
            stages = recipe.stage_recipes()
            datas = [load_data(r) for _, r in stages]
        return _run_stages(out, stages, datas, multi=multi, resume=resume, callbacks=callbacks, scorer=scorer)
    except EmbedkitError:
        # a user error before anything was trained: leave no output folder behind (a fresh run only)
        if created and _is_main() and last_complete_checkpoint(out / "checkpoints") is None and not multi:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run_stages(out: Path, stages: list, datas: list, *, multi: bool, resume: bool | str,
                callbacks: list[Any] | None, scorer: Scorer | None) -> TrainResult:
    from embedkit.training.plots import TRAINING_LOG, TRAINING_PLOT, read_stage_log, write_training_plot

    results: list[StageResult] = []
    logs: list[Any] = []  # the plot's rows: the stages so far
    prev_model: str | None = None
    stage_resume = resume
    for i, ((name, r), data) in enumerate(zip(stages, datas)):
        stage_dir = out / "stages" / f"{i + 1:02d}-{name}" if multi else out
        if multi and resume and is_complete(stage_dir / "final"):
            logger.warning("stage '%s' already finished; skipping it", name)
            results.append(StageResult(name, stage_dir / "final", -1))
            prev_model = str(stage_dir / "final")
            earlier = read_stage_log(stage_dir / TRAINING_LOG)
            if earlier is not None:
                logs.append(earlier)
            continue
        res = run_stage(r, stage_dir, data, model_name=prev_model, resume=stage_resume, stage=name if multi else "",
                        callbacks=callbacks, scorer=scorer, plot=out / TRAINING_PLOT, previous_logs=list(logs))
        if isinstance(stage_resume, str):  # a checkpoint path belongs to the stage it resumed; later stages
            stage_resume = True            # continue from their own checkpoints (none yet: from the start)
        results.append(res)
        if res.log is not None:
            logs.append(res.log)
        prev_model = str(res.final_dir)
    if _is_main() and logs:  # all stages' rows, also when a resume skipped the last ones
        write_training_plot(logs, out / TRAINING_PLOT)
    final = out / "final"
    if multi and _is_main():
        with atomic_dir(final, overwrite=True) as tmp:
            shutil.copytree(results[-1].final_dir, tmp, dirs_exist_ok=True)
    _barrier()
    return TrainResult(out, final, results)
