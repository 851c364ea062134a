"""GradCache gives the uncached parameter gradients (dropout on, LoRA, latent attention) and syncs once."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

import embedkit
from embedkit.errors import ConfigError
from embedkit.losses import (
    CombinedLoss,
    FalseNegativeMasking,
    HardNegativeMixing,
    InfoNCELoss,
    ListwiseDistillationLoss,
    MarginMSELoss,
    build_loss,
    hash_texts,
    make_batch,
)
from embedkit.models import load_model
from embedkit.models.config import LoraConfig
from embedkit.training import gradcache as gc_mod
from embedkit.training.gradcache import GradCache, compute_loss_uncached, plan_chunks, split_features

TOL = 1e-5
B, K, CHUNK = 6, 3, 4  # 6 queries x (positive + 2 negatives) = 18 documents; chunks of 4 leave remainders

QUERIES = [f"how do I {v} a {n}" for v, n in zip(["copy", "move", "list", "delete", "compress", "find"],
                                                   ["file", "folder", "process", "user", "archive", "package"])]
DOCS = [f"{w} text number {i} about {QUERIES[i // K].split()[-1]}" for i, w in
        enumerate(["cp copies", "mv moves", "ls lists"] * B)]
DOCS[7] = DOCS[0].upper()  # a text duplicate of row 0's positive inside row 2's negatives (hash masking)


pytestmark = pytest.mark.usefixtures("one_thread")


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def build(q: torch.Tensor, d: torch.Tensor):
    g = torch.Generator().manual_seed(0)
    return make_batch(q, d, K, doc_hash=hash_texts(DOCS), teacher_scores=torch.randn(len(DOCS), generator=g))


def losses() -> dict[str, object]:
    return {
        "infonce_symmetric_focal": lambda: InfoNCELoss(temperature=0.05, symmetric=True, focal_gamma=1.0),
        "listwise": lambda: ListwiseDistillationLoss(temperature=0.05, teacher_temperature=0.5),
        "combined_mixing_masking": lambda: CombinedLoss({
            "infonce": (InfoNCELoss(temperature=0.05,
                                    mixing=HardNegativeMixing(num_mixed=4, hardest_k=6, mix_query=True, seed=1),
                                    masking=FalseNegativeMasking(margin=None, mask_duplicates=True)), 1.0),
            "kd": (ListwiseDistillationLoss(), 0.5),
        }),
    }


def reset(loss_fn: torch.nn.Module) -> None:
    for m in loss_fn.modules():
        if isinstance(m, HardNegativeMixing):
            m.step = 0


def run_both(model, loss_fn, *, chunk_size=CHUNK, ref_chunk=CHUNK, seed=123, reuse_chunk_graph=True, **chunking):
    """(uncached grads, cached grads, uncached stats, cached stats) from the same RNG start."""
    qf, df = model.preprocess(QUERIES), model.preprocess(DOCS)
    model.zero_grad(set_to_none=True)
    reset(loss_fn)
    torch.manual_seed(seed)
    loss, s_ref = compute_loss_uncached(model, loss_fn, qf, df, build, chunk_size=ref_chunk, **chunking)
    loss.backward()
    g_ref = grads(model)
    model.zero_grad(set_to_none=True)
    reset(loss_fn)
    torch.manual_seed(seed)
    loss_c, s_gc = GradCache(model, loss_fn, chunk_size=chunk_size, reuse_chunk_graph=reuse_chunk_graph,
                             **chunking).forward_backward(qf, df, build)
    g_gc = grads(model)
    model.zero_grad(set_to_none=True)
    assert loss_c.item() == pytest.approx(loss.item(), rel=1e-5)
    return g_ref, g_gc, s_ref, s_gc


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b) and a
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def dropout_model(tiny_bert: str):
    model = load_model(tiny_bert)
    cfg = model[0].model.config
    assert cfg.hidden_dropout_prob > 0 and cfg.attention_probs_dropout_prob > 0
    model.train()
    return model


def test_dropout_is_really_on(dropout_model) -> None:
    feats = dropout_model.preprocess(QUERIES)
    a = dropout_model(dict(feats))["sentence_embedding"]
    b = dropout_model(dict(feats))["sentence_embedding"]
    assert (a - b).abs().max().item() > 1e-3


@pytest.mark.parametrize("name", list(losses()))
def test_gradcache_equals_uncached_with_dropout(dropout_model, name: str) -> None:
    loss_fn = losses()[name]()
    g_ref, g_gc, s_ref, s_gc = run_both(dropout_model, loss_fn)
    assert max_diff(g_ref, g_gc) <= TOL
    assert max(g.abs().max().item() for g in g_ref.values()) > 1e-3  # the gradients are not trivially zero
    assert s_ref.keys() == s_gc.keys()
    if "masked_false_negatives" in s_ref:
        assert s_ref["masked_false_negatives"] == s_gc["masked_false_negatives"] == 1.0  # the planted duplicate
        assert s_gc["mixed_negatives"] > 0


#: teacher scores per row (positive, negative, negative): with teacher_mask_ratio 0.8 each row's first negative
#: scores above 0.8 x its positive and is masked, its second is kept -- B masked candidates in all
DISTILL_TEACHER = [0.9, 0.8, 0.1, 0.7, 0.65, 0.3, 0.95, 0.9, 0.5, 0.6, 0.55, 0.2, 0.8, 0.75, 0.05, 0.85, 0.7, 0.6]


def distill_build(q: torch.Tensor, d: torch.Tensor):
    return make_batch(q, d, K, doc_hash=hash_texts(DOCS), teacher_scores=torch.tensor(DISTILL_TEACHER))


DISTILL_LOSSES = {
    "infonce_teacher_mask": lambda: InfoNCELoss(temperature=0.05, teacher_mask_ratio=0.8, symmetric=True),
    "margin_mse": lambda: MarginMSELoss(scale=2.0),
    "tamber_listwise_plus_masked_infonce": lambda: build_loss(
        {"listwise": {"weight": 1.0, "temperature": 0.05, "teacher_temperature": 0.3},
         "infonce": {"weight": 0.1, "teacher_mask_ratio": 0.8}, "margin_mse": {"weight": 0.5}}),
}


@pytest.mark.parametrize("name", list(DISTILL_LOSSES))
def test_gradcache_equals_uncached_for_distillation_losses(dropout_model, monkeypatch: pytest.MonkeyPatch,
                                                           name: str) -> None:
    monkeypatch.setitem(globals(), "build", distill_build)  # run_both builds its batches with the module's build
    g_ref, g_gc, s_ref, s_gc = run_both(dropout_model, DISTILL_LOSSES[name]())
    assert max_diff(g_ref, g_gc) <= TOL
    assert max(g.abs().max().item() for g in g_ref.values()) > 1e-3
    assert s_ref.keys() == s_gc.keys()
    if name != "margin_mse":  # the planted teacher false negatives are masked alike in both runs
        assert s_ref["teacher_masked_negatives"] == s_gc["teacher_masked_negatives"] == B
    if name != "infonce_teacher_mask":  # every (query, negative) triple has a teacher margin
        assert s_ref["pairs"] == s_gc["pairs"] == B * (K - 1)


def test_textbook_chunking_without_sorting_or_trimming(dropout_model) -> None:
    g_ref, g_gc, _, _ = run_both(dropout_model, losses()["combined_mixing_masking"](),
                                 sort_by_length=False, trim_padding=False, reuse_chunk_graph=False)
    assert max_diff(g_ref, g_gc) <= TOL


@pytest.mark.parametrize("chunk_size", [1, CHUNK, 64])
def test_reusing_the_costliest_chunk_graph_gives_the_textbook_gradient(dropout_model, chunk_size: int) -> None:
    loss_fn = losses()["combined_mixing_masking"]()
    _, g_reuse, _, _ = run_both(dropout_model, loss_fn, chunk_size=chunk_size, ref_chunk=chunk_size)
    _, g_text, _, _ = run_both(dropout_model, loss_fn, chunk_size=chunk_size, ref_chunk=chunk_size,
                               reuse_chunk_graph=False)
    assert max_diff(g_reuse, g_text) <= TOL


def test_costliest_chunk_is_the_one_with_most_padded_tokens(tiny_bert: str) -> None:
    model = load_model(tiny_bert)
    chunks = plan_chunks(model.preprocess(["a b c d e f g h i j k l", "x", "y", "z y"]), 2).chunks
    assert [c["attention_mask"].numel() for c in chunks][0] > chunks[1]["attention_mask"].numel()
    assert GradCache._costliest(chunks) == 0
    same = plan_chunks(model.preprocess(["x", "y", "z", "w"]), 2, sort_by_length=False).chunks
    assert GradCache._costliest(same) == 1  # ties: the later chunk


def test_plan_chunks_sorts_trims_and_maps_rows_back(tiny_bert: str) -> None:
    model = load_model(tiny_bert)
    model.eval()
    texts = ["a", "a much longer text with many more words in it than the others", "mid size text here",
             "b", "another fairly long sentence for the test", "c d"]
    feats = model.preprocess(texts)
    lengths = feats["attention_mask"].sum(1)
    plan = plan_chunks(feats, 2)
    assert plan.order is not None and sorted(plan.order.tolist()) == list(range(6))
    assert lengths[plan.order].tolist() == sorted(lengths.tolist(), reverse=True)
    widths = [c["input_ids"].shape[1] for c in plan.chunks]
    assert widths[0] == feats["input_ids"].shape[1] and widths[-1] < widths[0]
    for c in plan.chunks:  # every chunk keeps exactly its longest row's width, and all its real tokens
        assert c["attention_mask"].sum(1).max().item() == c["input_ids"].shape[1]
        assert c["token_type_ids"].shape == c["input_ids"].shape
    assert int(sum(c["attention_mask"].sum() for c in plan.chunks)) == int(lengths.sum())
    with torch.no_grad():
        chunked = plan.unpermute(torch.cat([model(dict(c))["sentence_embedding"] for c in plan.chunks]))
        whole = model(dict(feats))["sentence_embedding"]
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert torch.equal(plan.permute(plan.unpermute(chunked)), chunked)


def test_rng_replay_is_what_makes_dropout_exact(dropout_model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_mod.RngState, "restore", lambda self: None)  # re-forward draws fresh dropout masks
    g_ref, g_gc, _, _ = run_both(dropout_model, InfoNCELoss(temperature=0.05))
    assert max_diff(g_ref, g_gc) > 1e-3


def test_gradcache_equals_single_full_batch_forward_without_dropout(tiny_bert: str) -> None:
    model = load_model(tiny_bert)
    model.eval()  # no dropout: chunking cannot change anything, compare with ONE full-batch forward
    g_ref, g_gc, _, _ = run_both(model, InfoNCELoss(temperature=0.05, symmetric=True), chunk_size=5, ref_chunk=None)
    assert max_diff(g_ref, g_gc) <= TOL


def test_gradcache_with_lora(tiny_bert: str) -> None:
    model = load_model(tiny_bert, lora=LoraConfig(r=4, alpha=8, dropout=0.1, target_modules=["query", "value"]))
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # peft starts B at zero, which would make every lora_A gradient zero
            torch.nn.init.normal_(p, std=0.1)
    model.train()
    g_ref, g_gc, _, _ = run_both(model, losses()["combined_mixing_masking"]())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(g_ref) == trainable and all("lora_" in n for n in trainable)
    assert max_diff(g_ref, g_gc) <= TOL
    assert min(g.abs().max().item() for g in g_ref.values()) > 0


def test_gradcache_with_latent_attention_pooling(tiny_bert: str) -> None:
    model = load_model(tiny_bert, pooling="latent_attention",
                       latent_attention={"num_latents": 8, "num_heads": 2, "mlp_ratio": 2})
    pool = model[1]
    torch.manual_seed(0)
    for layer in (pool.to_out, pool.mlp_out):  # zero-initialised residual branches: give them weight
        torch.nn.init.normal_(layer.weight, std=0.2)
    model.train()
    g_ref, g_gc, _, _ = run_both(model, InfoNCELoss(temperature=0.05, focal_gamma=0.5))
    assert any(k.startswith("1.") for k in g_ref) and "1.latents" in g_ref
    assert g_ref["1.latents"].abs().max().item() > 0
    assert max_diff(g_ref, g_gc) <= TOL


@pytest.mark.parametrize("reuse", [True, False])
def test_every_chunk_but_the_last_runs_in_no_sync(tiny_bert: str, reuse: bool) -> None:
    model = load_model(tiny_bert)
    model.eval()
    state = {"inside": False, "entered": 0}
    calls: list[tuple[bool, bool]] = []

    @contextlib.contextmanager
    def no_sync():
        state["entered"] += 1
        state["inside"] = True
        try:
            yield
        finally:
            state["inside"] = False

    def hook(module, args):
        calls.append((torch.is_grad_enabled(), state["inside"]))

    handle = model.register_forward_pre_hook(hook)
    try:
        GradCache(model, InfoNCELoss(), chunk_size=CHUNK, reuse_chunk_graph=reuse).forward_backward(
            model.preprocess(QUERIES), model.preprocess(DOCS), build, no_sync=no_sync
        )
    finally:
        handle.remove()
    n_chunks = -(-B // CHUNK) + -(-len(DOCS) // CHUNK)  # 2 + 5
    no_grad, with_grad = [c for c in calls if not c[0]], [c for c in calls if c[0]]
    # with reuse, the costliest chunk is encoded once (with a graph, inside no_sync until its backward is done)
    assert len(no_grad) == n_chunks - (1 if reuse else 0)
    assert len(with_grad) == n_chunks
    assert [inside for _, inside in with_grad] == [True] * (n_chunks - 1) + [False]
    assert state["entered"] == n_chunks - 1
    assert not state["inside"]


def test_loss_scale_scales_gradients(tiny_bert: str) -> None:
    model = load_model(tiny_bert)
    model.eval()
    qf, df = model.preprocess(QUERIES), model.preprocess(DOCS)
    gc = GradCache(model, InfoNCELoss(), chunk_size=CHUNK)
    l1, _ = gc.forward_backward(qf, df, build)
    g1 = grads(model)
    model.zero_grad(set_to_none=True)
    l2, _ = gc.forward_backward(qf, df, build, loss_scale=0.25)
    g2 = grads(model)
    assert l1.item() == pytest.approx(l2.item(), rel=1e-6)
    assert max(((g1[k] * 0.25) - g2[k]).abs().max().item() for k in g1) <= 1e-7


def test_split_features_keeps_non_batch_values() -> None:
    feats = {"input_ids": torch.arange(10).reshape(5, 2), "attention_mask": torch.ones(5, 2),
             "modality": "text", "prompt_length": torch.tensor(3)}
    chunks = split_features(feats, 2)
    assert [c["input_ids"].shape[0] for c in chunks] == [2, 2, 1]
    assert all(c["modality"] == "text" and int(c["prompt_length"]) == 3 for c in chunks)
    assert torch.equal(torch.cat([c["input_ids"] for c in chunks]), feats["input_ids"])


def test_gradcache_config_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        GradCache(torch.nn.Identity(), InfoNCELoss(), chunk_size=0)
    assert str(exc.value) == "training.gradcache.chunk_size: chunk_size must be >= 1, got 0"
    with pytest.raises(ConfigError, match="^GradCache.features: the features hold no batched tensor"):
        split_features({"modality": "text"}, 2)


@pytest.mark.slow
def test_real_minilm_gradcache_matches_and_trains_on_manpages() -> None:
    """Real model, real texts (the packaged man-pages sample): equal gradients, and a few steps lower the loss."""
    root = Path(embedkit.__file__).parent / "datasets" / "manpages"
    queries = {r["_id"]: r["text"] for r in map(json.loads, (root / "queries.jsonl").read_text().splitlines())}
    corpus = {r["_id"]: r["text"] for r in map(json.loads, (root / "corpus.jsonl").read_text().splitlines())}
    qrels = [line.split("\t")[:2] for line in (root / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    pairs = [(queries[q], corpus[d]) for q, d in qrels if q in queries and d in corpus][:8]
    model = load_model("minilm", max_seq_length=40)
    model.eval()
    qf = model.preprocess([q for q, _ in pairs])
    df = model.preprocess([d for _, d in pairs])
    loss_fn = InfoNCELoss(temperature=0.05, symmetric=True)

    def build1(q, d):
        return make_batch(q, d, 1)

    loss_ref, _ = compute_loss_uncached(model, loss_fn, qf, df, build1)
    loss_ref.backward()
    g_ref = grads(model)
    model.zero_grad(set_to_none=True)
    gc = GradCache(model, loss_fn, chunk_size=4)
    loss_gc, _ = gc.forward_backward(qf, df, build1)
    g_gc = grads(model)
    assert loss_gc.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    assert max_diff(g_ref, g_gc) <= TOL
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    first = loss_gc.item()
    for _ in range(2):
        opt.step()
        opt.zero_grad(set_to_none=True)
        last, _ = gc.forward_backward(qf, df, build1)
    assert last.item() < first
