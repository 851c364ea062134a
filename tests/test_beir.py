"""BEIR folder reader/writer: round trips and one-line file:line errors for every defect."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from embedkit.data.beir import BeirData, load_beir, write_beir
from embedkit.errors import InputError, OutputError


def _make(folder: Path, corpus=None, queries=None, qrels=None, split="test") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "ls", "text": "list directory contents"},
        {"_id": "d2", "title": "", "text": "copy files and directories"},
        {"_id": "d3", "text": "remove files"},
    ]
    queries = queries if queries is not None else [
        {"_id": "q1", "text": "show files in a folder"},
        {"_id": "q2", "text": "duplicate a file"},
        {"_id": "q9", "text": "a query of another split"},
    ]
    qrels = qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td3\t0\n"
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        if isinstance(rows, (str, bytes)):
            (folder / name).write_bytes(rows.encode() if isinstance(rows, str) else rows)
        else:
            (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")
    return folder


def test_load_valid_folder(tmp_path):
    data = load_beir(_make(tmp_path / "mini"))
    assert data.name == "mini" and data.split == "test"
    assert data.corpus["d1"] == {"title": "ls", "text": "list directory contents"}
    assert data.corpus["d3"] == {"title": "", "text": "remove files"}
    # queries are restricted to the judged ones, like BEIR's own loader
    assert data.queries == {"q1": "show files in a folder", "q2": "duplicate a file"}
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}}
    assert data.num_relevant == 2
    assert data.doc_text("d1") == "ls list directory contents"
    assert data.doc_text("d2") == "copy files and directories"


def test_gzip_and_other_split(tmp_path):
    folder = _make(tmp_path / "gz", split="dev")
    for stem in ("corpus", "queries"):
        raw = (folder / f"{stem}.jsonl").read_bytes()
        (folder / f"{stem}.jsonl").unlink()
        with gzip.open(folder / f"{stem}.jsonl.gz", "wb") as f:
            f.write(raw)
    data = load_beir(folder, split="dev")
    assert len(data.corpus) == 3 and data.split == "dev"
    with pytest.raises(InputError, match=r"qrels/test.tsv is missing.*available splits: dev"):
        load_beir(folder)


def test_roundtrip_write(tmp_path):
    src = load_beir(_make(tmp_path / "a"))
    write_beir(src, tmp_path / "b")
    back = load_beir(tmp_path / "b", name="a")
    assert back == src
    with pytest.raises(OutputError, match="already exists"):
        write_beir(src, tmp_path / "b")
    write_beir(src, tmp_path / "b", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_write_rejects_tab_in_id(tmp_path):
    data = BeirData(corpus={"d\t1": {"title": "", "text": "x"}}, queries={"q": "y"}, qrels={"q": {"d\t1": 1}})
    with pytest.raises(InputError, match="tab or newline"):
        write_beir(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_in_memory_validation():
    with pytest.raises(InputError, match="corpus is empty"):
        BeirData(corpus={}, queries={"q": "x"}, qrels={"q": {"d": 1}})
    with pytest.raises(InputError, match="document 'zz'.*dangling"):
        BeirData(corpus={"d": {"title": "", "text": "t"}}, queries={"q": "x"}, qrels={"q": {"zz": 1}})


@pytest.mark.parametrize(
    "kwargs, file, line, pattern",
    [
        ({"corpus": '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": broken}\n'}, "corpus.jsonl", 2, "invalid JSON"),
        ({"corpus": [{"_id": "d1", "text": "a"}, {"text": "no id"}]}, "corpus.jsonl", 2, "has no '_id'"),
        ({"corpus": [{"_id": "d1", "title": "only title"}]}, "corpus.jsonl", 1, "has no 'text'"),
        ({"corpus": [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}]}, "corpus.jsonl", 2,
         "duplicate _id 'd1'"),
        ({"corpus": [{"_id": "d1", "text": "  ", "title": ""}]}, "corpus.jsonl", 1, "empty text and title"),
        ({"corpus": b'{"_id": "d1", "text": "caf\xe9"}\n'}, "corpus.jsonl", 1, "not valid UTF-8"),
        ({"queries": [{"_id": "q1", "text": "x"}, {"_id": "q2", "text": 3}]}, "queries.jsonl", 2, "not a string"),
        ({"queries": [{"_id": "q1", "text": ""}]}, "queries.jsonl", 1, "query 'q1' is empty"),
        ({"queries": "[1, 2]\n"}, "queries.jsonl", 1, "not a JSON object"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tnope\t1\n"}, "qrels/test.tsv", 3,
         "document 'nope'.*dangling"),
        ({"qrels": "query-id\tcorpus-id\tscore\nqX\td1\t1\n"}, "qrels/test.tsv", 2, "query 'qX'.*dangling"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td1\thigh\n"}, "qrels/test.tsv", 2, "not an integer"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1 d1 1\n"}, "qrels/test.tsv", 2, "3 tab-separated columns"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n"}, "qrels/test.tsv", 3, "duplicate qrel"),
    ],
)
def test_defects_name_file_and_line(tmp_path, kwargs, file, line, pattern):
    folder = _make(tmp_path / "bad", **kwargs)
    with pytest.raises(InputError, match=pattern) as info:
        load_beir(folder)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{folder / file}:{line}: "), msg
    assert "(fix: " in msg


def test_missing_files_and_empty(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_beir(tmp_path / "nowhere")
    folder = _make(tmp_path / "m")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(InputError, match=r"queries.jsonl is missing") as info:
        load_beir(folder)
    assert str(info.value).startswith(str(folder))
    empty = _make(tmp_path / "e", corpus=[], qrels="query-id\tcorpus-id\tscore\n")
    with pytest.raises(InputError, match="corpus is empty"):
        load_beir(empty)
    noqrels = _make(tmp_path / "n", qrels="query-id\tcorpus-id\tscore\n")
    with pytest.raises(InputError, match="no relevance judgements"):
        load_beir(noqrels)


def test_integer_ids_and_trec_qrels(tmp_path):
    folder = _make(tmp_path / "i", corpus=[{"_id": 1, "text": "a"}, {"_id": 2, "text": "b"}],
                   queries=[{"_id": 7, "text": "q"}], qrels="7\t0\t2\t1\n")
    data = load_beir(folder)
    assert data.qrels == {"7": {"2": 1}} and set(data.corpus) == {"1", "2"}


def test_subset_is_seeded_and_keeps_judged_documents():
    corpus = {f"d{i}": {"title": "", "text": f"doc {i}"} for i in range(50)}
    queries = {f"q{i}": f"query {i}" for i in range(20)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 20}": 0} for i in range(20)}
    data = BeirData(corpus=corpus, queries=queries, qrels=qrels, name="s")
    a = data.subset(max_queries=5, max_corpus=15, seed=3)
    assert a == data.subset(max_queries=5, max_corpus=15, seed=3)
    assert a != data.subset(max_queries=5, max_corpus=15, seed=4)
    assert len(a.queries) == 5 and len(a.corpus) == 15 and set(a.qrels) == set(a.queries)
    assert all(d in a.corpus for docs in a.qrels.values() for d in docs)  # judged docs always kept
    tight = data.subset(max_queries=10, max_corpus=5)  # judged docs win over the corpus cap
    assert len(tight.corpus) == 20
    assert data.subset() == data
