"""Losses on embeddings: hand computations, masking / mixing properties, configs and error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embedkit.errors import ConfigError, InputError
from embedkit.losses import (
    CombinedLoss,
    EmbeddingBatch,
    FalseNegativeMasking,
    HardNegativeMixing,
    InfoNCELoss,
    ListwiseDistillationLoss,
    LossConfig,
    build_loss,
    hash_texts,
    make_batch,
)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(sum(float(x) * float(y) for x, y in zip(a, b)))


def hand_nll(scores: list[float], label: int, t: float) -> float:
    """-log softmax(scores / t)[label], written with math only."""
    exps = [math.exp(s / t) for s in scores]
    return -math.log(exps[label] / sum(exps))


# ---------------------------------------------------------------------------------------------------- InfoNCE


@pytest.mark.parametrize("in_batch", [True, False])
@pytest.mark.parametrize("use_hard", [True, False])
def test_infonce_equals_hand_computation(in_batch: bool, use_hard: bool) -> None:
    b, k, t = 3, 3, 0.1
    q, d = unit(b, 8, seed=1), unit(b * k, 8, seed=2)
    batch = make_batch(q, d, k, in_batch_negatives=in_batch)
    loss, stats = InfoNCELoss(temperature=t, use_hard_negatives=use_hard)(batch)
    expected = 0.0
    for i in range(b):
        if in_batch:
            cols = [r * k + j for r in range(b) for j in (range(k) if use_hard else [0])]
            label = cols.index(i * k)
        else:
            cols = [i * k + j for j in (range(k) if use_hard else [0])]
            label = 0
        expected += hand_nll([dot(q[i], d[c]) for c in cols], label, t)
    assert loss.item() == pytest.approx(expected / b, rel=1e-5)
    assert stats["loss"] == pytest.approx(expected / b, rel=1e-5)


def test_infonce_symmetric_equals_hand_computation() -> None:
    b, k, t = 4, 2, 0.05
    q, d = unit(b, 8, seed=3), unit(b * k, 8, seed=4)
    loss, stats = InfoNCELoss(temperature=t, symmetric=True)(make_batch(q, d, k))
    qd = sum(hand_nll([dot(q[i], d[c]) for c in range(b * k)], i * k, t) for i in range(b)) / b
    dq = sum(hand_nll([dot(d[i * k], q[j]) for j in range(b)], i, t) for i in range(b)) / b
    assert loss.item() == pytest.approx((qd + dq) / 2, rel=1e-5)
    assert stats["loss_qd"] == pytest.approx(qd, rel=1e-5)
    assert stats["loss_dq"] == pytest.approx(dq, rel=1e-5)


def test_infonce_ragged_rows_ignore_padding() -> None:
    counts = [3, 1, 2]
    q, d = unit(3, 8, seed=5), unit(sum(counts), 8, seed=6)
    batch = make_batch(q, d, counts)
    assert batch.doc_mask is not None and batch.doc_mask.sum().item() == sum(counts)
    loss, _ = InfoNCELoss(temperature=0.1)(batch)
    starts = [0, 3, 4]
    expected = sum(hand_nll([dot(q[i], d[c]) for c in range(sum(counts))], starts[i], 0.1) for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_focal_gamma_zero_is_plain_and_gamma_reweights_by_hardness() -> None:
    q, d = unit(6, 16, seed=7), unit(12, 16, seed=8)
    batch = make_batch(q, d, 2)
    plain, _ = InfoNCELoss(temperature=0.05)(batch)
    zero, _ = InfoNCELoss(temperature=0.05, focal_gamma=0.0)(batch)
    assert torch.equal(plain, zero)
    gamma = 2.0
    focal, _ = InfoNCELoss(temperature=0.05, focal_gamma=gamma)(batch)
    expected = 0.0
    for i in range(6):
        nll = hand_nll([dot(q[i], d[c]) for c in range(12)], 2 * i, 0.05)
        expected += (1 - math.exp(-nll)) ** gamma * nll
    assert focal.item() == pytest.approx(expected / 6, rel=1e-5)
    assert focal.item() < plain.item()
    # an easy query (positive == query) is down-weighted far more than a hard one
    q2 = q.clone()
    q2[0] = d[0]
    per_gamma = [InfoNCELoss(temperature=0.05, focal_gamma=g)(make_batch(q2, d, 2))[0].item() for g in (0.0, 2.0)]
    assert per_gamma[1] < per_gamma[0]


def test_local_rows_split_the_mean() -> None:
    q, d = unit(5, 8, seed=9), unit(10, 8, seed=10)
    loss_fn = InfoNCELoss(temperature=0.05, symmetric=True)
    full, _ = loss_fn(make_batch(q, d, 2))
    b = make_batch(q, d, 2)
    a, _ = loss_fn(b.with_local_rows(slice(0, 2)))
    c, _ = loss_fn(b.with_local_rows(slice(2, 5)))
    assert full.item() == pytest.approx((2 * a.item() + 3 * c.item()) / 5, rel=1e-6)


# ---------------------------------------------------------------------------------------------------- masking


def planted_batch() -> tuple[EmbeddingBatch, set[tuple[int, int]]]:
    """4 queries x (positive + 2 negatives) in 64-d; random vectors are nearly orthogonal, positives at cos 0.8.

    Planted: row 2's negative 1 is almost row 0's positive (a semantic false negative for query 0),
    row 1's negative 2 has row 3's positive's text (a text duplicate, yet dissimilar vectors), and
    row 0's positive is duplicated verbatim as row 1's positive text (both directions masked).
    """
    b, k, dim = 4, 3, 64
    base = unit(b * 3, dim, seed=11)
    q = base[:b].clone()
    noise = unit(b, dim, seed=12)
    pos = F.normalize(0.8 * q + 0.6 * F.normalize(noise - (noise * q).sum(-1, keepdim=True) * q, dim=-1), dim=-1)
    negs = unit(b * 2, dim, seed=13)
    docs = torch.zeros(b, k, dim)
    docs[:, 0] = pos
    docs[:, 1:] = negs.reshape(b, 2, dim)
    docs[2, 1] = F.normalize(pos[0] + 0.05 * unit(dim, seed=14), dim=-1)
    texts = [[f"pos {i}", f"neg {i} a", f"neg {i} b"] for i in range(b)]
    texts[1][2] = "POS  3"  # same normalised text as row 3's positive
    texts[1][0] = "Pos 0"  # row 1's positive duplicates row 0's positive text
    hashes = hash_texts([t for row in texts for t in row]).reshape(b, k)
    batch = EmbeddingBatch(q=q, docs=docs, doc_hash=hashes)
    # expected masked (query row, flat column): col = row*k + slot
    expected = {(0, 2 * k + 1), (3, 1 * k + 2), (0, 1 * k + 0), (1, 0 * k + 0)}
    return batch, expected


def test_masking_removes_exactly_the_planted_false_negatives() -> None:
    batch, expected = planted_batch()
    b, k = 4, 3
    flat = batch.docs.reshape(b * k, -1)
    scores = batch.q @ flat.T
    labels = torch.arange(b) * k
    found = FalseNegativeMasking(margin=-0.1).find(
        scores, labels, col_hash=batch.doc_hash.reshape(-1), pos_hash=batch.doc_hash[:, 0]
    )
    got = {(int(i), int(j)) for i, j in found.nonzero().tolist()}
    assert got == expected
    loss, stats = InfoNCELoss(temperature=0.5, masking=FalseNegativeMasking(margin=-0.1))(batch)
    assert stats["masked_false_negatives"] == len(expected)
    hand = 0.0
    for i in range(b):
        cols = [c for c in range(b * k) if (i, c) not in expected]
        hand += hand_nll([dot(batch.q[i], flat[c]) for c in cols], cols.index(i * k), 0.5)
    assert loss.item() == pytest.approx(hand / b, rel=1e-5)
    # document->query direction: rows 0 and 1 share the positive text, so each masks the other's query
    _, sym = InfoNCELoss(temperature=0.5, symmetric=True, masking=FalseNegativeMasking(margin=-0.1))(batch)
    assert sym["masked_false_negatives"] == len(expected) and sym["masked_false_negatives_dq"] == 2
    # without masking the loss is larger: the planted near-duplicate competes with the positive
    unmasked, _ = InfoNCELoss(temperature=0.5)(batch)
    assert unmasked.item() > loss.item() + 0.1


def test_masking_rules_one_at_a_time() -> None:
    batch, _ = planted_batch()
    b, k = 4, 3
    scores = batch.q @ batch.docs.reshape(b * k, -1).T
    labels = torch.arange(b) * k
    sim_only = FalseNegativeMasking(margin=-0.1, mask_duplicates=False).find(scores, labels)
    assert {tuple(x) for x in sim_only.nonzero().tolist()} == {(0, 7)}
    ratio_only = FalseNegativeMasking(margin=None, ratio=0.95, mask_duplicates=False).find(scores, labels)
    assert {tuple(x) for x in ratio_only.nonzero().tolist()} == {(0, 7)}
    # a hugely negative margin masks every valid negative, never the positive nor padding
    valid = torch.ones_like(scores, dtype=torch.bool)
    valid[:, -1] = False
    everything = FalseNegativeMasking(margin=-2.0, mask_duplicates=False).find(scores, labels, valid)
    assert everything.sum().item() == b * (b * k - 2)
    assert not everything[torch.arange(b), labels].any()


def test_masking_margin_rule_hand_check() -> None:
    scores = torch.tensor([[0.50, 0.65, 0.59, 0.45], [0.20, 0.90, 0.19, 0.18]])
    labels = torch.tensor([0, 1])
    # default margin 0.1: only negatives scoring more than 0.1 above the positive (row 0: > 0.60 -> col 1)
    got = FalseNegativeMasking(margin=0.1, mask_duplicates=False).find(scores, labels)
    assert got.tolist() == [[False, True, False, False], [False, False, False, False]]
    # a negative margin reaches below the positive (row 0: > 0.40 -> cols 1, 2, 3)
    low = FalseNegativeMasking(margin=-0.1, mask_duplicates=False).find(scores, labels)
    assert low.tolist() == [[False, True, True, True], [False, False, False, False]]


def test_masking_ratio_rule_hand_check() -> None:
    scores = torch.tensor([[0.50, 0.49, 0.47, 0.10], [0.20, 0.90, 0.19, 0.18]])
    labels = torch.tensor([0, 1])
    got = FalseNegativeMasking(margin=None, ratio=0.95, mask_duplicates=False).find(scores, labels)
    # row 0: > 0.475 -> col 1 only; row 1: > 0.855 -> nothing
    assert got.tolist() == [[False, True, False, False], [False, False, False, False]]


# ---------------------------------------------------------------------------------------------------- mixing


def test_mixed_negatives_are_unit_norm_convex_mixes_of_the_hardest() -> None:
    b, c, dim, hk = 5, 12, 32, 4
    q, cand = unit(b, dim, seed=20), unit(c, dim, seed=21)
    scores = q @ cand.T
    labels = torch.tensor([0, 1, 2, 3, 4])
    valid = torch.ones(b, c, dtype=torch.bool)
    valid[1, 5:] = False  # row 1 has few candidates
    mix = HardNegativeMixing(num_mixed=6, hardest_k=hk, mix_query=True, num_query_mixed=5, alpha_max=0.4, seed=3)
    res = mix.mix(q, cand, scores, labels, valid)
    assert res.emb.shape == (b, 11, dim) and not res.emb.requires_grad
    assert torch.allclose(res.emb.norm(dim=-1), torch.ones(b, 11), atol=1e-6)
    assert res.valid.all()
    for i in range(b):
        s = scores[i].clone()
        s[~valid[i]] = -math.inf
        s[labels[i]] = -math.inf
        hardest = set(s.topk(hk).indices.tolist())
        for m in range(11):
            first, second = res.src[i, m].tolist()
            assert second in hardest
            a_vec = q[i] if first == -1 else cand[first]
            if first != -1:
                assert first in hardest and first != second
            # reconstruct h = c1 * a + c2 * b by least squares: exact, both coefficients positive
            basis = torch.stack([a_vec, cand[second]], dim=1).double()
            coef = torch.linalg.lstsq(basis, res.emb[i, m].double().unsqueeze(1)).solution.squeeze(1)
            assert torch.allclose(basis @ coef, res.emb[i, m].double(), atol=1e-5)
            assert (coef > 0).all()
            w = float(coef[0] / coef.sum())
            assert w == pytest.approx(float(res.weight[i, m]), abs=1e-4)
            if first == -1:
                assert w < 0.4  # query weight below alpha_max: the mix stays a negative
                assert dot(res.emb[i, m], cand[second]) > dot(res.emb[i, m], q[i])


def test_mixing_skips_rows_without_enough_negatives() -> None:
    q, cand = unit(2, 8, seed=22), unit(4, 8, seed=23)
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    res = HardNegativeMixing(num_mixed=3, hardest_k=4, mix_query=True, num_query_mixed=2).mix(q, cand, q @ cand.T,
                                                                            torch.tensor([0, 1]), valid)
    # row 0: only one negative (col 1) -> no negative-negative mix, query mixes use col 1
    assert res.valid[0].tolist() == [False] * 3 + [True] * 2
    assert res.src[0, 3:, 1].tolist() == [1, 1]
    assert res.valid[1].all()


def test_mixing_is_deterministic_per_step_and_per_global_row() -> None:
    q, cand = unit(6, 16, seed=24), unit(18, 16, seed=25)
    scores, labels = q @ cand.T, torch.arange(6) * 3
    mix = HardNegativeMixing(num_mixed=4, hardest_k=5, mix_query=True, seed=7)
    r0 = mix.mix(q, cand, scores, labels)
    r1 = mix.mix(q, cand, scores, labels)
    assert mix.step == 2
    assert not torch.equal(r0.emb, r1.emb)
    mix.load_state_dict({"_extra_state": {"step": 0, "seed": 7}})  # resume: same draws again
    assert torch.equal(mix.mix(q, cand, scores, labels).emb, r0.emb)
    # rows 3..5 computed alone (as rank 1 of 2 would) draw exactly what the full batch drew for them
    mix.step = 0
    part = mix.mix(q[3:], cand, scores[3:], labels[3:], row_ids=torch.arange(3, 6), total_rows=6)
    assert torch.equal(part.emb, r0.emb[3:])


def test_mixing_adds_detached_logits_to_infonce() -> None:
    q = unit(4, 16, seed=26).requires_grad_()
    d = unit(12, 16, seed=27).requires_grad_()
    t = 0.05
    mix = HardNegativeMixing(num_mixed=3, hardest_k=4, mix_query=True, num_query_mixed=2, seed=1)
    loss, stats = InfoNCELoss(temperature=t, mixing=mix)(make_batch(q, d, 3))
    assert stats["mixed_negatives"] == 4 * 5
    loss.backward()
    # hand version: the same synthetic negatives as constants appended to the logits
    mix.step = 0
    res = mix.mix(q.detach(), d.detach(), (q @ d.T).detach(), torch.arange(4) * 3)
    q2, d2 = q.detach().clone().requires_grad_(), d.detach().clone().requires_grad_()
    logits = torch.cat([q2 @ d2.T, torch.einsum("bd,bmd->bm", q2, res.emb)], dim=1) / t
    ref = F.cross_entropy(logits, torch.arange(4) * 3)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(q.grad, q2.grad, atol=1e-6) and torch.allclose(d.grad, d2.grad, atol=1e-6)
    plain, _ = InfoNCELoss(temperature=t)(make_batch(q.detach(), d.detach(), 3))
    assert loss.item() > plain.item()  # extra (hard) negatives only add to the partition function


# ---------------------------------------------------------------------------------------------------- listwise


def test_listwise_equals_hand_kl_with_ragged_rows_and_unknown_scores() -> None:
    counts = [3, 2, 4]
    q, d = unit(3, 8, seed=30), unit(sum(counts), 8, seed=31)
    teacher = torch.tensor([5.0, 2.0, 1.0, 3.0, 3.5, 4.0, float("nan"), 0.5, -1.0])
    t, tt = 0.1, 2.0
    loss, stats = ListwiseDistillationLoss(temperature=t, teacher_temperature=tt)(
        make_batch(q, d, counts, teacher_scores=teacher)
    )
    expected, start = 0.0, 0
    for i, n in enumerate(counts):
        idx = [start + j for j in range(n) if not math.isnan(float(teacher[start + j]))]
        ts = [math.exp(float(teacher[c]) / tt) for c in idx]
        ss = [math.exp(dot(q[i], d[c]) / t) for c in idx]
        pt = [x / sum(ts) for x in ts]
        ps = [x / sum(ss) for x in ss]
        expected += sum(a * math.log(a / b) for a, b in zip(pt, ps))
        start += n
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)
    assert 0.0 <= stats["teacher_top1_agreement"] <= 1.0


def test_listwise_is_zero_when_student_matches_teacher() -> None:
    q, d = unit(2, 8, seed=32), unit(6, 8, seed=33)
    batch = make_batch(q, d, 3)
    student = torch.einsum("bd,bkd->bk", batch.q, batch.docs)
    batch.teacher_scores = student * (2.0 / 0.05)  # same distribution after the two temperatures
    loss, stats = ListwiseDistillationLoss(temperature=0.05, teacher_temperature=2.0)(batch)
    assert abs(loss.item()) < 1e-5 and stats["teacher_top1_agreement"] == 1.0


def test_combined_loss_is_the_weighted_sum_with_merged_stats() -> None:
    q, d = unit(3, 8, seed=34), unit(9, 8, seed=35)
    batch = make_batch(q, d, 3, teacher_scores=torch.randn(9, generator=torch.Generator().manual_seed(0)),
                       doc_hash=hash_texts([f"t{i}" for i in range(9)]))
    nce = InfoNCELoss(temperature=0.05, masking=FalseNegativeMasking(margin=0.0))
    kd = ListwiseDistillationLoss()
    total, stats = CombinedLoss({"infonce": (nce, 1.0), "kd": (kd, 0.3)})(batch)
    a, sa = nce(batch)
    b, _ = kd(batch)
    assert total.item() == pytest.approx(a.item() + 0.3 * b.item(), rel=1e-6)
    assert stats["loss"] == pytest.approx(total.item(), rel=1e-6)
    assert stats["masked_false_negatives"] == sa["masked_false_negatives"]
    assert {"infonce/loss", "kd/loss", "kd/teacher_top1_agreement"} <= set(stats)


# ---------------------------------------------------------------------------------------------------- configs, errors


def test_build_loss_from_config() -> None:
    loss = build_loss({"infonce": {"temperature": 0.02, "symmetric": True, "mixing": {"num_mixed": 2},
                                   "masking": {"margin": None, "ratio": 0.95}}})
    assert isinstance(loss, InfoNCELoss) and loss.temperature == 0.02 and loss.symmetric
    assert loss.mixing is not None and loss.mixing.num_mixed == 2
    assert loss.mixing.num_query_mixed == 0  # query-negative mixes are opt-in (they hurt in the quality ablation)
    assert loss.masking is not None and loss.masking.ratio == 0.95
    combo = build_loss(LossConfig.model_validate({"listwise": {"weight": 0.5}}))
    assert isinstance(combo, CombinedLoss) and set(combo.losses) == {"infonce", "listwise"}
    assert LossConfig.model_validate({"listwise": {}}).needs_teacher_scores
    with pytest.raises(Exception, match="temperature"):
        LossConfig.model_validate({"infonce": {"temperature": 0}})
    with pytest.raises(Exception, match="tau"):
        LossConfig.model_validate({"infonce": {"tau": 0.1}})
    with pytest.raises(Exception, match="at least one"):
        LossConfig.model_validate({"infonce": None})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: InfoNCELoss(temperature=0.0),
         "invalid value for 'losses.infonce.temperature': must be > 0.0 (got 0.0)"),
        (lambda: InfoNCELoss(focal_gamma=-1),
         "invalid value for 'losses.infonce.focal_gamma': must be >= 0.0 (got -1)"),
        (lambda: HardNegativeMixing(alpha_max=0.7),
         "invalid value for 'losses.infonce.mixing.alpha_max': must be <= 0.5 (got 0.7)"),
        (lambda: FalseNegativeMasking(margin=3.0),
         "invalid value for 'losses.infonce.masking.margin': must be <= 2.0 (got 3.0)"),
        (lambda: FalseNegativeMasking(margin=None, ratio=None, mask_duplicates=False),
         "losses.infonce.masking: masking has no rule left"),
        (lambda: ListwiseDistillationLoss(teacher_temperature=0),
         "invalid value for 'losses.listwise.teacher_temperature': must be > 0.0 (got 0)"),
        (lambda: CombinedLoss({}), "losses: no loss components given"),
    ],
)
def test_config_errors_are_one_line_and_name_the_recipe_key(make, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        make()
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


@pytest.mark.parametrize(("key", "bad"), [("infonce.temperature", 0.0), ("infonce.temperature", -1.0),
                                          ("infonce.focal_gamma", -0.5), ("infonce.masking.margin", 2.5),
                                          ("infonce.masking.margin", -2.5), ("infonce.masking.ratio", 0.0),
                                          ("infonce.masking.ratio", 2.5), ("infonce.mixing.num_mixed", -1),
                                          ("infonce.mixing.num_query_mixed", -1), ("infonce.mixing.hardest_k", 0),
                                          ("infonce.mixing.alpha_max", 0.0), ("infonce.mixing.alpha_max", 0.6),
                                          ("listwise.temperature", 0.0), ("listwise.teacher_temperature", -1.0)])
def test_a_loss_class_and_the_recipe_refuse_the_same_values_in_the_same_words(key: str, bad: float) -> None:
    """The bounds are stated once (losses/config.py): the class and the recipe section give one message."""
    from embedkit.losses.config import InfoNCEConfig, ListwiseConfig, MaskingConfig, MixingConfig
    from embedkit.training.config import parse_recipe

    *section, name = key.split(".")
    data: dict = {}
    cur = data
    for part in section:
        cur = cur.setdefault(part, {})
    cur[name] = bad
    with pytest.raises(ConfigError) as from_recipe:
        parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}, "losses": data})
    model = {"infonce": InfoNCEConfig, "infonce.masking": MaskingConfig, "infonce.mixing": MixingConfig,
             "listwise": ListwiseConfig}[".".join(section)]
    make = {InfoNCEConfig: InfoNCELoss, MaskingConfig: FalseNegativeMasking, MixingConfig: HardNegativeMixing,
            ListwiseConfig: ListwiseDistillationLoss}[model]
    with pytest.raises(ConfigError) as from_class:
        make(**{name: bad})
    assert from_recipe.value.message == from_class.value.message
    assert f"'losses.{key}'" in from_class.value.message


def test_masking_with_no_rule_is_refused_by_the_recipe_before_anything_loads() -> None:
    from embedkit.training.config import parse_recipe

    masking = {"margin": None, "ratio": None, "mask_duplicates": False}
    with pytest.raises(ConfigError, match=r"'losses\.infonce\.masking': masking has no rule left"):
        parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}, "losses": {"infonce": {"masking": masking}}})


def test_batch_errors_name_the_field() -> None:
    q, d = unit(2, 8), unit(6, 8)
    with pytest.raises(InputError, match=r"^EmbeddingBatch.docs: docs must be"):
        EmbeddingBatch(q=q, docs=d.reshape(3, 2, 8))
    with pytest.raises(InputError, match=r"^make_batch.docs_per_query: 6 documents cannot be split into rows of 4"):
        make_batch(q, d, 4)
    with pytest.raises(InputError, match=r"^make_batch.docs_per_query: per-row document counts"):
        make_batch(q, d, [3, 2])
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 0] = False
    with pytest.raises(InputError, match="every row needs a positive"):
        EmbeddingBatch(q=q, docs=d.reshape(2, 3, 8), doc_mask=mask)
    with pytest.raises(ConfigError, match=r"^losses.listwise: listwise distillation needs teacher scores"):
        ListwiseDistillationLoss()(make_batch(q, d, 3))


def test_hash_texts_normalises_case_space_and_unicode() -> None:
    h = hash_texts(["Caf\u00e9  au lait", "café au LAIT", "cafe au lait", "\uff21BC", "abc"])
    assert h.dtype == torch.int64
    assert h[0] == h[1] and h[0] != h[2]
    assert h[3] == h[4]  # NFKC folds the full-width letter
    assert torch.equal(hash_texts(["x"]), hash_texts(["x"]))


def test_one_text_normalisation_for_the_loss_and_the_miner() -> None:
    """The loss's text hashes and the miner's duplicate filter share one function (embedkit.data.normalize)."""
    from embedkit.data.normalize import normalize_text as shared
    from embedkit.losses import normalize_text as loss_norm
    from embedkit.mining import normalize_text as miner_norm

    assert loss_norm is shared and miner_norm is shared
    for text in ["\uff21BC  d\u00e9f", "\u1fb7 \u01f0", "Stra\u00dfe\u200b", "\ufeffx\u00ady", "plain ascii  Text"]:
        once = shared(text)
        assert shared(once) == once  # idempotent: normalised text stays normalised (NFKC again after casefold)
    assert shared("\u1fb7") == shared("\u1fb6\u03b9")  # Greek with ypogegrammeni folds to the composed form
    assert shared("  Mixed\tCASE \n") == "mixed case"
    h = hash_texts(["x\u200by", "xy", "x.y"])
    assert h[0] == h[1] != h[2]  # invisible format characters dropped, punctuation kept
