"""evaluate(): two checkpoints x (local BEIR + local STS) through mteb, result files, REPORT.md, PNG, summary."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from embedkit.errors import ConfigError, OutputError


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert, tiny_bert_b, small_beir, sts_file):
    from embedkit.evaluation import evaluate

    out = tmp_path_factory.mktemp("eval") / "out"
    res = evaluate([tiny_bert, tiny_bert_b], beir=[small_beir], sts=[sts_file], output_dir=out,
                   show_progress_bar=False)
    return res, out


def _main_scores_table(report: str) -> dict[str, list[str]]:
    section = report.split("## Main scores", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| task")]
    return {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in rows}


def test_two_checkpoints_get_separate_result_files(run):
    res, out = run
    labels = [c.label for c in res.checkpoints]
    assert len(set(labels)) == 2
    assert len({(c.model_name, c.revision) for c in res.checkpoints}) == 2
    files = {lab: out / res.scores[lab]["mp_small"].result_file for lab in labels}
    assert len(set(files.values())) == 2 and all(f.is_file() for f in files.values())
    ndcg = {}
    for lab, f in files.items():
        data = json.loads(f.read_text())  # mteb's own format
        assert data["task_name"] == "mp_small"
        ndcg[lab] = data["scores"]["test"][0]["ndcg_at_10"]
        assert res.scores[lab]["mp_small"].main_score == pytest.approx(ndcg[lab])
        assert res.scores[lab]["mp_small"].metrics["ndcg@10"] == pytest.approx(ndcg[lab])
    assert ndcg[labels[0]] != ndcg[labels[1]]  # different models, different results: nothing overwritten


def test_mteb_retrieval_agrees_with_fast_scorer(run, tiny_bert, small_beir):
    from embedkit import load_model
    from embedkit.evaluation import score_beir

    res, _ = run
    ours = score_beir(load_model(tiny_bert), small_beir, k_values=(10,))
    lab = res.checkpoints[0].label
    for key in ("ndcg@10", "recall@10", "mrr@10"):
        assert res.scores[lab]["mp_small"].metrics[key] == pytest.approx(ours[key], abs=1e-4), key


def test_mteb_sts_agrees_with_independent_spearman(run, tiny_bert, sts_file):
    from scipy.stats import spearmanr

    from embedkit import load_model

    rows = [json.loads(line) for line in sts_file.read_text().splitlines()]
    STS_ROWS = [(r["sentence1"], r["sentence2"], r["score"]) for r in rows]
    model = load_model(tiny_bert)
    a = model.encode([r[0] for r in STS_ROWS])
    b = model.encode([r[1] for r in STS_ROWS])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    want = spearmanr([r[2] for r in STS_ROWS], cos)[0]
    res, _ = run
    assert res.scores[res.checkpoints[0].label]["pairs"].main_score == pytest.approx(want, abs=1e-6)


def test_report_summary_and_chart(run):
    res, out = run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "embedkit-eval/1"
    assert [c["label"] for c in summary["checkpoints"]] == [c.label for c in res.checkpoints]
    assert {t["name"] for t in summary["tasks"]} == {"mp_small", "pairs"}
    report = (out / "REPORT.md").read_text()
    table = _main_scores_table(report)
    assert set(table) == {"mp_small", "pairs"}
    first, second = (c.label for c in res.checkpoints)
    for task, cells in table.items():
        # | task | type | metric | first | second | delta (points) |
        s1 = summary["scores"][first][task]["main_score"]
        s2 = summary["scores"][second][task]["main_score"]
        assert float(cells[3]) == pytest.approx(s1, abs=5e-5)
        assert float(cells[4]) == pytest.approx(s2, abs=5e-5)
        assert re.fullmatch(r"[+-]\d+\.\d{2}", cells[5]) and float(cells[5]) == pytest.approx((s2 - s1) * 100, abs=1e-2)
    retrieval = report.split("## Retrieval (@10)", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in retrieval.splitlines() if r.startswith("| mp_small")]
    assert len(rows) == 2
    m = summary["scores"][first]["mp_small"]["metrics"]
    assert re.search(rf"\| {m['ndcg@10']:.4f} \| {m['recall@10']:.4f} \| {m['mrr@10']:.4f} \|", rows[0])
    import matplotlib.image as mpimg

    img = mpimg.imread(out / "comparison.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].var()) > 0  # not blank
    assert "(comparison.png)" in report
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # temp folder renamed away


def test_existing_output_with_other_run_is_refused(run, tiny_bert, small_beir):
    from embedkit.evaluation import evaluate

    _, out = run
    before = (out / "summary.json").read_bytes()
    with pytest.raises(OutputError, match="different run"):
        evaluate([tiny_bert], beir=[small_beir], output_dir=out, show_progress_bar=False)
    assert (out / "summary.json").read_bytes() == before


def test_same_run_check_accepts_rerun(run, tmp_path):
    from embedkit.evaluation.runner import _check_output

    res, out = run
    _check_output(out, res.run_key, overwrite=False)  # same run: may be replaced
    with pytest.raises(OutputError):
        _check_output(out, "another-run", overwrite=False)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        _check_output(tmp_path / "x", res.run_key, overwrite=False)
    _check_output(tmp_path / "x", res.run_key, overwrite=True)


def test_in_memory_models_keep_their_names_and_config_errors(tiny_bert, small_beir):
    from embedkit import load_model
    from embedkit.evaluation import evaluate

    model = load_model(tiny_bert)
    name = model.model_card_data.model_name
    res = evaluate([model, model], beir=small_beir, labels=["a", "b"], show_progress_bar=False)
    assert model.model_card_data.model_name == name
    assert res.output_dir is None and res.scores["a"]["mp_small"].result_file is None
    assert res.score("a", "mp_small") == pytest.approx(res.score("b", "mp_small"))
    with pytest.raises(ConfigError, match="labels"):
        evaluate([model], beir=small_beir, labels=["a", "b"])
    with pytest.raises(ConfigError, match="no tasks"):
        evaluate([model])
