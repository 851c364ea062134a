"""Per-record instructions: every query row is pooled without exactly its own instruction tokens.

A batch may mix records whose instructions differ in length. The collator passes one prompt length per row and the
pooling reads them per row, so each row's training embedding equals encoding that query alone with its own
instruction (what :func:`embedkit.encode` does at inference) -- on the plain path and through GradCache's chunks.
"""

from __future__ import annotations

import pytest
import torch
from sentence_transformers.sentence_transformer.modules import Pooling as STPooling

from embedkit.data.schema import Pair
from embedkit.encode import encode
from embedkit.models import LatentAttentionPooling, Pooling, load_model
from embedkit.models.pooling import enable_per_row_prompt_lengths, reads_per_row_prompt_length
from embedkit.models.prompts import query_prompt_for
from embedkit.training.collator import PairCollator, TrainExample
from embedkit.training.gradcache import plan_chunks

SHORT = "Find"
LONG = "Retrieve the Debian package whose manual page documents this command line tool"
PAIRS = [
    Pair("list files in a folder", ["coreutils"], instruction=LONG),
    Pair("compress a file", ["gzip"], instruction=SHORT),
    Pair("copy a directory tree", ["rsync"], instruction=LONG),
]


def _model(path: str, pooling: str):
    model = load_model(path, pooling=pooling, exclude_prompt=True, max_seq_length=64,
                       prompts={"style": "nv-embed", "instruction": "Default task"},
                       latent_attention={"num_latents": 8, "num_heads": 4, "mlp_ratio": 2})
    if pooling == "latent_attention":
        torch.manual_seed(3)
        with torch.no_grad():  # non-trivial branches (the out-projections start at zero)
            for p in model[1].parameters():
                p.add_(torch.randn_like(p) * 0.2)
    assert enable_per_row_prompt_lengths(model)
    model.eval()
    return model


def _collate(model, per_row: bool = True):
    col = PairCollator(model.tokenizer, max_length=64, query_prompt=model.prompts["query"],
                       document_prompt=model.prompts["document"], prompt_style="nv-embed",
                       per_row_prompt_lengths=per_row)
    return col, col([TrainExample(p, 0) for p in PAIRS])


def _alone(model, pair: Pair) -> torch.Tensor:
    prompt = query_prompt_for(pair.instruction, "nv-embed", model.prompts["query"])
    return encode(model, [pair.query], prompt=prompt, output="torch")[0]


@pytest.mark.parametrize(("fixture", "pooling"), [("tiny_bert", "mean"), ("tiny_llama", "mean"),
                                                  ("tiny_bert", "latent_attention")])
def test_each_row_equals_encoding_it_alone(fixture: str, pooling: str, request) -> None:
    model = _model(request.getfixturevalue(fixture), pooling)
    col, batch = _collate(model)
    lengths = [col.prompt_length(query_prompt_for(p.instruction, "nv-embed", "")) for p in PAIRS]
    assert lengths[0] > lengths[1]  # the instructions really differ in token length
    assert batch["query"]["prompt_length"].tolist() == lengths
    with torch.no_grad():
        q_train = model(dict(batch["query"], modality="text"))["sentence_embedding"]
    for i, pair in enumerate(PAIRS):
        torch.testing.assert_close(q_train[i], _alone(model, pair), atol=1e-5, rtol=1e-5)


