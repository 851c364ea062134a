"""Failure paths of `embedkit eval`: one-line messages with file:line, exit code 2, no output left behind, and
hub tasks that fail fast offline."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from embedkit.cli import main
from embedkit.errors import InputError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _run_cli(capsys, argv: list[str]) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.strip()]


def _assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temp leftovers


@pytest.mark.parametrize("defect", ["missing_file", "dangling_qrel", "bad_json"])
def test_malformed_beir_folder_cli(tmp_path, capsys, small_beir, tiny_bert, defect):
    bad = _copy(small_beir, tmp_path / "bad")
    if defect == "missing_file":
        (bad / "queries.jsonl").unlink()
        expect = [f"{bad}: queries.jsonl is missing"]
    elif defect == "dangling_qrel":
        lines = (bad / "qrels" / "test.tsv").read_text().splitlines()
        qid = lines[1].split("\t")[0]
        lines.insert(3, f"{qid}\tno-such-doc\t1")
        (bad / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
        expect = [f"{bad / 'qrels' / 'test.tsv'}:4:", "no-such-doc", "dangling"]
    else:
        lines = (bad / "corpus.jsonl").read_text().splitlines()
        lines[6] = lines[6][:-1]  # cut the closing brace of line 7
        (bad / "corpus.jsonl").write_text("\n".join(lines) + "\n")
        expect = [f"{bad / 'corpus.jsonl'}:7:", "invalid JSON"]
    out = tmp_path / "out"
    code, lines = _run_cli(capsys, ["eval", tiny_bert, "--beir", str(bad), "-o", str(out), "--no-progress"])
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("embedkit: error: ")
    for piece in expect:
        assert piece in lines[0]
    assert "Traceback" not in lines[0]
    _assert_no_output(out)


def test_malformed_sts_file_cli(tmp_path, capsys, tiny_bert):
    sts = tmp_path / "s.tsv"
    sts.write_text("sentence1\tsentence2\tscore\na\tb\t1\nc\td\thigh\n")
    out = tmp_path / "out"
    code, lines = _run_cli(capsys, ["eval", tiny_bert, "--sts", str(sts), "-o", str(out)])
    assert code == 2 and len(lines) == 1
    assert f"{sts}:3:" in lines[0] and "not a number" in lines[0]
    _assert_no_output(out)


def test_hub_task_offline_fails_fast(tmp_path, capsys, tiny_bert, monkeypatch):
    import mteb  # noqa: F401  (import cost is not the point of the timing below)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    start = time.perf_counter()
    code, lines = _run_cli(capsys, ["eval", tiny_bert, "--tasks", "STS12", "-o", str(out)])
    elapsed = time.perf_counter() - start
    assert code == 2 and len(lines) == 1, lines
    msg = lines[0]
    assert "STS12" in msg and "hub" in msg and "offline" in msg and "--beir" in msg and "--sts" in msg
    assert elapsed < 2.0, elapsed
    _assert_no_output(out)


def test_hub_unreachable_without_offline_switch_fails_fast(monkeypatch):
    import mteb  # noqa: F401

    from embedkit.evaluation.tasks import hub_is_offline, hub_tasks

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    assert "unreachable" in (hub_is_offline() or "")
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"STS12.*127\.0\.0\.1 is unreachable") as info:
        hub_tasks(["STS12"])
    assert time.perf_counter() - start < 2.0
    assert "HF_HUB_OFFLINE=1" in str(info.value)  # how to use a cached copy
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_is_offline() == "HF_HUB_OFFLINE=1 is set"


def test_unknown_task_and_missing_checkpoint(tmp_path, capsys, tiny_bert, small_beir):
    code, lines = _run_cli(capsys, ["eval", tiny_bert, "--tasks", "NoSuchTask", "-o", str(tmp_path / "o")])
    assert code == 2 and len(lines) == 1 and "unknown MTEB task 'NoSuchTask'" in lines[0]
    code, lines = _run_cli(capsys, ["eval", tiny_bert, "--tasks", "STS13x", "-o", str(tmp_path / "o")])
    assert code == 2 and "(fix: Did you mean: 'STS13'?)" in lines[0]
    code, lines = _run_cli(capsys, ["eval", str(tmp_path / "nope"), "--beir", str(small_beir), "-o",
                                    str(tmp_path / "o")])
    assert code == 2 and len(lines) == 1 and "not found" in lines[0]
    code, lines = _run_cli(capsys, ["eval", tiny_bert, "-o", str(tmp_path / "o")])
    assert code == 2 and "no tasks" in lines[0]
    _assert_no_output(tmp_path / "o")


def test_sts_reader_formats_and_errors(tmp_path):
    from embedkit.evaluation.tasks import load_sts

    j = tmp_path / "a.jsonl"
    j.write_text('{"sentence1": "x", "sentence2": "y", "score": 1}\n\n{"sentence1": "p", "sentence2": "q", "score": "2.5"}\n')
    d = load_sts(j)
    assert d.scores == [1.0, 2.5] and d.sentence1 == ["x", "p"] and d.name == "a"
    c = tmp_path / "b.csv"
    c.write_text('score,sentence1,sentence2\n1,"a, b",c\n3,d,e\n')
    d = load_sts(c)
    assert d.sentence1 == ["a, b", "d"] and d.scores == [1.0, 3.0]
    cases = {
        "m.jsonl": ('{"sentence1": "x", "score": 1}\n', "m.jsonl:1: field 'sentence2' is missing"),
        "n.jsonl": ('{"sentence1": "x", "sentence2": "y", "score": 1}\n{"sentence1": "x", "sentence2": "y", '
                    '"score": NaN}\n', "n.jsonl:2: score nan is not finite"),
        "h.tsv": ("s1\ts2\tscore\n", "h.tsv:1: header lacks column(s) sentence1, sentence2"),
        "c.tsv": ("sentence1\tsentence2\tscore\na\tb\n", "c.tsv:2: expected 3 columns, got 2"),
        "e.jsonl": ('{"sentence1": "x", "sentence2": "y", "score": 1}\n{"sentence1": "x", "sentence2": "y", '
                    '"score": 1}\n', "all gold scores are equal"),
        "x.parquet": ("", "unsupported STS file type"),
    }
    for name, (content, expect) in cases.items():
        p = tmp_path / name
        p.write_text(content)
        with pytest.raises(InputError) as info:
            load_sts(p)
        assert expect in str(info.value), (name, str(info.value))
        assert "\n" not in str(info.value)
    bad = tmp_path / "u.jsonl"
    bad.write_bytes(b'{"sentence1": "x", "sentence2": "y", "score": 1}\n{"sentence1": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"u.jsonl:2: line is not valid UTF-8"):
        load_sts(bad)


def test_local_task_metadata(tmp_path, small_beir, sts_file):
    from embedkit.evaluation.tasks import beir_task, sts_task

    t = beir_task(small_beir)
    assert t.metadata.name == "mp_small" and t.metadata.main_score == "ndcg_at_10"
    assert t.metadata.type == "Retrieval" and len(t.metadata.dataset["revision"]) == 12
    t.load_data()
    split = t.dataset["default"]["test"]
    assert len(split["corpus"]) == 80 and len(split["queries"]) == 40
    # the revision is a content hash: editing the data changes it
    copy = _copy(small_beir, tmp_path / "mp_small")
    with open(copy / "queries.jsonl", "a") as f:
        f.write('{"_id": "extra", "text": "an unjudged query"}\n')
    t2 = beir_task(copy)
    assert t2.metadata.name == "mp_small" and t2.metadata.dataset["revision"] != t.metadata.dataset["revision"]
    s = sts_task(sts_file)
    assert s.metadata.main_score == "cosine_spearman" and s.metadata.type == "STS"
    data = json.loads(sts_file.read_text().splitlines()[0])
    assert s.sts_data.sentence1[0] == data["sentence1"]


@pytest.mark.parametrize("defect", ["corrupt_config", "not_a_model", "pickle_only", "adapter_without_base"])
def test_bad_second_checkpoint_is_refused_before_anything_is_encoded(tmp_path, capsys, small_beir, tiny_bert,
                                                                     monkeypatch, defect):
    """`embedkit eval GOOD BAD` used to evaluate GOOD fully (minutes for a real model) before refusing BAD."""
    import embedkit.evaluation.runner as runner

    loaded: list[str] = []
    real = runner.load_checkpoint
    monkeypatch.setattr(runner, "load_checkpoint", lambda path, **kw: loaded.append(str(path)) or real(path, **kw))
    bad = tmp_path / "bad"
    bad.mkdir()
    if defect == "corrupt_config":
        (bad / "config.json").write_text("{oops")
        expect = "config.json"
    elif defect == "pickle_only":
        shutil.copy(Path(tiny_bert) / "config.json", bad / "config.json")
        (bad / "pytorch_model.bin").write_bytes(b"\x80\x04")
        expect = "pickle"
    elif defect == "adapter_without_base":
        (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        expect = "base_model_name_or_path"
    else:
        expect = "not a model folder"
    out = tmp_path / "parent" / "out"
    code, lines = _run_cli(capsys, ["eval", tiny_bert, str(bad), "--beir", str(small_beir), "-o", str(out),
                                    "--no-progress"])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("embedkit: error: ") and expect in lines[0] and "fix:" in lines[0]
    assert loaded == []  # not even the good first checkpoint was loaded
    assert not (tmp_path / "parent").exists()  # nor the output's parent folder left behind


def test_python_api_checks_every_checkpoint_before_loading_any(tmp_path, small_beir, tiny_bert, monkeypatch):
    """``embedkit.evaluate([GOOD, BAD])`` makes the same up-front checks as the CLI (no weights read, no encoding)."""
    import embedkit
    import embedkit.evaluation.runner as runner
    from embedkit.errors import ModelError

    loaded: list[str] = []
    monkeypatch.setattr(runner, "load_checkpoint", lambda path, **kw: loaded.append(str(path)))
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(Path(tiny_bert) / "config.json", bad / "config.json")
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="pickle"):
        embedkit.evaluate([tiny_bert, str(bad)], beir=[str(small_beir)], output_dir=tmp_path / "out")
    assert loaded == [] and not (tmp_path / "out").exists()


def test_eval_a_packaged_sample_on_a_subset(tmp_path, capsys, tiny_bert):
    """``--beir sample:NAME`` names the task after the sample; --max-queries/--max-corpus score a fixed subset."""
    out = tmp_path / "out"
    code, lines = _run_cli(capsys, ["eval", tiny_bert, "--beir", "sample:debian-beir", "--max-queries", "15",
                                    "--max-corpus", "120", "-o", str(out), "--no-progress"])
    assert code == 0, lines
    summary = json.loads((out / "summary.json").read_text())
    (task,) = summary["tasks"]
    assert task["name"] == "debian-beir", task
    from embedkit.evaluation.runner import _build_tasks

    (sub,) = _build_tasks(None, ["sample:debian-beir"], None, "test", 15, 120)
    assert "15 queries, 120 documents" in sub.metadata.description, sub.metadata.description
    assert sub.metadata.revision == task["revision"]  # the subset the CLI scored
    code, lines = _run_cli(capsys, ["eval", tiny_bert, "--beir", "sample:debian-beir", "--max-queries", "0",
                                    "-o", str(tmp_path / "o2")])
    assert code == 2 and "max_queries" in lines[0] and not (tmp_path / "o2").exists()
