"""`embedkit eval --dims` / `evaluate(..., dims=[...])`: every dim of every checkpoint in one report (rows
``<label>@<dim>`` in REPORT.md and summary.json, a quality-vs-dim table and dims.png), truncation re-normalises
(checked against an independent truncate + normalise + exact search), one-line errors for bad dims."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from embedkit.cli import main


@pytest.fixture(scope="module")
def dims_run(tmp_path_factory, tiny_bert, tiny_bert_b, small_beir):
    from embedkit.evaluation import evaluate

    out = tmp_path_factory.mktemp("dims") / "out"
    res = evaluate([tiny_bert, tiny_bert_b], beir=[small_beir], output_dir=out, dims=[8, 32, 16],
                   labels=["a", "b"], show_progress_bar=False)
    return res, out


def test_every_dim_is_a_row_in_one_report(dims_run) -> None:
    res, out = dims_run
    assert res.dims == [32, 16, 8]  # largest first
    assert [c.label for c in res.checkpoints] == ["a@32", "a@16", "a@8", "b@32", "b@16", "b@8"]
    assert len({(c.model_name, c.revision) for c in res.checkpoints}) == 6  # no mteb result overwrites another
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dims"] == [32, 16, 8]
    assert [(c["checkpoint"], c["dim"]) for c in summary["checkpoints"]] == [
        ("a", 32), ("a", 16), ("a", 8), ("b", 32), ("b", 16), ("b", 8)]
    files = {out / res.scores[c.label]["mp_small"].result_file for c in res.checkpoints}
    assert len(files) == 6 and all(f.is_file() for f in files)
    curve = res.dim_curve("a", "mp_small")
    assert [d for d, _ in curve] == [32, 16, 8] and len({v for _, v in curve}) == 3  # truncation changes scores
    report = (out / "REPORT.md").read_text()
    assert "## Quality vs embedding dimension" in report and "![main score vs embedding dimension](dims.png)" in report
    row = next(ln for ln in report.splitlines() if ln.startswith("| mp_small | a | "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == [f"{v:.4f}" for _, v in curve]
    assert cells[5] == f"{100 * curve[1][1] / curve[0][1]:.1f}"
    png = (out / "dims.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_full_dim_row_equals_a_plain_run_and_truncation_renormalises(dims_run, tiny_bert, small_beir) -> None:
    from embedkit import encode, load_model
    from embedkit.data.beir import load_beir
    from embedkit.evaluation import score_beir
    from embedkit.evaluation.scoring import rank_documents, retrieval_metrics

    res, _ = dims_run
    model = load_model(tiny_bert)
    full = score_beir(model, small_beir, k_values=(10,))
    assert res.score("a@32", "mp_small", "ndcg@10") == pytest.approx(full["ndcg@10"], abs=1e-4)
    data = load_beir(small_beir)
    qids, dids = list(data.queries), list(data.corpus)
    q = encode(model, [data.queries[i] for i in qids], role="query", output="torch")
    d = encode(model, [data.doc_text(i) for i in dids], role="document", output="torch")
    for dim in (16, 8):
        qt, dt = F.normalize(torch.as_tensor(q)[:, :dim], dim=-1), F.normalize(torch.as_tensor(d)[:, :dim], dim=-1)
        ranked = rank_documents(qt, dt, dids, 10, similarity="dot")
        ours = retrieval_metrics(data.qrels, dict(zip(qids, ranked)), (10,))
        assert res.score(f"a@{dim}", "mp_small", "ndcg@10") == pytest.approx(ours["ndcg@10"], abs=1e-4), dim


def _cli(capsys, argv: list[str]) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.strip()]


@pytest.mark.parametrize(("dims", "expect"), [
    ("64,8", "--dims: 64 is larger than the model's embedding dimension 32"),
    ("16,x", "--dims: invalid value: expected comma-separated integers (got '16,x')"),
    ("16,16", "--dims: dims must not repeat (got 16,16)"),
    ("0", "--dims: every dim must be an integer >= 1 (got 0)"),
])
def test_bad_dims_are_one_line_errors_and_leave_no_output(tmp_path, capsys, tiny_bert, small_beir, dims: str,
                                                          expect: str) -> None:
    out = tmp_path / "out"
    code, lines = _cli(capsys, ["eval", tiny_bert, "--beir", str(small_beir), "--dims", dims, "-o", str(out),
                                "--no-progress"])
    errors = [ln for ln in lines if ln.startswith("embedkit:")]  # (a too-large dim is found once the model loads:
    assert code == 2 and len(errors) == 1, lines               # transformers' weight-loading bar may come first)
    assert errors[0].startswith(f"embedkit: error: {expect}") and "(fix: " in errors[0]
    assert not any("Traceback" in ln for ln in lines)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_dims_writes_the_curve(tmp_path, capsys, tiny_bert, small_beir) -> None:
    out = tmp_path / "out"
    assert main(["eval", tiny_bert, "--beir", str(small_beir), "--dims", "32,8", "-o", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "@32" in printed and "@8" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dims"] == [32, 8] and (out / "dims.png").is_file()


def test_score_beir_at_dims_equals_one_truncated_run_per_dim_from_one_encoding(tiny_bert, small_beir,
                                                                               monkeypatch) -> None:
    import importlib

    from embedkit import load_model
    from embedkit.evaluation import score_beir, score_beir_at_dims

    encode_module = importlib.import_module("embedkit.encode")  # the module (the package exports the function)

    model = load_model(tiny_bert)
    per_dim = {}
    for dim in (32, 16, 8):
        model.truncate_dim = dim
        per_dim[dim] = score_beir(model, small_beir, k_values=(1, 10))
    model.truncate_dim = None
    calls = []
    real = encode_module.encode
    monkeypatch.setattr(encode_module, "encode", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    curve = score_beir_at_dims(model, small_beir, [8, 32, 16], k_values=(1, 10))
    assert len(calls) == 2  # the queries once, the documents once, for all three dims
    assert list(curve) == [8, 32, 16]
    assert len({round(c["ndcg@10"], 6) for c in curve.values()}) == 3  # truncation changes the scores
    for dim, scores in curve.items():
        assert scores.keys() == per_dim[dim].keys()
        for metric, value in scores.items():
            assert value == pytest.approx(per_dim[dim][metric], abs=1e-6), (dim, metric)


def test_score_beir_at_dims_refuses_a_dim_above_the_model_before_encoding(tiny_bert, small_beir,
                                                                          monkeypatch) -> None:
    import importlib

    from embedkit import load_model
    from embedkit.errors import ConfigError
    from embedkit.evaluation import score_beir_at_dims

    encode_module = importlib.import_module("embedkit.encode")
    model = load_model(tiny_bert)
    monkeypatch.setattr(encode_module, "encode", lambda *a, **kw: pytest.fail("encoded before refusing"))
    with pytest.raises(ConfigError, match=r"dims: 64 is larger than the model's embedding dimension 32"):
        score_beir_at_dims(model, small_beir, [64, 8])
    with pytest.raises(ConfigError, match=r"dims: dims must be positive integers"):
        score_beir_at_dims(model, small_beir, [0])
    model.truncate_dim = 16  # an already-truncated model cannot give 32
    with pytest.raises(ConfigError, match=r"32 is larger than the model's embedding dimension 16"):
        score_beir_at_dims(model, small_beir, [32])
