"""Training recipes: one YAML file, validated by pydantic *before* anything is loaded.

A recipe says which model to build, which data to train on, how to mine negatives, which losses to combine, the
schedule, evaluation and where outputs go. Every section forbids unknown keys, so a typo fails in milliseconds
with a one-line :class:`~embedkit.errors.ConfigError` that names the file line, the key and the closest valid key
-- not an hour later, or never. Contradictory settings (a listwise loss with no teacher scores anywhere, a
GradCache chunk larger than the batch, a dataset with neither in-batch nor hard negatives...) are refused the
same way, naming both keys.

A recipe may hold ``stages``: a list of partial recipes applied in order on top of the base recipe, each stage
starting from the previous stage's final model (NV-Embed's two-stage instruction tuning; see
``recipes/nv-embed-two-stage.yaml``).

Example:
    >>> from embedkit.training.config import parse_recipe
    >>> r = parse_recipe({"data": {"datasets": [{"path": "pairs.jsonl"}]}, "training": {"lr": 3e-5}})
    >>> r.training.lr, r.training.batch_size
    (3e-05, 32)
    >>> parse_recipe({"trainig": {"lr": 1e-5}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embedkit.errors.ConfigError: unknown key 'trainig.lr' (did you mean 'training.lr'?) ...
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from embedkit.data.samples import SAMPLE_PREFIX, resolve_data_path
from embedkit.errors import ConfigError, EmbedkitError
from embedkit.losses.config import LossConfig
from embedkit.mining.config import MiningConfig
from embedkit.models.config import ModelConfig
from embedkit.synth.config import SynthConfig
from embedkit.training.teacher import TeacherConfig
from embedkit.validation import Locator, split_key, validate


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(_Section):
    """One training data set.

    Attributes:
        path: pairs file (``.jsonl``/``.csv``/``.parquet``) or folder the data readers accept. Relative paths are
            relative to the working directory; ``sample:debian-train`` names a sample shipped inside embedkit
            (:func:`embedkit.data.samples.sample_path`).
        name: name used in logs, the model card and task-homogeneous batching (default: the file stem).
        weight: relative sampling weight (``sampling: proportional``): batches are drawn proportionally to
            ``weight x number of pairs``.
        in_batch_negatives: use the other queries' documents in a batch as negatives. Turn off for tasks where
            they are false negatives (classification, clustering, STS blended into stage 2 of NV-Embed).
        max_negatives: hard negatives per query taken from each record (or from the miner).
        instruction: task instruction for the queries of this data set (records may carry their own).
        max_pairs: use only the first ``max_pairs`` valid pairs (quick experiments).
        split: the qrels split read when ``path`` is a BEIR folder (``qrels/<split>.tsv``). There is no fall-back
            to another split: a folder without ``qrels/train.tsv`` is an error unless ``split`` names the split
            to train on, and the split ``eval`` scores is refused (see :func:`check_recipe`).
    """

    path: str
    name: str | None = None
    split: str = Field("train", min_length=1)
    weight: float = Field(1.0, gt=0)
    in_batch_negatives: bool = True
    max_negatives: int = Field(7, ge=0)
    instruction: str | None = None
    max_pairs: int | None = Field(None, ge=1)

    def resolved_path(self) -> Path:
        """The data path on disk (``sample:NAME`` points inside the installed package)."""
        return resolve_data_path(self.path)

    @property
    def display_name(self) -> str:
        stem = Path(self.path.removeprefix(SAMPLE_PREFIX)).name
        for suffix in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet"):
            stem = stem.removesuffix(suffix)
        return self.name or stem


class B3Config(_Section):
    """B3 cluster batches (``data.batching: b3``; :mod:`embedkit.mining.b3`): each batch is a cluster of examples a
    teacher finds moderately similar, so in-batch negatives are hard.

    Attributes:
        model: the teacher bi-encoder that ranks the examples (default: the recipe's model, before training).
        p / m: each example is linked to the examples at ranks ``[p, p + m)`` of its query's search over the other
            examples (the top ``p`` are skipped: likely false negatives). B3's code uses 30 and 100.
        rank_by: ``positive`` (query -> the other examples' positives: what in-batch negatives are) or ``query``.
        partitioner: ``metis`` (``pip install pymetis``), ``greedy`` (embedkit's balanced graph growing), or
            ``auto`` (METIS when installed).
    """

    model: str | None = None
    p: int = Field(30, ge=0)
    m: int = Field(100, ge=1)
    rank_by: Literal["positive", "query"] = "positive"
    partitioner: Literal["auto", "metis", "greedy"] = "auto"


class DataConfig(_Section):
    """Training data: one or several data sets and how batches are drawn from them.

    Every batch holds pairs of **one** data set (task-homogeneous batches, so in-batch negatives are always of the
    same task). ``sampling`` decides the order: ``proportional`` (random order, each data set's share of batches
    proportional to its size x weight) or ``round_robin`` (cycle through the data sets until the smallest runs out).
    ``batching`` decides what a batch holds: ``random`` (a seeded shuffle of the data set) or ``b3`` (clusters of
    one global batch built from a teacher's ranking, :class:`B3Config` in ``b3``).
    """

    datasets: list[DatasetConfig] = Field(default_factory=list)
    sampling: Literal["proportional", "round_robin"] = "proportional"
    batching: Literal["random", "b3"] = "random"
    b3: B3Config | None = None
    skip_invalid: bool = False
    drop_last: bool = True


class MinerConfig(MiningConfig):
    """Mine hard negatives before training (:func:`embedkit.mining.mine_hard_negatives`), cached in the output folder.

    All of ``embedkit mine``'s settings (:class:`~embedkit.mining.config.MiningConfig`: ``num_negatives``,
    ``range_min``/``range_max``, ``max_score_ratio`` (TopK-PercPos, default 0.95)...) plus:

    Attributes:
        model: the model that embeds queries and corpus (default: the recipe's model, before training).
        teacher / teacher_type: a CrossEncoder (``cross``) or bi-encoder (``bi``) folder that scores positives and
            negatives (the teacher scores listwise distillation needs).
        corpus: extra documents to mine from (JSONL with ``text``, or a BEIR folder).
        cache_dir: the embedding cache (default: ``<stage output>/mined/cache``). Point several runs at one folder
            to embed each text once across them (entries are keyed by model, prompt and text, so runs with other
            models or prompts do not collide).
        refresh_every_steps: dynamic hard-negative mining (Conan-embedding): every N optimizer steps re-encode the
            corpus with the weights being trained, re-mine with these same settings and train on the new negatives
            (:mod:`embedkit.training.refresh`; each refresh is kept as ``mined/refresh-STEP/NAME.jsonl``, so a
            resume is exact). ``null``: mine once, before training.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    model: str | None = None
    teacher: str | None = None
    teacher_type: Literal["cross", "bi"] = "cross"
    corpus: str | None = None
    cache_dir: str | None = None
    refresh_every_steps: int | None = Field(None, ge=1)

    #: keys of this section that are not :class:`MiningConfig` settings (the runner passes the rest to the miner)
    RUN_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"model", "teacher", "teacher_type", "corpus", "cache_dir", "refresh_every_steps"})


class RecipeTeacherConfig(TeacherConfig):
    """The ``teacher:`` section: train a cross-encoder teacher before mining, or reuse one (``path``).

    Why: listwise distillation and Margin-MSE need teacher scores, and no cross-encoder ships offline; this section
    turns ``embedkit teacher`` + ``embedkit mine --teacher`` + ``embedkit train`` into one resumable run. All of
    :class:`~embedkit.training.teacher.TeacherConfig`'s keys (``model``, ``loss``, ``steps``, ``batch_size``...)
    plus:

    Attributes:
        path: an existing CrossEncoder folder to score with instead of training one (the other keys are then
            unused). Without it the run trains the teacher into ``<out>/teacher`` on the pairs mined (without
            teacher scores) into ``<out>/mined/teacher-data/``, then mines again with ``miner.teacher`` set to it.

    Example:
        >>> r = parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}, "miner": {},
        ...                   "teacher": {"steps": 300}, "losses": {"listwise": {}}})
        >>> r.teacher.steps, r.teacher.path
        (300, None)
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    path: str | None = Field(None, min_length=1)


class RecipeSynthConfig(SynthConfig):
    """The ``synth:`` section: generate queries for a corpus first, and train on them (corpus-only adaptation).

    Why: many users have documents and no queries. All of :class:`~embedkit.synth.config.SynthConfig`'s keys
    (``method``, ``model``, ``query_types``, ``queries_per_doc``, the filters...) plus:

    Attributes:
        corpus: the documents (JSONL with ``text``, a BEIR folder, or ``sample:NAME``).
        name: the name of the data set the generated pairs become (appended to ``data.datasets``).
        max_negatives: its hard negatives per query (mined when the recipe has a ``miner``).

    The pairs are written to ``<out>/synth/pairs.jsonl`` (resumable: an interrupted run continues its
    ``pairs.jsonl.partial``; a finished file is reused, never regenerated), then mining and training run on them
    as on any data set.

    Example:
        >>> r = parse_recipe({"synth": {"corpus": "docs.jsonl", "method": "crop"}, "miner": {}})
        >>> r.synth.method, r.synth.name, r.data.datasets
        ('crop', 'synth', [])
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    corpus: str = Field(..., min_length=1)
    name: str = Field("synth", min_length=1)
    max_negatives: int = Field(7, ge=0)

    def resolved_corpus(self) -> Path:
        return resolve_data_path(self.corpus)


class TrainingConfig(_Section):
    """Optimisation schedule (mapped onto ``transformers.TrainingArguments``).

    Attributes:
        batch_size: queries per batch **per device** (under DDP the contrastive batch is ``batch_size x world``).
        gradcache_chunk_size: GradCache mini-batch size (``null`` = off): large batches in bounded memory.
        encode_chunk_size: without GradCache, encode each side of a batch in length-sorted sub-batches of this many
            rows, all with a graph (``null`` = the whole batch at once). Same loss and gradient; each sub-batch is
            padded only to its own longest text, and on CPUs smaller forward passes are cheaper per token (the
            activations of 32 x 128 tokens fit the cache, 64 x 128 do not): 1.35x faster steps for MiniLM at
            batch 32 / ``max_seq_length`` 128 with 16 (BENCHMARKS.md). Leave it off on GPUs unless padding is heavy.
        epochs / max_steps: ``max_steps`` (when set) wins over ``epochs``, as in transformers.
        warmup_ratio / warmup_steps: linear warm-up (``warmup_steps`` wins when > 0).
        gradient_accumulation_steps: only without in-batch negatives semantics change; prefer GradCache.
        trainer_args: extra ``TrainingArguments`` passed through verbatim (``deepspeed``, ``fsdp``, ``report_to``,
            ``bf16``, ``ddp_find_unused_parameters``...). Unknown names are refused.
    """

    batch_size: int = Field(32, ge=1)
    gradcache_chunk_size: int | None = Field(None, ge=1)
    encode_chunk_size: int | None = Field(None, ge=1)
    lr: float = Field(2e-5, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = Field(1.0, ge=0)
    gradient_accumulation_steps: int = Field(1, ge=1)
    seed: int = Field(42, ge=0, le=2**32 - 1)  # numpy's seed range (transformers.set_seed seeds numpy)
    logging_steps: int = Field(10, ge=1)
    report_to: list[str] = Field(default_factory=lambda: ["none"])
    bf16: bool = False
    dataloader_num_workers: int = Field(0, ge=0)
    trainer_args: dict[str, Any] = Field(default_factory=dict)


class EvalConfig(_Section):
    """Retrieval evaluation on a local BEIR folder during and after training.

    Attributes:
        beir: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``).
        every_steps: evaluate every n optimizer steps (``null``: only before and after training).
        k: nDCG/recall cut-off (nDCG@k is the reported main score).
        max_queries / max_corpus: subsample for quick evaluation (deterministic).
    """

    beir: str | None = None
    every_steps: int | None = Field(None, ge=1)
    k: int = Field(10, ge=1)
    split: str = "test"
    max_queries: int | None = Field(None, ge=1)
    max_corpus: int | None = Field(None, ge=1)
    before_training: bool = True


class OutputConfig(_Section):
    """Where the run writes.

    ``dir``/``checkpoints/checkpoint-N`` (crash-safe, resumable), ``dir``/``final`` (the trained model, written
    atomically), ``dir``/``recipe.yaml`` (the resolved recipe). LoRA merging is ``model.lora.merge_on_save``.
    """

    dir: str | None = None
    save_steps: int | None = Field(None, ge=1)
    save_total_limit: int | None = Field(2, ge=1)


class StageConfig(_Section):
    """One stage of a multi-stage recipe: any section overrides the base recipe's (deep merge)."""

    name: str
    model: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    miner: dict[str, Any] | None = None
    teacher: dict[str, Any] | None = None
    losses: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None


class Recipe(_Section):
    """A complete training recipe (see ``docs/training.md``)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    miner: MinerConfig | None = None
    teacher: RecipeTeacherConfig | None = None
    synth: RecipeSynthConfig | None = None
    losses: LossConfig = Field(default_factory=LossConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    stages: list[StageConfig] | None = None

    # where the recipe came from (a Locator: file + YAML marks + --set options), for errors found after validation
    _locator: Any = PrivateAttr(default=None)
    # "stages.N." for the full recipe of stage N (:meth:`stage_recipes`)
    _prefix: str = PrivateAttr(default="")

    def where(self, key: str) -> str | None:
        """Where ``key`` (e.g. ``data.datasets.0.path``) was set: ``recipe.yaml:LINE``, ``--set KEY`` or ``None``.

        Errors found after validation (a missing data file, a BEIR folder without the train split) use it, so they
        point at the recipe line to edit, as validation errors do.

        Example:
            >>> r = parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}}, sets=["data.datasets.0.path=x"])
            >>> r.where("data.datasets.0.path")
            '--set data.datasets.0.path'
        """
        if self._locator is None:
            return None
        for k in dict.fromkeys([self._prefix + key, key] if self._prefix else [key]):
            w = self._locator.where(split_key(k), exact=True)
            if w is not None:
                return w
        return self._locator.path

    def stage_recipes(self) -> list[tuple[str, Recipe]]:
        """``[(stage name, full recipe)]``: one unnamed stage for a plain recipe."""
        if not self.stages:
            return [("", self)]
        base = self.model_dump(exclude={"stages"})
        out = []
        for i, stage in enumerate(self.stages):
            merged = copy.deepcopy(base)
            overrides = stage.model_dump(exclude={"name"}, exclude_none=True)
            _deep_merge(merged, overrides)
            recipe = validate(Recipe, merged, prefix=f"stages.{i}.")
            recipe._locator = self._locator
            recipe._prefix = f"stages.{i}."
            out.append((stage.name, recipe))
        return out


# ----------------------------------------------------------------------------------------------------------------
# loading, overrides and error messages


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)


def parse_set_option(item: str) -> tuple[list[str | int], Any]:
    """``"training.lr=1e-5"`` -> ``(["training", "lr"], 1e-05)``; the value is parsed as a YAML scalar."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got '{item}'", where="--set", hint="e.g. --set training.lr=1e-5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set has an empty key in '{item}'", where="--set", hint="e.g. --set training.lr=1e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        value = _maybe_number(value)
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    return parts, value


