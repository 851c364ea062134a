"""Pair collator: prompts/instructions, ragged hard negatives, text hashes, teacher scores, epoch rotation."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from embedkit.data.schema import Pair
from embedkit.losses.base import hash_texts
from embedkit.training.collator import DatasetSpec, PairCollator, PairDataset, TrainExample


@pytest.fixture(scope="module")
def tok(minilm_path: str):
    return AutoTokenizer.from_pretrained(minilm_path)


def _decode(tok, feats, row: int) -> str:
    ids = feats["input_ids"][row][feats["attention_mask"][row].bool()]
    return tok.decode(ids, skip_special_tokens=True)


def test_ragged_negatives_hashes_and_teacher_scores(tok) -> None:
    spec = DatasetSpec("d", max_negatives=2)
    col = PairCollator(tok, [spec], max_length=32)
    pairs = [
        Pair("q one", ["pos one"], ["neg a", "neg b", "neg c"], positive_scores=[0.9], negative_scores=[0.1, 0.2, 0.3]),
        Pair("q two", ["pos two"]),
    ]
    out = col([TrainExample(p, 0) for p in pairs])
    assert out["docs_per_query"].tolist() == [3, 1]  # capped at max_negatives, ragged
    docs = [_decode(tok, out["docs"], i) for i in range(4)]
    assert docs == ["pos one", "neg a", "neg b", "pos two"]
    assert torch.equal(out["doc_hash"], hash_texts(["pos one", "neg a", "neg b", "pos two"]))
    ts = out["teacher_scores"].tolist()
    assert ts[:3] == pytest.approx([0.9, 0.1, 0.2]) and math.isnan(ts[3])
    assert out["in_batch_negatives"] is True and out["dataset"] == "d"
    assert [_decode(tok, out["query"], i) for i in range(2)] == ["q one", "q two"]


def test_no_teacher_scores_gives_none_and_in_batch_flag_follows_spec(tok) -> None:
    col = PairCollator(tok, [DatasetSpec("cls", in_batch_negatives=False, max_negatives=1)], max_length=16)
    out = col([TrainExample(Pair("a", ["b"], ["c"]), 0)])
    assert out["teacher_scores"] is None and out["in_batch_negatives"] is False


def test_query_prompt_instruction_and_prompt_length(tok) -> None:
    specs = [DatasetSpec("x", instruction="Find the package")]
    col = PairCollator(tok, specs, max_length=64, query_prompt="query: ", document_prompt="passage: ",
                       prompt_style="nv-embed")
    out = col([TrainExample(Pair("list files", ["ls"]), 0)])
    q = _decode(tok, out["query"], 0)
    assert q.startswith("instruct : find the package") and q.endswith("query : list files")
    prompt = "Instruct: Find the package\nQuery: "
    assert int(out["query"]["prompt_length"]) == len(tok(prompt)["input_ids"]) - 1  # [CLS] + prompt, no [SEP]
    assert _decode(tok, out["docs"], 0) == "passage : ls"
    # hashes are of the raw document text, not of the prompt
    assert torch.equal(out["doc_hash"], hash_texts(["ls"]))
    # a record's own instruction wins over the data set's
    out2 = col([TrainExample(Pair("list files", ["ls"], instruction="Other task"), 0)])
    assert _decode(tok, out2["query"], 0).startswith("instruct : other task")
    # style "none": the model's query prompt, instructions ignored
    plain = PairCollator(tok, specs, max_length=64, query_prompt="query: ")
    assert _decode(tok, plain([TrainExample(Pair("x", ["y"]), 0)])["query"], 0) == "query : x"


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_training_batches_embed_as_encode_does_with_exclude_prompt(fixture: str, request) -> None:
    """Mean pooling without the instruction tokens: the collated training batch must run through the model (the
    encoder's pooling is sentence-transformers', the decoder's embedkit's) and give the same query and document
    embeddings as :func:`embedkit.encode` -- training and inference pool the same tokens."""
    from embedkit.encode import encode
    from embedkit.models import load_model

    model = load_model(request.getfixturevalue(fixture), pooling="mean", exclude_prompt=True, max_seq_length=48,
                       prompts={"style": "nv-embed", "instruction": "Find the package"})
    model.eval()
    col = PairCollator(model.tokenizer, max_length=48, query_prompt=model.prompts["query"],
                       document_prompt=model.prompts["document"], prompt_style="nv-embed")
    pairs = [Pair("list files in a folder", ["coreutils basic file tools"]), Pair("compress", ["gzip utility"])]
    batch = col([TrainExample(p, 0) for p in pairs])
    assert batch["query"]["prompt_length"].shape == (1,)
    with torch.no_grad():
        q_train = model(dict(batch["query"]))["sentence_embedding"]
        d_train = model(dict(batch["docs"]))["sentence_embedding"]
    q_enc = encode(model, [p.query for p in pairs], role="query", output="torch")
    d_enc = encode(model, [p.positives[0] for p in pairs], role="document", output="torch")
    assert torch.allclose(q_train, q_enc, atol=1e-5) and torch.allclose(d_train, d_enc, atol=1e-5)
    # and the instruction really is left out: pooling it in gives other query embeddings
    with_prompt = load_model(request.getfixturevalue(fixture), pooling="mean", max_seq_length=48,
                             prompts={"style": "nv-embed", "instruction": "Find the package"})
    with torch.no_grad():
        q_incl = with_prompt(dict(batch["query"]))["sentence_embedding"]
    assert not torch.allclose(q_train, q_incl, atol=1e-3)


def test_epoch_rotates_positive_and_negative_window(tok) -> None:
    col = PairCollator(tok, [DatasetSpec("d", max_negatives=2)], max_length=16)
    p = Pair("q", ["p0", "p1"], ["n0", "n1", "n2"])
    e0 = col([TrainExample(p, 0, epoch=0)])
    e1 = col([TrainExample(p, 0, epoch=1)])
    assert [_decode(tok, e0["docs"], i) for i in range(3)] == ["p0", "n0", "n1"]
    assert [_decode(tok, e1["docs"], i) for i in range(3)] == ["p1", "n2", "n0"]


def test_mixed_dataset_batch_is_refused(tok) -> None:
    col = PairCollator(tok, [DatasetSpec("a"), DatasetSpec("b")], max_length=16)
    with pytest.raises(ValueError, match="mixes data sets"):
        col([TrainExample(Pair("q", ["d"]), 0), TrainExample(Pair("q", ["d"]), 1)])


def test_pair_dataset_indexing_and_epoch() -> None:
    ds = PairDataset([[Pair("a", ["x"])] * 3, [Pair("b", ["y"])] * 2], [DatasetSpec("one"), DatasetSpec("two")])
    assert len(ds) == 5 and ds.sizes == [3, 2]
    assert ds[2].dataset == 0 and ds[3].dataset == 1 and ds[3].pair.query == "b"
    ds.set_epoch(4)
    assert ds[0].epoch == 4
    with pytest.raises(IndexError):
        ds[5]
