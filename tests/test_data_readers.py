"""Readers: every format gives the same Pairs; every defect is a one-line InputError naming file:line."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from embedkit.data.beir import BeirData, write_beir
from embedkit.data.readers import load_corpus_texts, load_pairs, write_pairs
from embedkit.data.samples import sample_path
from embedkit.data.schema import Pair
from embedkit.errors import InputError

RECORDS = [
    {"query": "list files", "positive": "ls lists directory contents", "id": "a"},
    {"query": "copy files", "positives": ["cp copies files", "rsync copies files remotely"],
     "negatives": ["mv moves files"], "positive_scores": [0.9, 0.7], "negative_scores": [0.2],
     "instruction": "Find the command", "task": "commands", "id": 7},
]


def _write_jsonl(path: Path, lines: list[str | dict | bytes]) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write(line if isinstance(line, bytes) else line.encode("utf-8"))
            f.write(b"\n")
    return path


def _expected() -> list[Pair]:
    return [
        Pair(query="list files", positives=["ls lists directory contents"], id="a"),
        Pair(query="copy files", positives=["cp copies files", "rsync copies files remotely"],
             negatives=["mv moves files"], positive_scores=[0.9, 0.7], negative_scores=[0.2],
             instruction="Find the command", dataset="commands", id="7"),
    ]


def test_jsonl_reads_every_field_and_roundtrips(tmp_path: Path) -> None:
    pairs = load_pairs(_write_jsonl(tmp_path / "p.jsonl", RECORDS))
    assert list(pairs) == _expected()
    assert pairs.summary == f"read 2 pairs from {tmp_path / 'p.jsonl'}"
    out = tmp_path / "out.jsonl.gz"
    assert write_pairs(pairs, out) == 2
    assert list(load_pairs(out)) == _expected()


def test_dataset_argument_is_the_default_name(tmp_path: Path) -> None:
    pairs = load_pairs(_write_jsonl(tmp_path / "p.jsonl", RECORDS), dataset="mine")
    assert [p.dataset for p in pairs] == ["mine", "commands"]


def test_csv_with_json_list_cells_and_multiline_cells(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["query", "positive", "positives", "negatives", "positive_scores", "negative_scores",
                    "instruction", "task", "id"])
        w.writerow(["list files", "ls lists directory contents", "", "", "", "", "", "", "a"])
        w.writerow(["copy files", "", json.dumps(RECORDS[1]["positives"]), json.dumps(["mv moves files"]),
                    "[0.9, 0.7]", "[0.2]", "Find the command", "commands", "7"])
        w.writerow(["multi\nline query", "doc", "", "", "", "", "", "", "m"])  # physical lines 4-5
        w.writerow(["", "doc", "", "", "", "", "", "", "z"])  # line 6: empty query
    with pytest.raises(InputError) as err:
        load_pairs(path)
    assert str(err.value).startswith(f"{path}:6: field 'query' is missing")  # an empty CSV cell is no value
    pairs = load_pairs(path, skip_invalid=True)
    assert list(pairs)[:2] == _expected()
    assert pairs[2].query == "multi\nline query"
    assert pairs.summary == "skipped 1 of 4 records: 1 missing 'query'"


def test_parquet_and_saved_hf_dataset(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = {"query": ["list files", "copy files"],
            "positives": [["ls lists directory contents"], RECORDS[1]["positives"]],
            "negatives": [[], ["mv moves files"]], "id": ["a", "7"]}
    pq.write_table(pa.table(rows), tmp_path / "p.parquet")
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "hf"))
    for src in (tmp_path / "p.parquet", tmp_path / "hf"):
        pairs = load_pairs(src)
        assert [p.positives for p in pairs] == [p.positives for p in _expected()]
        assert pairs[1].negatives == ["mv moves files"] and pairs[0].negatives == []
    bad = {"query": ["q", None], "positive": ["d", "e"]}
    pq.write_table(pa.table(bad), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad\.parquet:row 2: field 'query' is missing"):
        load_pairs(tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{bad json", "invalid JSON"),
        ('["a list"]', "record is a JSON list, not an object"),
        ('{"positive": "d"}', "field 'query' is missing"),
        ('{"query": "  ", "positive": "d"}', "field 'query' is empty"),
        ('{"query": 3, "positive": "d"}', "field 'query' is int, not a string"),
        ('{"query": "q"}', "field 'positive' (or 'positives') is missing"),
        ('{"query": "q", "positives": []}', "field 'positives' is an empty list"),
        ('{"query": "q", "positives": "d"}', "field 'positives' is str, not a list"),
        ('{"query": "q", "positives": ["d", 5]}', "'positives[1]' is int, not a string"),
        ('{"query": "q", "positive": "d", "positives": ["e"]}', "record has both 'positive' and 'positives'"),
        ('{"query": "q", "positive": "d", "negatives": [""]}', "'negatives[0]' is empty"),
        ('{"query": "q", "positives": ["d", "e"], "positive_scores": [1.0]}',
         "'positive_scores' has 1 values but there are 2 positives"),
        ('{"query": "q", "positive": "d", "negatives": ["n"], "negative_scores": [1, 2]}',
         "'negative_scores' has 2 values but there are 1 negatives"),
        ('{"query": "q", "positive": "d", "positive_scores": ["high"]}',
         "field 'positive_scores' must be a list of finite numbers"),
        ('{"query": "q", "positive": "d", "id": true}', "field 'id' is bool"),
        ('{"query": "q", "positive": "d", "instruction": 1}', "field 'instruction' is int"),
        (b'{"query": "caf\xe9", "positive": "d"}', "line is not valid UTF-8"),
    ],
)
def test_each_defect_is_a_one_line_error_with_file_and_line(tmp_path: Path, line: str | bytes, message: str) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [RECORDS[0], "", line])
    with pytest.raises(InputError) as err:
        load_pairs(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: {message}"), text
    assert "\n" not in text and "(fix: " in text


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [RECORDS[0], RECORDS[1], {"query": "x", "positive": "y", "id": "a"}])
    with pytest.raises(InputError) as err:
        load_pairs(path)
    assert str(err.value).startswith(f"{path}:3: duplicate id 'a' (first at {path}:1)")


def test_skip_invalid_counts_every_reason(tmp_path: Path) -> None:
    lines = [RECORDS[0], '{"positive": "d"}', "{oops", RECORDS[1], '{"positive": "e"}',
             {"query": "dup", "positive": "z", "id": "a"}]
    path = _write_jsonl(tmp_path / "p.jsonl", lines)
    pairs = load_pairs(path, skip_invalid=True)
    assert [p.id for p in pairs] == ["a", "7"]
    assert pairs.total == 6 and pairs.num_skipped == 4
    assert pairs.summary == "skipped 4 of 6 records: 2 missing 'query', 1 bad JSON, 1 duplicate id"
    assert pairs.first_error is not None and pairs.first_error.startswith(f"{path}:2: field 'query' is missing")


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("q\td\n")
    with pytest.raises(InputError, match="unknown pairs format 'x.txt'"):
        load_pairs(tmp_path / "x.txt")
    with pytest.raises(InputError, match="holds no pairs"):
        load_pairs(_write_jsonl(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(InputError, match=r"no valid record \(skipped 1 of 1 records: 1 bad JSON"):
        load_pairs(_write_jsonl(tmp_path / "allbad.jsonl", ["{"]), skip_invalid=True)
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="neither a BEIR folder nor a saved HF dataset"):
        load_pairs(tmp_path / "folder")


def test_beir_folder_gives_one_pair_per_query_with_all_positives(tmp_path: Path) -> None:
    data = BeirData(corpus={"d1": {"title": "ls", "text": "list directory"}, "d2": {"title": "", "text": "dir"},
                            "d3": {"title": "", "text": "cat files"}},
                    queries={"q1": "list files", "q2": "show a file"},
                    qrels={"q1": {"d1": 1, "d2": 2, "d3": 0}, "q2": {"d3": 1}}, name="tiny", split="train")
    write_beir(data, tmp_path / "tiny")
    pairs = load_pairs(tmp_path / "tiny")
    assert [(p.id, p.query, p.positives, p.dataset) for p in pairs] == [
        ("q1", "list files", ["ls list directory", "dir"], "tiny"), ("q2", "show a file", ["cat files"], "tiny")]
    assert load_corpus_texts(tmp_path / "tiny") == ["ls list directory", "dir", "cat files"]
    qrels = tmp_path / "tiny" / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "q2\tmissing-doc\t1\n")
    with pytest.raises(InputError) as err:
        load_pairs(tmp_path / "tiny")
    assert str(err.value).startswith(f"{qrels}:6: qrel names document 'missing-doc'")


def test_beir_folder_without_the_train_split_is_an_error_not_the_test_split(tmp_path: Path) -> None:
    """Reading training pairs never falls back from the train qrels to the test qrels (it used to, silently)."""
    data = BeirData(corpus={"d1": {"title": "", "text": "list directory"}}, queries={"q1": "list files"},
                    qrels={"q1": {"d1": 1}}, name="tiny", split="test")
    write_beir(data, tmp_path / "tiny")
    with pytest.raises(InputError) as err:
        load_pairs(tmp_path / "tiny")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'tiny'}: the BEIR folder has no 'train' split: qrels/train.tsv is missing")
    assert "(splits: test)" in msg and "fix:" in msg and "never the split you evaluate on" in msg
    with pytest.raises(InputError, match="no 'dev' split"):
        load_pairs(tmp_path / "tiny", split="dev")
    assert [p.id for p in load_pairs(tmp_path / "tiny", split="test")] == ["q1"]  # asked for by name: fine


def test_corpus_jsonl_errors_and_titles(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "title": "T"}, {"text": "b"}])
    assert load_corpus_texts(path) == ["T a", "b"]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"text": "a"}, {"txt": "b"}])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: field 'text' is missing"):
        load_corpus_texts(bad)


def test_write_pairs_leaves_no_partial_file(tmp_path: Path) -> None:
    def broken():
        yield _expected()[0]
        raise RuntimeError("disk on fire")

    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        write_pairs(broken(), out)
    assert list(tmp_path.iterdir()) == []


def test_packaged_debian_sample_is_valid_and_split_by_package() -> None:
    from embedkit.data.beir import load_beir

    train = load_pairs(sample_path("debian-train"))
    beir = load_beir(sample_path("debian-beir"))
    assert 3000 <= len(train) <= 5000 and train.num_skipped == 0
    assert 300 <= len(beir.queries) <= 500 and 10_000 <= len(beir.corpus) <= 12_000
    train_ids = {p.id for p in train}
    test_ids = {q.removeprefix("q-") for q in beir.queries}
    assert not train_ids & test_ids
    assert not {p.query for p in train} & set(beir.queries.values())
    corpus_texts = {d["text"] for d in beir.corpus.values()}
    assert all(p.positives[0] in corpus_texts for p in train)  # the corpus holds the train docs too
    for qid, rel in beir.qrels.items():
        assert list(rel) == [f"d-{qid.removeprefix('q-')}"]
    stats = json.loads((sample_path("debian-beir").parent / "stats.json").read_text())
    assert stats["train_pairs"] == len(train) and stats["corpus_docs"] == len(beir.corpus)
    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    assert first["dataset"] == "debian" and set(first) == {"query", "positives", "dataset", "id"}


def test_unknown_sample_name() -> None:
    with pytest.raises(InputError, match="unknown sample 'nope'"):
        sample_path("nope")


def test_csv_row_defects_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "p.tsv.gz"
    rows = b"query\tpositive\nq1\td1\nq2\td2\textra\ncaf\xe9\td3\nq4\t\n"
    with gzip.open(path, "wb") as f:
        f.write(rows)
    with pytest.raises(InputError) as err:
        load_pairs(path)
    assert str(err.value).startswith(f"{path}:3: row has 3 columns, the header has 2")
    pairs = load_pairs(path, skip_invalid=True)
    assert [p.query for p in pairs] == ["q1"]
    assert pairs.summary == ("skipped 3 of 4 records: 1 wrong column count, 1 non-UTF-8 bytes, "
                             "1 missing 'positive'")
    (tmp_path / "noquery.csv").write_text("question,answer\na,b\n")
    with pytest.raises(InputError, match=r"noquery\.csv:1: the CSV header has no 'query' column"):
        load_pairs(tmp_path / "noquery.csv")