def _maybe_number(value: str) -> Any:
    """PyYAML (YAML 1.1) reads ``2e-5`` as a string; treat it as the number users mean."""
    try:
        return float(value) if any(c in value.lower() for c in ".e") and value.strip() else value
    except ValueError:
        return value


#: what the items of a recipe list are called in messages (``the recipe has 1 data set``)
_ITEM_WORDS = {"datasets": "data set", "stages": "stage"}


def _list_error(parts: list[str | int], i: int, items: list[Any]) -> ConfigError:
    """``--set`` addressed item ``parts[i]`` of the list at ``parts[:i]``, which does not exist."""
    list_key = ".".join(map(str, parts[:i]))
    shown = ".".join(map(str, parts[: i + 1]))
    word = _ITEM_WORDS.get(str(parts[i - 1]) if i else "", "item")
    n = len(items)
    has = f"the recipe has {n} {word}{'' if n == 1 else 's'}" + (f": indexes 0..{n - 1}" if n else "")
    what = "is out of range" if isinstance(parts[i], int) else "is not an index"
    hint = (f"use an index in 0..{n - 1} (e.g. --set {list_key}.0.KEY=VALUE), or add the {word} to the recipe file" if n
            else f"add the {word} to the recipe file's '{list_key}' list first")
    return ConfigError(f"'{shown}' {what}: {has}", where=f"--set {'.'.join(map(str, parts))}", hint=hint)


