"""The model card (``README.md``) written into every checkpoint and the final model folder.

A trained folder should say how it was made without the run's logs: the resolved recipe, the data (sizes, skipped
records, negatives per query, teacher scores), the losses, the metrics before/after training, the training step,
and whether loading it needs ``trust_remote_code`` (never for embedkit's own modules). Checkpoints also get it, so
``embedkit soup`` inputs stay self-describing.

A model trained with ``losses.matryoshka`` records its dims twice: a "Matryoshka dimensions" section in the card
(with the ``truncate_dim=`` usage) and ``matryoshka_dims`` in ``embedkit_training.json`` (read it back with
:func:`matryoshka_dims`). Both are read from the resolved recipe, so no caller has to pass them; the folder still
loads with plain ``SentenceTransformer(path)`` (full dimension) or ``SentenceTransformer(path, truncate_dim=128)``.

Example:
    >>> from embedkit.training.model_card import render_card
    >>> text = render_card(recipe_yaml="training:\\n  lr: 2.0e-05\\n", data_stats=[], metrics={}, step=10)
    >>> text.startswith("---")
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedkit.utils.io import atomic_file

#: the machine-readable record written beside the card
TRAINING_INFO = "embedkit_training.json"


@dataclass
class DataStats:
    """What one training data set contributed (shown in the card and logged at start)."""

    name: str
    source: str
    pairs: int
    skipped: int = 0
    skip_summary: str = ""
    with_negatives: int = 0
    mean_negatives: float = 0.0
    with_teacher_scores: int = 0
    in_batch_negatives: bool = True
    weight: float = 1.0
    mined: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def render_card(
    *,
    recipe_yaml: str,
    data_stats: Sequence[DataStats],
    metrics: dict[str, Any],
    step: int,
    base_model: str = "",
    losses: str = "",
    trust_remote_code: bool = False,
    stage: str = "",
    final: bool = False,
    matryoshka: Sequence[int] | None = None,
) -> str:
    """Markdown text of the card (YAML front matter + sections); ``matryoshka``: the dims trained with
    ``losses.matryoshka`` (default: read from ``recipe_yaml``)."""
    dims = list(matryoshka) if matryoshka is not None else recipe_matryoshka_dims(recipe_yaml)
    tags = ["sentence-transformers", "embedkit", "feature-extraction", "sentence-similarity"]
    front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity", "tags:"]
    front += [f"- {t}" for t in tags]
    if base_model:
        front.append(f"base_model: {json.dumps(base_model)}")
    front.append("---")
    title = "Trained embedding model" if final else f"Checkpoint at step {step}"
    lines = [*front, "", f"# {title}", ""]
    lines.append(f"Fine-tuned with embedkit (`embedkit train`)"
                 f"{f' (stage `{stage}`)' if stage else ''}, {step} optimizer steps.")
    lines += ["", "## Usage", "", "```python", "import embedkit", "",
              'model = embedkit.load_model("PATH/TO/THIS/FOLDER")',
              'q = embedkit.encode(model, ["how do I list files"], role="query")',
              'd = embedkit.encode(model, ["ls - list directory contents"], role="document")',
              "```", ""]
    lines.append(f"`trust_remote_code` needed to load: **{'yes' if trust_remote_code else 'no'}**"
                 + ("" if trust_remote_code else " (embedkit's own modules load without it)."))
    if dims:
        lines += ["", "## Matryoshka dimensions", "",
                  f"Trained with `losses.matryoshka` at dims {', '.join(map(str, dims))}: the first d dimensions, "
                  "re-normalised, are an embedding on their own. Truncate with "
                  f"`SentenceTransformer(path, truncate_dim={min(dims)})` and compare with cosine similarity; "
                  f"`embedkit eval PATH --dims {','.join(map(str, sorted(dims, reverse=True)))} ...` scores every dim."]
    lines += ["", "## Training data", ""]
    if data_stats:
        lines.append("| data set | source | pairs | skipped | with negatives | mean negatives | teacher scores | "
                     "in-batch negatives | weight |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for s in data_stats:
            lines.append(
                f"| {s.name} | `{s.source}`{' (mined)' if s.mined else ''} | {s.pairs} | {s.skipped} | "
                f"{s.with_negatives} | {s.mean_negatives:.2f} | {s.with_teacher_scores} | "
                f"{'yes' if s.in_batch_negatives else 'no'} | {s.weight:g} |"
            )
        skips = [f"- {s.name}: {s.skip_summary}" for s in data_stats if s.skipped]
        if skips:
            lines += ["", "Skipped records:", *skips]
    else:
        lines.append("(not recorded)")
    lines += ["", "## Losses", "", losses or "(see recipe)", "", "## Metrics", ""]
    if metrics:
        lines.append("| metric | value |")
        lines.append("|---|---|")
        for k, v in metrics.items():
            lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    else:
        lines.append("(no evaluation configured)")
    lines += ["", "## Recipe", "", "```yaml", recipe_yaml.rstrip(), "```", ""]
    return "\n".join(lines)


def write_card(folder: str | Path, **kwargs: Any) -> Path:
    """Render and write ``folder/README.md`` atomically; also ``folder/embedkit_training.json`` (machine-readable)."""
    folder = Path(folder)
    path = folder / "README.md"
    with atomic_file(path) as tmp:
        Path(tmp).write_text(render_card(**kwargs), encoding="utf-8")
    info = {k: v for k, v in kwargs.items() if k != "data_stats"}
    info["data"] = [asdict(s) for s in kwargs.get("data_stats", [])]
    dims = kwargs.get("matryoshka")
    info["matryoshka_dims"] = list(dims) if dims is not None else recipe_matryoshka_dims(kwargs.get("recipe_yaml", ""))
    with atomic_file(folder / TRAINING_INFO) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    return path


def recipe_matryoshka_dims(recipe_yaml: str) -> list[int] | None:
    """The ``losses.matryoshka.dims`` of a resolved recipe's YAML (``None`` when it trains no Matryoshka dims).

    Example:
        >>> recipe_matryoshka_dims("losses:\\n  matryoshka: {dims: [384, 128]}\\n")
        [384, 128]
        >>> recipe_matryoshka_dims("losses: {infonce: {}}\\n") is None
        True
    """
    import yaml

    try:
        data = yaml.safe_load(recipe_yaml) if recipe_yaml else None
    except yaml.YAMLError:
        return None
    losses = data.get("losses") if isinstance(data, dict) else None
    mrl = losses.get("matryoshka") if isinstance(losses, dict) else None
    dims = mrl.get("dims") if isinstance(mrl, dict) else None
    if isinstance(dims, list) and dims and all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        return [int(d) for d in dims]
    return None


def matryoshka_dims(folder: str | Path) -> list[int] | None:
    """The Matryoshka dims a trained folder records (``embedkit_training.json``), or ``None``.

    Example:
        >>> matryoshka_dims("runs/mrl/final")  # doctest: +SKIP
        [384, 256, 128, 64]
    """
    path = Path(folder) / TRAINING_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dims = info.get("matryoshka_dims") if isinstance(info, dict) else None
    if isinstance(dims, list) and dims and all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        return dims
    return None