def test_gradcache_chunks_carry_each_rows_prompt_length(tiny_bert) -> None:
    """GradCache cuts the batch into (length-sorted) chunks: the per-row lengths travel with their rows."""
    model = _model(tiny_bert, "mean")
    _, batch = _collate(model)
    feats = dict(batch["query"], modality="text")
    with torch.no_grad():
        whole = model(dict(feats))["sentence_embedding"]
        for size in (1, 2):
            plan = plan_chunks(feats, size, sort_by_length=True, trim_padding=True)
            assert plan.order is not None and plan.order.tolist() != [0, 1, 2]  # really reordered
            chunked = plan.unpermute(torch.cat([model(dict(c))["sentence_embedding"] for c in plan.chunks]))
            torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_sentence_transformers_pooling_is_swapped_for_an_equivalent_per_row_one(tiny_bert, tmp_path) -> None:
    """sentence-transformers' ``Pooling`` reads one prompt length per batch (``prompt_length[0]``); the swap puts
    embedkit's equivalent ``Pooling`` in its place, which gives the same embeddings for one shared prompt."""
    plain = load_model(tiny_bert, pooling="mean", exclude_prompt=True, max_seq_length=64,
                       prompts={"style": "nv-embed", "instruction": LONG})
    assert isinstance(plain[1], STPooling) and not reads_per_row_prompt_length(plain[1])
    texts = ["list files in a folder", "compress"]
    before = encode(plain, texts, role="query", output="torch")
    assert enable_per_row_prompt_lengths(plain)
    assert isinstance(plain[1], Pooling) and plain[1].exclude_prompt and reads_per_row_prompt_length(plain[1])
    torch.testing.assert_close(encode(plain, texts, role="query", output="torch"), before, atol=1e-6, rtol=1e-6)
    assert enable_per_row_prompt_lengths(plain) and isinstance(plain[1], Pooling)  # idempotent
    plain.save(str(tmp_path / "swapped"))  # and it saves and reloads as embedkit's pooling
    again = load_model(str(tmp_path / "swapped"))
    assert isinstance(again[1], Pooling) and again[1].exclude_prompt
    torch.testing.assert_close(encode(again, texts, role="query", output="torch"), before, atol=1e-6, rtol=1e-6)
    # modules that ignore the prompt, or already read it per row, are left alone
    assert reads_per_row_prompt_length(STPooling(8, pooling_mode="mean", include_prompt=True))
    assert reads_per_row_prompt_length(LatentAttentionPooling(8, num_latents=2, num_heads=2, exclude_prompt=True))


def test_a_prompt_length_per_row_of_the_wrong_size_is_refused() -> None:
    h, m = torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="prompt_length"):
        Pooling(8, "mean", exclude_prompt=True)({"token_embeddings": h, "attention_mask": m,
                                                  "prompt_length": torch.tensor([1, 2])})


def test_a_pooling_that_reads_one_length_gets_the_shortest_and_a_warning(tiny_bert, caplog) -> None:
    """sentence-transformers' ``cls`` after the prompt has no per-row equivalent: the model says so, and the
    collator (per-row off) passes the batch's shortest length -- never a row's own query tokens dropped."""
    model = load_model(tiny_bert, pooling="cls", exclude_prompt=True, max_seq_length=64,
                       prompts={"style": "nv-embed", "instruction": "Default task"})
    assert isinstance(model[1], STPooling) and not enable_per_row_prompt_lengths(model)
    with caplog.at_level("WARNING", logger="embedkit.training.collator"):
        col, batch = _collate(model, per_row=False)
        col([TrainExample(p, 0) for p in PAIRS])
    short = col.prompt_length(query_prompt_for(SHORT, "nv-embed", ""))
    assert batch["query"]["prompt_length"].tolist() == [short]
    assert sum("differ in token length" in r.getMessage() for r in caplog.records) == 1  # once per collator


@pytest.mark.parametrize("st_mode", ["mean", "lasttoken"])
def test_the_swapped_pooling_equals_sentence_transformers_for_one_shared_prompt(st_mode: str) -> None:
    torch.manual_seed(0)
    h = torch.randn(3, 6, 8)
    right = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    for mask in (right, right.flip(1)):  # right and left padding
        seq = torch.nn.Sequential(STPooling(8, pooling_mode=st_mode, include_prompt=False))
        feats = {"token_embeddings": h, "attention_mask": mask, "prompt_length": torch.tensor([2])}
        theirs = seq(dict(feats))["sentence_embedding"]
        assert enable_per_row_prompt_lengths(seq) and isinstance(seq[0], Pooling)
        torch.testing.assert_close(seq(dict(feats))["sentence_embedding"], theirs)