def apply_set(data: dict[str, Any], parts: list[str | int], value: Any) -> None:
    """Set ``data[parts...] = value``, creating mappings on the way (list items must exist).

    A list item is addressed by its index (``data.datasets.0.path``); an index past the end names the items
    there are (``the recipe has 1 data set: indexes 0..0``)."""
    cur: Any = data
    where = f"--set {'.'.join(map(str, parts))}"
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            if not isinstance(part, int) or part >= len(cur):
                raise _list_error(parts, i, cur)
            if last:
                cur[part] = value
                return
            cur = cur[part]
            continue
        if not isinstance(cur, dict):
            raise ConfigError(f"'{'.'.join(map(str, parts[:i]))}' is a value, not a section: cannot set "
                              f"'{'.'.join(map(str, parts))}'", where=where,
                              hint=f"set '{'.'.join(map(str, parts[:i]))}' itself")
        if last:
            cur[part] = value
            return
        if cur.get(part) is None:
            cur[part] = [] if isinstance(parts[i + 1], int) else {}
        cur = cur[part]


def _fix_yaml_numbers(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _fix_yaml_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_yaml_numbers(v) for v in obj]
    if isinstance(obj, str) and obj[:1] in "0123456789.-+" and "e" in obj.lower():
        return _maybe_number(obj)
    return obj


