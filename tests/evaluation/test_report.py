"""REPORT.md and comparison.png make differences visible: Δ in points, a y-axis fitted to the data, Δ labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedkit.evaluation.report import build_chart, delta_points, fitted_limits, render_markdown, write_report
from embedkit.evaluation.results import CheckpointInfo, EvalResults, TaskScore


def _results(scores: dict[str, dict[str, float | None]]) -> EvalResults:
    labels = list(scores)
    tasks = list(next(iter(scores.values())))
    ckpts = [CheckpointInfo(lab, f"/runs/{lab}", f"embedkit/{lab}", f"r{i}") for i, lab in enumerate(labels)]
    infos = [{"name": t, "type": "Retrieval", "main_score": "ndcg_at_10", "source": "-", "revision": "-"}
             for t in tasks]
    per = {lab: {t: TaskScore(t, "Retrieval", "ndcg_at_10", v, {"ndcg@10": v}) for t, v in ts.items()}
           for lab, ts in scores.items()}
    return EvalResults(ckpts, infos, per, created="2026-01-01T00:00:00+00:00")


README_LIKE = {"base": {"manpages": 0.852, "debian": 0.61}, "st": {"manpages": 0.874, "debian": 0.6},
               "embedkit": {"manpages": 0.888, "debian": 0.6349}}


def test_delta_is_in_points() -> None:
    assert delta_points(0.874, 0.852) == "+2.20"
    assert delta_points(0.851, 0.852) == "-0.10"
    assert delta_points(0.5, None) == "n/a"


def test_axis_limits_fit_the_data_not_zero() -> None:
    lo, hi = fitted_limits([0.852, 0.874, 0.888])
    assert 0.80 < lo < 0.852 and 0.888 < hi < 0.95
    # the smallest difference fills a visible share of the axis (bars from 0 made it 2 % of the height)
    assert (0.874 - 0.852) / (hi - lo) > 0.2
    assert fitted_limits([0.5, 0.5]) == pytest.approx((0.49, 0.514))
    assert fitted_limits([None, float("nan")]) == (0.0, 1.0)


def test_chart_has_one_fitted_panel_per_task_with_delta_labels() -> None:
    res = _results(README_LIKE)
    fig = build_chart(res)
    assert [ax.get_title() for ax in fig.axes] == ["manpages (ndcg_at_10)", "debian (ndcg_at_10)"]
    mp, deb = fig.axes
    assert mp.get_ylim() == pytest.approx(fitted_limits([0.852, 0.874, 0.888]))
    assert deb.get_ylim() == pytest.approx(fitted_limits([0.61, 0.6, 0.6349]))
    assert mp.get_ylim()[0] > 0.5  # not from 0
    texts = [t.get_text() for t in mp.texts]
    assert texts == ["0.852", "0.874\n+2.20", "0.888\n+3.60"]
    assert [t.get_text() for t in deb.texts][1:] == ["0.600\n-1.00", "0.635\n+2.49"]
    # each bar reaches its score from the axis floor
    assert [round(b.get_y() + b.get_height(), 6) for b in mp.patches] == [0.852, 0.874, 0.888]


def test_report_md_deltas_are_points_and_files_are_written(tmp_path: Path) -> None:
    res = _results(README_LIKE)
    md = render_markdown(res)
    header = next(line for line in md.splitlines() if line.startswith("| task | type | metric |"))
    assert header.endswith("| Δ st (pts) | Δ embedkit (pts) |")
    row = next(line for line in md.splitlines() if line.startswith("| manpages | Retrieval |"))
    assert row.endswith("| 0.8520 | 0.8740 | 0.8880 | +2.20 | +3.60 |")
    retrieval = [line for line in md.splitlines() if line.startswith("| manpages | st |")]
    assert retrieval and retrieval[0].endswith("| +2.20 |")
    assert not re.search(r"[+-]0\.0\d{3}\b", md)  # no score-unit deltas left
    write_report(res, tmp_path)
    png = tmp_path / "comparison.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "REPORT.md").read_text(encoding="utf-8") == render_markdown(res)
