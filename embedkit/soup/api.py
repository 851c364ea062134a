"""``soup()``: average fine-tuned checkpoints into one model (uniform, weighted or greedy), optionally pulled back
toward the base model.

Why soups: fine-tuning runs that differ in seed, data or recipe land in one low-loss basin when they start from
the same base; averaging their weights (Wortsman et al. 2022, "Model soups") usually beats every single run and
costs nothing at inference. KaLM-Embedding-V2, EmbeddingGemma and BGE's LM-Cocktail ship merged models.

* ``uniform``: every member weighs 1/N;
* ``weighted``: user weights, normalised to sum to 1 (negative or all-zero weights are refused);
* ``greedy``: score every member with ``score_fn`` (a held-out split: :func:`embedkit.evaluation.beir_score_fn`),
  sort by score, start from the best and add each next member only if the uniform soup's held-out score does not
  drop (Wortsman et al.'s recipe); the kept members are recorded in the result and the model card;
* ``base`` / ``base_weight`` b: ``final = (1 - b) * soup + b * base`` (LM-Cocktail style, limits forgetting).

Unlike LM-Cocktail, the output keeps the whole sentence-transformers pipeline (pooling config, latent-attention
pooling weights -- averaged too --, prompts, normalisation; BGE issue #311) and members are streamed tensor by
tensor instead of loaded whole (BGE issue #336). LoRA adapters are merged into their base before averaging.

Soups never import the evaluation package (data flows one way: the two are siblings); held-out scoring comes in as
``score_fn``, which ``embedkit soup --eval`` builds with :func:`embedkit.evaluation.beir_score_fn`.

Example:
    >>> from embedkit.evaluation import beir_score_fn
    >>> from embedkit.soup import soup
    >>> res = soup(["runs/seed1", "runs/seed2", "runs/seed3"], method="greedy",
    ...            score_fn=beir_score_fn("heldout_beir/"), output="soup")        # doctest: +SKIP
    >>> [m.kept for m in res.members], res.score                                    # doctest: +SKIP
    ([True, False, True], 0.731)
    >>> import embedkit; model = embedkit.load_model("soup")                          # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from embedkit.errors import ConfigError, OutputError
from embedkit.soup.checkpoint import Checkpoint, check_compatible, inspect_checkpoint
from embedkit.soup.merge import write_average, write_lora_average
from embedkit.utils.io import atomic_dir, atomic_file, check_writable_parent

__all__ = ["GreedyStep", "ScoreFn", "SoupMember", "SoupResult", "greedy_select", "normalize_weights", "soup"]

Method = Literal["uniform", "weighted", "greedy"]
#: machine-readable record written next to the model card
RECORD_FILE = "embedkit_soup.json"


class SoupMember(BaseModel):
    """One input checkpoint: its weight in the final soup (0 if greedy dropped it) and held-out score."""

    path: str
    kind: Literal["full", "lora"]
    weight: float
    score: float | None = None
    kept: bool = True


class GreedyStep(BaseModel):
    """One greedy decision: the member tried (index into ``members``), the soup's score with it, kept or not."""

    member: int
    soup_score: float
    kept: bool


class SoupResult(BaseModel):
    """What :func:`soup` wrote (also saved as ``embedkit_soup.json`` in the output folder)."""

    output: str
    method: Method
    members: list[SoupMember]
    base: str | None = None
    base_weight: float = 0.0
    metric: str | None = None
    score: float | None = Field(None, description="held-out score of the written model (after base interpolation)")
    greedy_steps: list[GreedyStep] = Field(default_factory=list)
    created: str = ""

    @property
    def kept(self) -> list[str]:
        return [m.path for m in self.members if m.kept]


#: ``score_fn(model_dir) -> float`` (higher is better); an optional ``metric`` attribute names it in the card
ScoreFn = Callable[[Path], float]