def read_recipe_file(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """Read a recipe YAML into a dict (YAML syntax errors -> ``ConfigError`` at ``file:line``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist", hint="pass a recipe YAML, e.g. recipes/minilm-cpu.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("recipe is not valid UTF-8", where=str(path), hint="re-encode it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", where=where, hint="fix the YAML syntax on this line") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a recipe must be a YAML mapping (key: value)", where=f"{path}:1",
                          hint="start with e.g. 'model:' / 'data:' sections")
    return data, text


def parse_recipe(
    data: dict[str, Any],
    *,
    sets: Sequence[str] = (),
    path: str | None = None,
    text: str | None = None,
) -> Recipe:
    """Validate a recipe dict (plus ``--set`` overrides) into a :class:`Recipe`, raising one-line ConfigErrors."""
    data = _fix_yaml_numbers(copy.deepcopy(data))
    had_miner = data.get("miner") is not None
    set_keys: dict[str, str] = {}
    for item in sets:
        parts, value = parse_set_option(item)
        apply_set(data, parts, value)
        set_keys[".".join(map(str, parts))] = item
    if not had_miner and isinstance(data.get("miner"), dict) and set(data["miner"]) == {"refresh_every_steps"}:
        # a refresh re-mines: on a recipe that trains on its data's own negatives it would silently start mining
        raise ConfigError("'miner.refresh_every_steps' refreshes mined negatives, but the recipe has no 'miner' "
                          "section (its negatives come from the data)", where="--set miner.refresh_every_steps",
                          hint="add a miner: section to the recipe (it mines before training, then refreshes)")
    locator = Locator(path, text, set_keys)
    recipe = validate(Recipe, data, locator=locator)
    recipe._locator = locator
    check_recipe(recipe, locator)
    return recipe


def load_recipe(path: str | os.PathLike, sets: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe file. Nothing is loaded or written.

    Example:
        >>> from embedkit.training.config import load_recipe
        >>> recipe = load_recipe("recipes/minilm-cpu.yaml", sets=["training.max_steps=5"])  # doctest: +SKIP
    """
    data, text = read_recipe_file(path)
    return parse_recipe(data, sets=sets, path=str(path), text=text)


def check_recipe(recipe: Recipe, locator: Locator | None = None) -> None:
    """Cross-key checks (contradictory settings), per stage for multi-stage recipes."""
    loc = locator or Locator(None, None)
    if recipe.synth is not None and recipe.stages:
        raise ConfigError("'synth' in a multi-stage recipe (every stage would train on it)",
                          where=loc.where(["synth"]) or loc.where(["stages"]),
                          hint="generate the pairs with embedkit synth, then name the file in a stage's data")
    stages = recipe.stage_recipes()
    for i, (name, r) in enumerate(stages):
        pre = f"stages.{i}." if recipe.stages else ""

        def where(*keys: str, _pre: str = pre) -> str | None:
            for k in keys:
                parts: list[str | int] = []
                for p in (_pre + k).split("."):
                    parts.append(int(p) if p.isdigit() else p)
                w = loc.where(parts)
                if w and (w.startswith("--set") or ":" in w):
                    return w
            return loc.where([keys[0].split(".")[0]])

        _check_one(r, pre, where)
    if recipe.stages:
        names = [s.name for s in recipe.stages]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ConfigError(f"two stages are named '{dup}'", where=loc.where(["stages"]), hint="give every stage a unique name")


def _check_one(r: Recipe, pre: str, where: Any) -> None:
    if r.synth is not None and r.synth.name in [d.display_name for d in r.data.datasets]:
        raise ConfigError(f"'{pre}synth.name' ({r.synth.name}) is also the name of a data set",
                          where=where("synth.name", "synth"), hint="give synth.name another name")
    if r.data.b3 is not None and r.data.batching != "b3":
        raise ConfigError(f"'{pre}data.b3' is set but '{pre}data.batching' is '{r.data.batching}'",
                          where=where("data.b3", "data.batching"), hint="set data.batching: b3, or drop data.b3")
    if not r.data.datasets and r.synth is None:
        raise ConfigError(f"no training data: '{pre}data.datasets' is empty", where=where("data.datasets", "data"),
                          hint="add e.g. data: {datasets: [{path: pairs.jsonl}]}")
    names = [d.display_name for d in r.data.datasets]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"two data sets are named '{dup}'", where=where("data.datasets"),
                          hint="set a unique 'name' for each data set")
    if r.eval.beir is not None:
        for j, d in enumerate(r.data.datasets):
            if d.split == r.eval.split and _same_source(d.path, r.eval.beir):
                raise ConfigError(
                    f"data set '{d.display_name}' is the evaluation data: '{pre}data.datasets.{j}.path' ({d.path}) "
                    f"and '{pre}eval.beir' ({r.eval.beir}) are the same folder, split '{d.split}' -- the run would "
                    "train on its own test set",
                    where=where(f"data.datasets.{j}.path", "eval.beir"),
                    hint="train on other data (or on another qrels split of that folder) and keep eval.beir held out",
                )
    if r.teacher is not None and r.miner is None:
        raise ConfigError(
            f"'{pre}teacher' needs a '{pre}miner' section: the teacher is trained on mined negatives and scores the "
            "mined candidates",
            where=where("teacher", "miner"), hint="add e.g. miner: {num_negatives: 20}")
    if r.teacher is not None and r.miner is not None and r.miner.teacher is not None:
        raise ConfigError(
            f"'{pre}teacher' and '{pre}miner.teacher' both name a teacher",
            where=where("miner.teacher", "teacher"),
            hint=f"keep one: {pre}teacher.path to reuse a folder (or a {pre}teacher section to train one), "
                 f"or {pre}miner.teacher alone")
    needs_teacher = r.losses.teacher_score_keys(prefix="losses.")
    if needs_teacher and r.miner is not None and r.miner.teacher is None and r.teacher is None:
        key = needs_teacher[0]
        raise ConfigError(
            f"'{pre}{key}' needs teacher scores but '{pre}miner.teacher' is not set (mined negatives carry "
            "no scores)",
            where=where(key, "miner"),
            hint=f"add a {pre}teacher section (trains one, or reuses teacher.path), set {pre}miner.teacher to a "
                 f"scoring model, or remove {pre}{key}",
        )
    teacher_only = {"teacher_max_score_ratio": "filters negatives by teacher score",
                    "num_candidates": "stores teacher scores of the top candidates"}
    for name, what in teacher_only.items():
        if r.miner is not None and r.miner.teacher is None and r.teacher is None and getattr(r.miner, name) is not None:
            raise ConfigError(
                f"'{pre}miner.{name}' {what} but '{pre}miner.teacher' is not set",
                where=where(f"miner.{name}", "miner"),
                hint=f"set {pre}miner.teacher to a scoring model (or add a {pre}teacher section), or remove "
                     f"{pre}miner.{name}",
            )
    t = r.training
    if r.miner is not None and r.miner.refresh_every_steps is not None:
        _check_refresh(r, pre, where)
    if t.gradcache_chunk_size is not None and t.gradcache_chunk_size > t.batch_size:
        raise ConfigError(
            f"'{pre}training.gradcache_chunk_size' ({t.gradcache_chunk_size}) is larger than "
            f"'{pre}training.batch_size' ({t.batch_size})",
            where=where("training.gradcache_chunk_size", "training.batch_size"),
            hint="use a chunk size <= batch size (or null to turn GradCache off)",
        )
    if t.encode_chunk_size is not None and t.gradcache_chunk_size is not None:
        raise ConfigError(
            f"'{pre}training.encode_chunk_size' and '{pre}training.gradcache_chunk_size' together: GradCache already "
            "encodes in length-sorted chunks",
            where=where("training.encode_chunk_size", "training.gradcache_chunk_size"),
            hint="keep gradcache_chunk_size (it sets the chunk) and remove encode_chunk_size",
        )
    if t.encode_chunk_size is not None and t.encode_chunk_size >= t.batch_size:
        raise ConfigError(
            f"'{pre}training.encode_chunk_size' ({t.encode_chunk_size}) is not smaller than "
            f"'{pre}training.batch_size' ({t.batch_size}): nothing would be chunked",
            where=where("training.encode_chunk_size", "training.batch_size"),
            hint="use a chunk size below the batch size, e.g. half of it, or null",
        )
    if t.gradcache_chunk_size is not None and t.gradient_accumulation_steps > 1:
        raise ConfigError(
            f"'{pre}training.gradcache_chunk_size' and '{pre}training.gradient_accumulation_steps' > 1 together: "
            "GradCache already gives large batches; accumulation would split the contrastive batch",
            where=where("training.gradient_accumulation_steps", "training.gradcache_chunk_size"),
            hint="keep gradient_accumulation_steps: 1 with GradCache",
        )
    engines = [k for k in ("deepspeed", "fsdp") if t.trainer_args.get(k)]
    if t.gradcache_chunk_size is not None and engines:
        raise ConfigError(
            f"'{pre}training.gradcache_chunk_size' with '{pre}training.trainer_args.{engines[0]}': GradCache runs its "
            "own backward per chunk, outside the sharded engine's loss scaling and gradient-sync boundary, so it is "
            "not proven to give the right gradients there",
            where=where(f"training.trainer_args.{engines[0]}", "training.gradcache_chunk_size"),
            hint="use GradCache with DDP (torchrun), or drop gradcache_chunk_size under DeepSpeed / FSDP",
        )
    for j, d in enumerate(r.data.datasets):
        if not d.in_batch_negatives and d.max_negatives == 0:
            raise ConfigError(
                f"data set '{d.display_name}' has no negatives at all: '{pre}data.datasets.{j}.in_batch_negatives' is "
                f"false and '{pre}data.datasets.{j}.max_negatives' is 0",
                where=where(f"data.datasets.{j}.in_batch_negatives", f"data.datasets.{j}.max_negatives"),
                hint="turn in_batch_negatives on or allow hard negatives (max_negatives >= 1)",
            )
        if d.in_batch_negatives and t.batch_size < 2 and d.max_negatives == 0:
            raise ConfigError(
                f"data set '{d.display_name}' has no negatives: batch_size 1 leaves no in-batch negatives and "
                f"'{pre}data.datasets.{j}.max_negatives' is 0",
                where=where("training.batch_size"), hint="use batch_size >= 2 or hard negatives",
            )
    if r.eval.every_steps is not None and r.eval.beir is None:
        raise ConfigError(f"'{pre}eval.every_steps' is set but '{pre}eval.beir' is not",
                          where=where("eval.every_steps"), hint="set eval.beir to a BEIR folder, or remove every_steps")
    _check_trainer_args(t.trainer_args, pre, where)


