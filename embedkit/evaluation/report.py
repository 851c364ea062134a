"""Human and machine-readable reports of an evaluation: ``REPORT.md``, ``comparison.png``, ``summary.json``.

The report answers the question a fine-tuning run asks: *did the new checkpoint beat the baseline, where, by how
much?* -- one row per task, one column per checkpoint, deltas against the first checkpoint, and for retrieval
tasks nDCG@10 / Recall@10 / MRR@10 side by side.

Example:
    >>> from embedkit.evaluation.report import write_report
    >>> import embedkit
    >>> results = embedkit.evaluate(["minilm", "runs/mine/final"], beir=["sample:manpages"])  # doctest: +SKIP
    >>> write_report(results, "eval-out")                                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedkit.evaluation.results import EvalResults

__all__ = ["build_chart", "build_dims_chart", "delta_points", "fitted_limits", "render_markdown", "write_chart",
           "write_report"]

REPORT_NAME = "REPORT.md"
CHART_NAME = "comparison.png"
DIMS_CHART_NAME = "dims.png"
SUMMARY_NAME = "summary.json"


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: EvalResults, chart: str | None = CHART_NAME) -> str:
    """The Markdown report of ``results`` (tables of main scores with deltas, retrieval metrics, STS metrics)."""
    labels = [c.label for c in results.checkpoints]
    base = labels[0]
    lines = [
        "# Evaluation report",
        "",
        f"Created {results.created} by embedkit; scores computed by {results.scorer} (split `{results.split}`). "
        f"Δ columns are differences against the first checkpoint, `{base}`, in points (hundredths of the score: "
        "+2.20 means 0.0220 higher).",
        "",
        "## Checkpoints",
        "",
        "| # | label | source | mteb model name | revision |",
        "|---|---|---|---|---|",
    ]
    for i, c in enumerate(results.checkpoints, 1):
        lines.append(f"| {i} | {_cell(c.label)} | `{_cell(c.source)}` | `{c.model_name}` | `{c.revision}` |")
    lines += ["", "## Main scores", ""]
    header = "| task | type | metric | " + " | ".join(_cell(lab) for lab in labels)
    header += "".join(f" | Δ {_cell(lab)} (pts)" for lab in labels[1:]) + " |"
    lines += [header, "|" + "---|" * (3 + len(labels) + len(labels) - 1)]
    for t in results.tasks:
        name = t["name"]
        vals = [results.scores[lab][name].main_score for lab in labels]
        row = f"| {_cell(name)} | {t['type']} | {t['main_score']} | " + " | ".join(_fmt(v) for v in vals)
        row += "".join(f" | {delta_points(v, vals[0])}" for v in vals[1:]) + " |"
        lines.append(row)

    retrieval = [t for t in results.tasks if any(results.scores[lab][t["name"]].metrics.get("ndcg@10") is not None
                                                 for lab in labels)]
    if retrieval:
        lines += ["", "## Retrieval (@10)", "",
                  "| task | checkpoint | nDCG@10 | Recall@10 | MRR@10 | Δ nDCG@10 (pts) |", "|---|---|---|---|---|---|"]
        for t in retrieval:
            base_ndcg = results.scores[base][t["name"]].metrics.get("ndcg@10")
            for lab in labels:
                m = results.scores[lab][t["name"]].metrics
                lines.append(f"| {_cell(t['name'])} | {_cell(lab)} | {_fmt(m.get('ndcg@10'))} | "
                             f"{_fmt(m.get('recall@10'))} | {_fmt(m.get('mrr@10'))} | "
                             f"{delta_points(m.get('ndcg@10'), base_ndcg) if lab != base else '--'} |")
    sts = [t for t in results.tasks if any("cosine_spearman" in results.scores[lab][t["name"]].metrics
                                           for lab in labels)]
    if sts:
        lines += ["", "## STS", "", "| task | checkpoint | Spearman (cosine) | Pearson (cosine) |", "|---|---|---|---|"]
        for t in sts:
            for lab in labels:
                m = results.scores[lab][t["name"]].metrics
                lines.append(f"| {_cell(t['name'])} | {_cell(lab)} | {_fmt(m.get('cosine_spearman'))} | "
                             f"{_fmt(m.get('cosine_pearson'))} |")
    if results.dims:
        lines += _dims_section(results, chart is not None)
    lines += ["", "## Tasks", "", "| task | type | data | revision |", "|---|---|---|---|"]
    for t in results.tasks:
        lines.append(f"| {_cell(t['name'])} | {t['type']} | `{_cell(t['source'])}` | `{t['revision']}` |")
    if chart:
        lines += ["", f"![main scores per task and checkpoint]({chart})"]
    lines += ["", "Raw mteb results: `results/<model name>/<revision>/<task>.json`; "
              "machine-readable summary: `summary.json`.", ""]
    return "\n".join(lines)


def _checkpoint_names(results: EvalResults) -> list[str]:
    names: list[str] = []
    for c in results.checkpoints:
        if c.checkpoint is not None and c.checkpoint not in names:
            names.append(c.checkpoint)
    return names


def _dims_section(results: EvalResults, with_chart: bool) -> list[str]:
    """Main score at every dim, and its share of the checkpoint's largest-dim score."""
    assert results.dims
    top = results.dims[0]
    lines = ["", "## Quality vs embedding dimension", "",
             f"Each checkpoint scored at dims {', '.join(map(str, results.dims))}: embeddings truncated to their first "
             f"d dimensions and re-normalised (cosine). \"% of {top}\" is the score's share of the same checkpoint's "
             f"score at {top}.", "",
             "| task | checkpoint | " + " | ".join(f"d={d}" for d in results.dims) + " | "
             + " | ".join(f"% of {top} at {d}" for d in results.dims[1:]) + " |",
             "|" + "---|" * (2 + 2 * len(results.dims) - 1)]
    for t in results.tasks:
        for name in _checkpoint_names(results):
            curve = dict(results.dim_curve(name, t["name"]))
            full = curve.get(top)
            share = [("n/a" if v is None or not full else f"{100 * v / full:.1f}")
                     for v in (curve.get(d) for d in results.dims[1:])]
            lines.append(f"| {_cell(t['name'])} | {_cell(name)} | "
                         + " | ".join(_fmt(curve.get(d)) for d in results.dims) + " | " + " | ".join(share) + " |")
    if with_chart:
        lines += ["", f"![main score vs embedding dimension]({DIMS_CHART_NAME})"]
    return lines