def normalize_weights(weights: Sequence[float] | None, n: int, *, where: str = "weights") -> list[float]:
    """``None`` -> uniform; otherwise check (one per member, finite, >= 0, sum > 0) and scale to sum to 1."""
    if weights is None:
        return [1.0 / n] * n
    ws = [float(w) for w in weights]
    if len(ws) != n:
        raise ConfigError(f"got {len(ws)} weights for {n} checkpoints", where=where,
                          hint="give exactly one weight per checkpoint, in the same order")
    for i, w in enumerate(ws):
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"weight {i + 1} is {w}: weights must be finite and >= 0", where=where,
                              hint="use non-negative weights, e.g. 1 1 2")
    total = sum(ws)
    if total <= 0:
        raise ConfigError("weights sum to 0", where=where, hint="give at least one positive weight")
    return [w / total for w in ws]


def greedy_select(
    scores: Sequence[float], soup_score: Callable[[list[int]], float]
) -> tuple[list[int], list[GreedyStep]]:
    """Greedy soup (Wortsman et al. 2022, Recipe 1) over members with individual held-out ``scores``.

    Members are tried best first (ties: input order); the first is kept; each next one is kept iff the uniform
    soup of the kept members plus it scores at least as well as the best soup so far (``soup_score(indices)``).

    Returns:
        The kept member indices (in the order they were added) and one :class:`GreedyStep` per member.
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = [order[0]]
    best = scores[order[0]]
    steps = [GreedyStep(member=order[0], soup_score=best, kept=True)]
    for i in order[1:]:
        s = soup_score(kept + [i])
        ok = s >= best
        if ok:
            kept.append(i)
            best = s
        steps.append(GreedyStep(member=i, soup_score=s, kept=ok))
    return kept, steps


def _materialize(members: list[tuple[Checkpoint, float]], base: tuple[Checkpoint, float] | None, out: Path) -> None:
    """Write ``sum w_i * member_i (+ b * base)`` into the empty folder ``out`` (weights already final)."""
    if members[0][0].kind == "lora":
        write_lora_average(members, out, base)
    else:
        write_average(members + ([base] if base else []), out)


def _checked_score(score_fn: ScoreFn, folder: Path, label: str) -> float:
    s = float(score_fn(folder))
    if not math.isfinite(s):
        raise ConfigError(f"the held-out score of {label} is {s}", where="score_fn",
                          hint="check the evaluation data: every query needs relevant documents")
    return s


def soup(
    checkpoints: Sequence[str | os.PathLike],
    *,
    output: str | os.PathLike,
    method: Method = "uniform",
    weights: Sequence[float] | None = None,
    score_fn: ScoreFn | None = None,
    base: str | os.PathLike | None = None,
    base_weight: float | None = None,
    overwrite: bool = False,
) -> SoupResult:
    """Average ``checkpoints`` into one model folder at ``output``.

    Args:
        checkpoints: sentence-transformers / transformers folders, or LoRA adapter folders (all of one kind).
        output: the new model folder (written atomically: complete or absent).
        method: ``uniform``, ``weighted`` (needs ``weights``) or ``greedy`` (needs ``score_fn``).
        weights: one non-negative weight per checkpoint (``weighted`` only); normalised to sum to 1.
        score_fn: ``score_fn(model_dir) -> float`` (higher is better) on held-out data, e.g.
            :func:`embedkit.evaluation.beir_score_fn` of a BEIR folder: greedy selection, and scores in the
            model card (named by its ``metric`` attribute, else "score").
        base: a model folder (or alias) to interpolate with; ``base_weight`` b gives ``(1-b)*soup + b*base``.
        base_weight: in [0, 1); required with ``base``.
        overwrite: replace an existing ``output`` (only once the new soup is complete).

    Returns:
        A :class:`SoupResult` (also written to ``output/embedkit_soup.json``; ``output/README.md`` is the card).

    Raises:
        ConfigError: bad method / weights / base weight combination.
        InputError, ModelError: missing, pickle-only or mismatched checkpoints (the first difference is named).
        OutputError: ``output`` exists without ``overwrite``, or cannot be written.
    """
    if method not in ("uniform", "weighted", "greedy"):
        raise ConfigError(f"unknown soup method '{method}'", where="method", hint="use uniform, weighted or greedy")
    paths = [Path(p) for p in checkpoints]
    if not paths:
        raise ConfigError("no checkpoints given", where="checkpoints", hint="pass at least one checkpoint folder")
    if method == "weighted" and weights is None:
        raise ConfigError("method 'weighted' needs weights", where="weights", hint="pass one weight per checkpoint")
    if method != "weighted" and weights is not None:
        raise ConfigError(f"weights only apply to method 'weighted' (got method '{method}')", where="weights",
                          hint="drop the weights or use method 'weighted'")
    ws = normalize_weights(weights, len(paths))
    if method == "greedy" and score_fn is None:
        raise ConfigError("greedy soup needs a held-out set", where="score_fn",
                          hint="pass score_fn=embedkit.evaluation.beir_score_fn(BEIR_DIR), a BEIR folder the "
                               "members were not trained on")
    if base is None and base_weight is not None:
        raise ConfigError("base_weight given without a base model", where="base_weight", hint="add --base BASE")
    if base is not None and base_weight is None:
        raise ConfigError("a base model needs base_weight", where="base_weight",
                          hint="add --base-weight, e.g. 0.2 for 80 % soup and 20 % base")
    b = float(base_weight or 0.0)
    if not (0.0 <= b < 1.0) or not math.isfinite(b):
        raise ConfigError(f"base_weight must be in [0, 1) (got {base_weight})", where="base_weight",
                          hint="e.g. 0.2 for 80 % soup and 20 % base")
    out = check_writable_parent(output)
    if out.exists() and not overwrite:
        raise OutputError(f"output folder {out} already exists", hint="pass a new path, or --overwrite to replace it")

    # inspect and compare everything before any work: a mismatch never costs an averaging pass
    members = [inspect_checkpoint(p) for p in paths]
    base_ckpt = inspect_checkpoint(base, allow_lora=False) if base is not None else None
    check_compatible(members, base_ckpt)
    label_metric = (getattr(score_fn, "metric", None) or "score") if score_fn is not None else None

    scores: list[float | None] = [None] * len(members)
    steps: list[GreedyStep] = []
    kept = list(range(len(members)))
    # candidate soups live next to the output (same file system: the winning greedy candidate is moved, not copied)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.work-", dir=out.parent) as work:
        counter = iter(range(1_000_000))
        best: dict[str, object] = {"key": None, "dir": None, "score": -math.inf}

        def score_of(idx: list[int], wts: list[float], *, greedy: bool = False) -> float:
            assert score_fn is not None
            if len(idx) == 1 and members[idx[0]].kind == "full":
                return _checked_score(score_fn, members[idx[0]].root, str(members[idx[0]].path))
            cand = Path(work) / f"candidate-{next(counter)}"
            cand.mkdir()
            keep = False
            try:
                _materialize([(members[i], w) for i, w in zip(idx, wts)], None, cand)
                score = _checked_score(score_fn, cand, "the soup of " + ", ".join(str(paths[i]) for i in idx))
                # mirror greedy_select's rule to keep only the best candidate on disk
                keep = greedy and score >= float(best["score"])  # type: ignore[arg-type]
                if keep:
                    if best["dir"] is not None:
                        shutil.rmtree(best["dir"], ignore_errors=True)  # type: ignore[arg-type]
                    best.update(key=tuple(idx), dir=cand, score=score)
                return score
            finally:
                if not keep:
                    shutil.rmtree(cand, ignore_errors=True)

        if score_fn is not None:
            scores = [score_of([i], [1.0]) for i in range(len(members))]
        if method == "greedy":
            best["score"] = max(s for s in scores if s is not None)
            kept, steps = greedy_select([s for s in scores if s is not None],
                                        lambda idx: score_of(idx, [1.0 / len(idx)] * len(idx), greedy=True))
            ws = [1.0 / len(kept) if i in kept else 0.0 for i in range(len(members))]

        final_members = [(members[i], ws[i] * (1.0 - b)) for i in range(len(members)) if ws[i] > 0]
        base_src = (base_ckpt, b) if (base_ckpt is not None and b > 0) else None
        final_score: float | None = None
        result = SoupResult(
            output=str(out), method=method,
            members=[SoupMember(path=str(paths[i]), kind=members[i].kind, weight=ws[i], score=scores[i],
                                kept=i in kept) for i in range(len(members))],
            base=str(base) if base is not None else None, base_weight=b, metric=label_metric,
            greedy_steps=steps, created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        )
        with atomic_dir(out, overwrite=overwrite) as tmp:
            reuse = method == "greedy" and base_src is None and best["key"] == tuple(kept) and best["dir"] is not None
            if reuse:  # the last kept greedy candidate is exactly this soup: move it instead of averaging again
                for entry in Path(best["dir"]).iterdir():  # type: ignore[arg-type]
                    shutil.move(str(entry), str(tmp / entry.name))
            else:
                _materialize(final_members, base_src, tmp)
            if score_fn is not None:
                if method == "greedy" and base_src is None:
                    final_score = max(s.soup_score for s in steps if s.kept)  # the last kept soup is this model
                else:
                    final_score = _checked_score(score_fn, tmp, "the soup")
            result.score = final_score
            with atomic_file(tmp / RECORD_FILE) as f:
                Path(f).write_text(json.dumps(result.model_dump(), indent=2) + "\n", encoding="utf-8")
            with atomic_file(tmp / "README.md") as f:
                Path(f).write_text(model_card(result), encoding="utf-8")
    return result


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def model_card(result: SoupResult) -> str:
    """The soup's ``README.md``: members, weights, held-out scores, greedy decisions, how to load it."""
    name = Path(result.output).name
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags:",
        "- sentence-transformers",
        "- embedkit",
        "- model-soup",
        "---",
        "",
        f"# {name}: a model soup of {len(result.members)} checkpoints",
        "",
        f"Made with `embedkit soup --method {result.method}` on {result.created}. The weights are the weighted "
        "average of the members' weights; the pipeline (tokenizer, pooling, prompts, normalisation) is the first "
        "member's.",
        "",
    ]
    if result.members[0].kind == "lora":
        lines += ["The members are LoRA adapters: each was merged into its base before averaging.", ""]
    metric = result.metric or "score"
    lines += [f"| # | checkpoint | kind | weight | held-out {metric} | kept |", "|---|---|---|---|---|---|"]
    for i, m in enumerate(result.members, start=1):
        lines.append(f"| {i} | `{m.path}` | {m.kind} | {m.weight:.4f} | {_fmt(m.score)} | {'yes' if m.kept else 'no'} |")
    lines.append("")
    if result.greedy_steps:
        lines += ["Greedy selection (best member first; a member is kept if the soup's held-out score does not drop):",
                  ""]
        for step in result.greedy_steps:
            verdict = "kept" if step.kept else "dropped"
            lines.append(f"- `{result.members[step.member].path}`: soup {metric} {step.soup_score:.4f} -> {verdict}")
        lines.append("")
    if result.base is not None:
        lines += [f"Interpolated with the base model `{result.base}`: final = {1 - result.base_weight:.3f} x soup + "
                  f"{result.base_weight:.3f} x base.", ""]
    if result.score is not None:
        lines += [f"Held-out {metric} of this model: **{result.score:.4f}**.", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "import embedkit",
        "",
        f'model = embedkit.load_model("{name}")',
        'emb = embedkit.encode(model, ["how do I list files?"], role="query")',
        "```",
        "",
    ]
    return "\n".join(lines)