def _check_refresh(r: Recipe, pre: str, where: Any) -> None:
    """``miner.refresh_every_steps`` re-mines with the live weights, in place of each data set's records."""
    assert r.miner is not None
    key = f"{pre}miner.refresh_every_steps"
    if r.miner.model is not None:
        raise ConfigError(
            f"'{key}' re-mines with the weights being trained, but '{pre}miner.model' fixes another mining model",
            where=where("miner.refresh_every_steps", "miner.model"),
            hint=f"remove {pre}miner.model (mine with the recipe's model), or remove {key}")
    if r.miner.drop_incomplete:
        raise ConfigError(
            f"'{key}' with '{pre}miner.drop_incomplete': a refresh must keep every record (the batches are laid out "
            "by record), and dropping short ones would change them",
            where=where("miner.refresh_every_steps", "miner.drop_incomplete"),
            hint=f"keep {pre}miner.drop_incomplete false with refreshes")
    t = r.training
    if t.dataloader_num_workers > 0:
        raise ConfigError(
            f"'{key}' with '{pre}training.dataloader_num_workers' > 0: worker processes keep their own copy of the "
            "data and would not see the refreshed negatives",
            where=where("miner.refresh_every_steps", "training.dataloader_num_workers"),
            hint=f"set {pre}training.dataloader_num_workers: 0 with refreshes")
    engines = [k for k in ("deepspeed", "fsdp") if t.trainer_args.get(k)]
    if engines:
        raise ConfigError(
            f"'{key}' with '{pre}training.trainer_args.{engines[0]}': a refresh encodes with the live model, which a "
            "sharded engine splits over ranks",
            where=where("miner.refresh_every_steps", f"training.trainer_args.{engines[0]}"),
            hint="refresh under DDP (torchrun), or mine once before training")


