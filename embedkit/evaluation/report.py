"""Human and machine-readable reports of an evaluation: ``REPORT.md``, ``comparison.png``, ``summary.json``.

The report answers the question a fine-tuning run asks: *did the new checkpoint beat the baseline, where, by how
much?* -- one row per task, one column per checkpoint, deltas against the first checkpoint, and for retrieval
tasks nDCG@10 / Recall@10 / MRR@10 side by side.

Example:
    >>> from embedkit.evaluation.report import write_report
    >>> write_report(results, "eval-out")      # doctest: +SKIP  (results from embedkit.evaluation.evaluate)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedkit.evaluation.results import EvalResults

__all__ = ["render_markdown", "write_chart", "write_report"]

REPORT_NAME = "REPORT.md"
CHART_NAME = "comparison.png"
SUMMARY_NAME = "summary.json"


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _delta(x: float | None, base: float | None) -> str:
    if x is None or base is None:
        return "n/a"
    return f"{x - base:+.4f}"


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
        f"Deltas are against the first checkpoint, `{base}`.",
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
    header += "".join(f" | Δ {_cell(lab)}" for lab in labels[1:]) + " |"
    lines += [header, "|" + "---|" * (3 + len(labels) + len(labels) - 1)]
    for t in results.tasks:
        name = t["name"]
        vals = [results.scores[lab][name].main_score for lab in labels]
        row = f"| {_cell(name)} | {t['type']} | {t['main_score']} | " + " | ".join(_fmt(v) for v in vals)
        row += "".join(f" | {_delta(v, vals[0])}" for v in vals[1:]) + " |"
        lines.append(row)

    retrieval = [t for t in results.tasks if any(results.scores[lab][t["name"]].metrics.get("ndcg@10") is not None
                                                 for lab in labels)]
    if retrieval:
        lines += ["", "## Retrieval (@10)", "",
                  "| task | checkpoint | nDCG@10 | Recall@10 | MRR@10 | Δ nDCG@10 |", "|---|---|---|---|---|---|"]
        for t in retrieval:
            base_ndcg = results.scores[base][t["name"]].metrics.get("ndcg@10")
            for lab in labels:
                m = results.scores[lab][t["name"]].metrics
                lines.append(f"| {_cell(t['name'])} | {_cell(lab)} | {_fmt(m.get('ndcg@10'))} | "
                             f"{_fmt(m.get('recall@10'))} | {_fmt(m.get('mrr@10'))} | "
                             f"{_delta(m.get('ndcg@10'), base_ndcg) if lab != base else '--'} |")
    sts = [t for t in results.tasks if any("cosine_spearman" in results.scores[lab][t["name"]].metrics
                                           for lab in labels)]
    if sts:
        lines += ["", "## STS", "", "| task | checkpoint | Spearman (cosine) | Pearson (cosine) |", "|---|---|---|---|"]
        for t in sts:
            for lab in labels:
                m = results.scores[lab][t["name"]].metrics
                lines.append(f"| {_cell(t['name'])} | {_cell(lab)} | {_fmt(m.get('cosine_spearman'))} | "
                             f"{_fmt(m.get('cosine_pearson'))} |")
    lines += ["", "## Tasks", "", "| task | type | data | revision |", "|---|---|---|---|"]
    for t in results.tasks:
        lines.append(f"| {_cell(t['name'])} | {t['type']} | `{_cell(t['source'])}` | `{t['revision']}` |")
    if chart:
        lines += ["", f"![main scores per task and checkpoint]({chart})"]
    lines += ["", "Raw mteb results: `results/<model name>/<revision>/<task>.json`; "
              "machine-readable summary: `summary.json`.", ""]
    return "\n".join(lines)


def write_chart(results: EvalResults, path: str | os.PathLike) -> None:
    """Grouped bar chart (PNG) of the main score of every checkpoint on every task.

    Uses matplotlib's object API with the Agg canvas, so it never touches a display or the global backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [c.label for c in results.checkpoints]
    tasks = [t["name"] for t in results.tasks]
    n_ck = len(labels)
    width = 0.8 / n_ck
    fig = Figure(figsize=(max(6.5, 1.2 + len(tasks) * (0.5 + 0.45 * n_ck)), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, lab in enumerate(labels):
        xs = [j + (i - (n_ck - 1) / 2) * width for j in range(len(tasks))]
        ys = [results.scores[lab][t].main_score or 0.0 for t in tasks]
        bars = ax.bar(xs, ys, width=width * 0.95, label=lab)
        for bar, t in zip(bars, tasks):
            v = results.scores[lab][t].main_score
            ax.annotate("n/a" if v is None else f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{t}\n({results.scores[labels[0]][t].main_metric})" for t in tasks], fontsize=8)
    lo = min([0.0] + [results.scores[lab][t].main_score or 0.0 for lab in labels for t in tasks])
    ax.set_ylim(lo * 1.1, 1.08)
    ax.set_ylabel("main score")
    ax.set_title("Main score per task and checkpoint")
    ax.axhline(0, color="black", linewidth=0.6)
    # below the axes: long checkpoint labels must not squeeze the plot (bbox_inches="tight" keeps them in the PNG)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1 if n_ck > 3 else n_ck)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(str(path), format="png", bbox_inches="tight")


def write_report(results: EvalResults, folder: str | os.PathLike) -> None:
    """Write ``REPORT.md``, ``comparison.png`` and ``summary.json`` of ``results`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_chart(results, folder / CHART_NAME)
    (folder / REPORT_NAME).write_text(render_markdown(results, CHART_NAME), encoding="utf-8")
    with open(folder / SUMMARY_NAME, "w", encoding="utf-8") as f:
        json.dump(results.to_dict(), f, indent=2, allow_nan=False)
        f.write("\n")