def delta_points(x: float | None, base: float | None) -> str:
    """The difference ``x - base`` in points (hundredths of the score, as the README's tables): ``+2.20``.

    Example:
        >>> delta_points(0.874, 0.852), delta_points(0.85, 0.852), delta_points(None, 0.852)
        ('+2.20', '-0.20', 'n/a')
    """
    if x is None or base is None:
        return "n/a"
    return f"{(x - base) * 100:+.2f}"


def fitted_limits(values: Sequence[float | None]) -> tuple[float, float]:
    """y-axis limits around ``values`` (not from 0): scores of 0.852 / 0.874 / 0.888 must not look equal.

    The data spans the middle of the axis, with room above for the value labels. A single value (or equal ones)
    gets a window of +-1 point.

    Example:
        >>> lo, hi = fitted_limits([0.852, 0.874, 0.888])
        >>> 0.80 < lo < 0.852 and 0.888 < hi < 0.95
        True
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    pad = max((hi - lo) * 0.35, 0.01)
    return lo - pad, hi + pad * 1.4


def build_chart(results: EvalResults) -> Any:
    """The ``matplotlib.figure.Figure`` of ``comparison.png``: one panel per task, one bar per checkpoint, each
    panel's y-axis fitted to its scores, bars labelled with the score and the Δ against the first checkpoint in
    points. Built with matplotlib's object API and the Agg canvas (no display, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [c.label for c in results.checkpoints]
    tasks = [t["name"] for t in results.tasks]
    n_ck = len(labels)
    fig = Figure(figsize=(max(4.0, 0.9 + 0.75 * n_ck) * len(tasks), 4.0), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    colors = [f"C{i % 10}" for i in range(n_ck)]
    for ax, task in zip(axes, tasks):
        vals = [results.scores[lab][task].main_score for lab in labels]
        lo, hi = fitted_limits(vals)
        xs = list(range(n_ck))
        # bars start at the axis floor: a bar's visible height is its score's distance from the floor
        bars = ax.bar(xs, [(v if v is not None else lo) - lo for v in vals], bottom=lo, width=0.7, color=colors)
        for i, (bar, v) in enumerate(zip(bars, vals)):
            text = "n/a" if v is None else f"{v:.3f}"
            if i > 0 and v is not None:
                text += f"\n{delta_points(v, vals[0])}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, v if v is not None else lo), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_ylim(lo, hi)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(i + 1) for i in xs], fontsize=8)
        ax.set_title(f"{task} ({results.scores[labels[0]][task].main_metric})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("main score (axis fitted, not from 0)")
    handles = [axes[0].patches[i] for i in range(n_ck)] if axes[0].patches else []
    fig.legend(handles, [f"{i + 1}: {lab}" + (" (base)" if i == 0 else "") for i, lab in enumerate(labels)],
               fontsize=8, loc="lower center", ncol=min(n_ck, 3), bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Main score per task; Δ in points vs {labels[0]}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((n_ck - 1) // 3), 1, 1))
    return fig


def build_dims_chart(results: EvalResults) -> Any:
    """The ``Figure`` of ``dims.png``: one panel per task, main score against embedding dimension (log-2 x axis),
    one line per checkpoint. Needs a run with ``dims``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results.dims:
        raise ValueError("the results hold no dims (evaluate(..., dims=[...]))")
    tasks = [t["name"] for t in results.tasks]
    fig = Figure(figsize=(4.2 * len(tasks), 3.8), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        values: list[float | None] = []
        for i, name in enumerate(_checkpoint_names(results)):
            curve = [(d, v) for d, v in results.dim_curve(name, task) if v is not None]
            values += [v for _, v in curve]
            if curve:
                xs, ys = zip(*sorted(curve))
                ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(results.dims)
        ax.set_xticklabels([str(d) for d in results.dims], fontsize=8)
        ax.set_ylim(*fitted_limits(values))
        ax.set_xlabel("embedding dimension (truncated, re-normalised)", fontsize=8)
        first = results.checkpoints[0].label
        ax.set_title(f"{task} ({results.scores[first][task].main_metric})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("main score (axis fitted, not from 0)")
    fig.suptitle("Quality vs embedding dimension", fontsize=10)
    fig.tight_layout()
    return fig


def write_chart(results: EvalResults, path: str | os.PathLike) -> None:
    """Write :func:`build_chart` as a PNG."""
    build_chart(results).savefig(str(path), format="png", bbox_inches="tight")


def write_report(results: EvalResults, folder: str | os.PathLike) -> None:
    """Write ``REPORT.md``, ``comparison.png`` (and ``dims.png`` for a run with dims) and ``summary.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_chart(results, folder / CHART_NAME)
    if results.dims:
        build_dims_chart(results).savefig(str(folder / DIMS_CHART_NAME), format="png", bbox_inches="tight")
    (folder / REPORT_NAME).write_text(render_markdown(results, CHART_NAME), encoding="utf-8")
    with open(folder / SUMMARY_NAME, "w", encoding="utf-8") as f:
        json.dump(results.to_dict(), f, indent=2, allow_nan=False)
        f.write("\n")