def _same_source(a: str, b: str) -> bool:
    """Whether two recipe data paths name the same file or folder (``sample:`` names resolved, links followed)."""
    try:
        return os.path.realpath(resolve_data_path(a)) == os.path.realpath(resolve_data_path(b))
    except (EmbedkitError, OSError):  # an unknown sample name: reported when the data is read
        return a == b


#: TrainingArguments that the recipe sets itself (a pass-through of these would be silently overridden)
_OWNED_TRAINER_ARGS = {
    "output_dir", "per_device_train_batch_size", "learning_rate", "num_train_epochs", "max_steps", "warmup_ratio",
    "warmup_steps", "weight_decay", "lr_scheduler_type", "max_grad_norm", "gradient_accumulation_steps", "seed",
    "data_seed", "logging_steps", "report_to", "bf16", "save_steps", "save_strategy", "save_total_limit",
    "dataloader_num_workers", "remove_unused_columns", "eval_strategy",
}


def _check_trainer_args(extra: dict[str, Any], pre: str, where: Any) -> None:
    if not extra:
        return
    import dataclasses

    from transformers import TrainingArguments

    valid = {f.name for f in dataclasses.fields(TrainingArguments)}
    for name in extra:
        if name in _OWNED_TRAINER_ARGS:
            raise ConfigError(
                f"'{pre}training.trainer_args.{name}' is set by the recipe itself",
                where=where(f"training.trainer_args.{name}", "training.trainer_args"),
                hint="use the recipe key instead (see docs/training.md)",
            )
        if name not in valid:
            close = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
            did = f" (did you mean '{pre}training.trainer_args.{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown key '{pre}training.trainer_args.{name}'{did}: not a transformers TrainingArguments field",
                where=where(f"training.trainer_args.{name}", "training.trainer_args"),
                hint="see transformers.TrainingArguments for valid names",
            )


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML (written to the output folder and the model card)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
