"""Distillation losses as the literature uses them: teacher-aware InfoNCE masking (Tamber et al.), Margin-MSE
(Hofstätter et al.; GPL), the listwise defaults -- hand computations on tiny batches, configs and error messages."""

from __future__ import annotations

import math

import pytest
import torch

from embedkit.errors import ConfigError
from embedkit.losses import (
    CombinedLoss,
    InfoNCELoss,
    ListwiseDistillationLoss,
    LossConfig,
    MarginMSELoss,
    build_loss,
    make_batch,
)

NAN = float("nan")


from test_losses import dot, hand_nll, unit  # noqa: E402  (the hand-computation helpers of the loss tests)


def recipe(losses: dict):
    from embedkit.training.config import parse_recipe

    return parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}, "losses": losses})


# ------------------------------------------------------------------------------------- teacher-aware InfoNCE masking

#: 3 rows x (positive + 2 negatives); with ratio 0.8: row 0 masks its slot 1 (0.85 > 0.72), row 1 nothing
#: (positive's score unknown), row 2 its slot 2 (0.5 > 0.48) but not slot 1 (NaN)
TEACHER = [0.9, 0.85, 0.2, NAN, 0.99, 0.99, 0.6, NAN, 0.5]
MASKED_SLOTS = {(0, 1), (2, 2)}


@pytest.mark.parametrize("in_batch", [True, False])
def test_teacher_mask_removes_exactly_the_candidates_above_the_ratio(in_batch: bool) -> None:
    b, k, t, r = 3, 3, 0.1, 0.8
    q, d = unit(b, 8, seed=1), unit(b * k, 8, seed=2)
    batch = make_batch(q, d, k, teacher_scores=torch.tensor(TEACHER), in_batch_negatives=in_batch)
    loss, stats = InfoNCELoss(temperature=t, teacher_mask_ratio=r)(batch)
    expected = 0.0
    for i in range(b):
        own = [i * k + j for j in range(k) if (i, j) not in MASKED_SLOTS]
        cols = [c for c in range(b * k) if c // k != i] + own if in_batch else own
        cols = sorted(cols)  # another row's documents are never masked: they have no teacher score for query i
        expected += hand_nll([dot(q[i], d[c]) for c in cols], cols.index(i * k), t)
    assert loss.item() == pytest.approx(expected / b, rel=1e-5)
    assert stats["teacher_masked_negatives"] == len(MASKED_SLOTS)
    plain, _ = InfoNCELoss(temperature=t)(batch)
    assert plain.item() > loss.item()  # removing candidates only shrinks the denominator


def test_teacher_mask_uses_the_percpos_form_for_negative_scores_and_spares_padding() -> None:
    # raw-logit teacher: positive -2.0, ratio 0.5 -> threshold -2 - 0.5 * 2 = -3: -2.5 masked, -3.5 kept
    q, d = unit(2, 8, seed=3), unit(5, 8, seed=4)
    teacher = torch.tensor([-2.0, -2.5, -3.5, 1.0, 5.0])  # row 1: positive + one negative (ragged)
    batch = make_batch(q, d, [3, 2], teacher_scores=teacher, in_batch_negatives=False)
    loss_fn = InfoNCELoss(temperature=0.2, teacher_mask_ratio=0.5)
    own = loss_fn.teacher_mask(batch, 3)
    assert own.tolist() == [[False, True, False], [False, True, False]]  # row 1's padding slot is never counted
    _, stats = loss_fn(batch)
    assert stats["teacher_masked_negatives"] == 2


def test_teacher_mask_local_rows_mask_only_their_own_candidates() -> None:
    q, d = unit(3, 8, seed=5), unit(9, 8, seed=6)
    batch = make_batch(q, d, 3, teacher_scores=torch.tensor(TEACHER))
    loss_fn = InfoNCELoss(temperature=0.1, teacher_mask_ratio=0.8)
    full, s_full = loss_fn(batch)
    a, s_a = loss_fn(batch.with_local_rows(slice(0, 2)))
    c, s_c = loss_fn(batch.with_local_rows(slice(2, 3)))
    assert full.item() == pytest.approx((2 * a.item() + c.item()) / 3, rel=1e-6)
    assert (s_a["teacher_masked_negatives"], s_c["teacher_masked_negatives"]) == (1, 1)


def test_teacher_mask_without_teacher_scores_names_the_recipe_key() -> None:
    q, d = unit(2, 8), unit(4, 8)
    with pytest.raises(ConfigError, match=r"^losses\.infonce\.teacher_mask_ratio: teacher-aware masking needs "):
        InfoNCELoss(teacher_mask_ratio=0.9)(make_batch(q, d, 2))


def test_tamber_combination_is_listwise_plus_a_tenth_of_masked_infonce() -> None:
    section = {"listwise": {"weight": 1.0, "temperature": 0.05, "teacher_temperature": 0.3},
               "infonce": {"weight": 0.1, "teacher_mask_ratio": 0.8}}
    loss_fn = build_loss(section)
    assert isinstance(loss_fn, CombinedLoss)
    q, d = unit(3, 8, seed=7), unit(9, 8, seed=8)
    batch = make_batch(q, d, 3, teacher_scores=torch.tensor(TEACHER))
    total, stats = loss_fn(batch)
    kd, _ = ListwiseDistillationLoss(0.05, 0.3)(batch)
    nce, _ = InfoNCELoss(temperature=0.05, teacher_mask_ratio=0.8)(batch)
    assert total.item() == pytest.approx(kd.item() + 0.1 * nce.item(), rel=1e-6)
    assert stats["teacher_masked_negatives"] == len(MASKED_SLOTS)
    # the recipe section parses through training's LossConfig as written, and says it needs teacher scores
    r = recipe(section)
    assert r.losses.infonce.teacher_mask_ratio == 0.8 and r.losses.infonce.weight == 0.1
    assert r.losses.teacher_score_keys() == ["losses.infonce.teacher_mask_ratio", "losses.listwise"]


# ------------------------------------------------------------------------------------------------------ Margin-MSE


def test_margin_mse_equals_hand_computation_with_ragged_rows_and_unknown_scores() -> None:
    counts = [3, 2, 3, 1]
    q, d = unit(4, 8, seed=10), unit(sum(counts), 8, seed=11)
    # row 2's positive has no score: the row contributes nothing; row 0's second negative is unknown; row 3 has none
    teacher = torch.tensor([0.9, 0.3, NAN, 0.8, 0.6, NAN, 0.5, 0.1, 0.7])
    scale = 2.0
    loss, stats = MarginMSELoss(scale=scale)(make_batch(q, d, counts, teacher_scores=teacher))
    row_means = []
    start = 0
    for i, n in enumerate(counts):
        tp = float(teacher[start])
        terms = []
        for j in range(1, n):
            tn = float(teacher[start + j])
            if math.isnan(tp) or math.isnan(tn):
                continue
            sm = scale * (dot(q[i], d[start]) - dot(q[i], d[start + j]))
            terms.append((sm - (tp - tn)) ** 2)
        row_means.append(sum(terms) / len(terms) if terms else 0.0)  # a row without scored pairs adds 0
        start += n
    assert stats["pairs"] == 2
    assert loss.item() == pytest.approx(sum(row_means) / len(counts), rel=1e-5)


def test_margin_mse_is_zero_when_scaled_student_margins_match_and_grads_are_finite() -> None:
    q = unit(2, 8, seed=12).requires_grad_()
    d = unit(6, 8, seed=13).requires_grad_()
    batch = make_batch(q, d, 3)
    student = torch.einsum("bd,bkd->bk", batch.q, batch.docs).detach()
    batch.teacher_scores = 10.0 * student + 3.0  # same margins at scale 10; the offset does not matter
    loss, stats = MarginMSELoss(scale=10.0)(batch)
    assert abs(loss.item()) < 1e-8 and stats["margin_sign_agreement"] == 1.0
    batch.teacher_scores = torch.tensor([[0.9, 0.1, NAN], [NAN, 0.5, 0.4]])
    loss, stats = MarginMSELoss()(batch)
    loss.backward()
    assert stats["pairs"] == 1 and torch.isfinite(q.grad).all() and torch.isfinite(d.grad).all()
    assert d.grad[2].abs().sum() == 0 and d.grad[3:].abs().sum() == 0  # unknown slots get no gradient


def test_margin_mse_without_negatives_is_a_zero_loss_with_a_graph() -> None:
    q = unit(2, 8, seed=14).requires_grad_()
    d = unit(2, 8, seed=15).requires_grad_()
    loss, stats = MarginMSELoss()(make_batch(q, d, 1, teacher_scores=torch.tensor([0.5, 0.7])))
    assert loss.item() == 0.0 and loss.requires_grad and stats["pairs"] == 0


def test_margin_mse_without_teacher_scores_names_the_recipe_key() -> None:
    with pytest.raises(ConfigError, match=r"^losses\.margin_mse: margin-MSE distillation needs teacher scores"):
        MarginMSELoss()(make_batch(unit(2, 8), unit(4, 8), 2))


def test_margin_mse_from_the_recipe_section() -> None:
    loss_fn = build_loss({"infonce": None, "margin_mse": {"scale": 5.0}})
    assert isinstance(loss_fn, MarginMSELoss) and loss_fn.scale == 5.0
    combo = build_loss({"margin_mse": {"weight": 0.5}})
    assert isinstance(combo, CombinedLoss) and combo.weights == {"infonce": 1.0, "margin_mse": 0.5}
    r = recipe({"infonce": None, "margin_mse": {"weight": 1.0, "scale": 10.0}})
    assert r.losses.margin_mse.scale == 10.0 and r.losses.needs_teacher_scores
    assert LossConfig.model_validate({"margin_mse": {"weight": 0.0}}).teacher_score_keys() == []


# ------------------------------------------------------------------------------------------------------ listwise


def test_listwise_defaults_are_tamber_et_al() -> None:
    kd = ListwiseDistillationLoss()
    assert (kd.temperature, kd.teacher_temperature) == (0.05, 0.3)
    cfg = LossConfig.model_validate({"listwise": {}}).listwise
    assert (cfg.temperature, cfg.teacher_temperature) == (0.05, 0.3)


def test_listwise_rows_without_teacher_scores_add_zero_to_the_row_mean() -> None:
    q, d = unit(2, 8, seed=16), unit(6, 8, seed=17)
    teacher = torch.tensor([0.9, 0.2, 0.1, NAN, NAN, NAN])  # row 1 (another data set's pair) has no scores
    both, stats = ListwiseDistillationLoss(0.05, 0.3)(make_batch(q, d, 3, teacher_scores=teacher))
    alone, _ = ListwiseDistillationLoss(0.05, 0.3)(make_batch(q[:1], d[:3], 3, teacher_scores=teacher[:3]))
    assert both.item() == pytest.approx(alone.item() / 2, rel=1e-6) and alone.item() > 0
    assert stats["distilled_rows"] == 1


@pytest.mark.parametrize("make_loss", [
    lambda: ListwiseDistillationLoss(0.05, 0.3),
    lambda: MarginMSELoss(scale=2.0),
    lambda: InfoNCELoss(temperature=0.05, teacher_mask_ratio=0.9),
], ids=["listwise", "margin_mse", "infonce-teacher-mask"])
def test_the_loss_splits_exactly_over_ranks(make_loss) -> None:
    """Cross-device training computes each rank's rows (``local_rows``) and weights the rank by its share of the
    rows; that equals the one-process loss only for a plain mean over rows. Ragged rows, unknown scores and a row
    without any teacher score make a per-rank mean over "scored rows" or "pairs" differ."""
    counts = [3, 1, 2, 3, 2]
    q, d = unit(5, 8, seed=20), unit(sum(counts), 8, seed=21)
    teacher = torch.tensor([0.9, 0.3, 0.5, NAN, 0.8, 0.2, 0.7, NAN, 0.1, 0.95, 0.4])
    full = make_batch(q, d, counts, teacher_scores=teacher)
    whole, _ = make_loss()(full)
    parts = [make_loss()(full.with_local_rows(rows))[0] * ((rows.stop - rows.start) / 5)
             for rows in (slice(0, 3), slice(3, 5))]
    assert float(sum(parts)) == pytest.approx(whole.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ configs, errors


@pytest.mark.parametrize(
    ("key", "bad", "message"),
    [
        ("infonce.teacher_mask_ratio", 0.0,
         "invalid value for 'losses.infonce.teacher_mask_ratio': must be > 0.0 (got 0.0)"),
        ("infonce.teacher_mask_ratio", 2.5,
         "invalid value for 'losses.infonce.teacher_mask_ratio': must be <= 2.0 (got 2.5)"),
        ("margin_mse.scale", 0.0, "invalid value for 'losses.margin_mse.scale': must be > 0.0 (got 0.0)"),
        ("margin_mse.scale", -1.0, "invalid value for 'losses.margin_mse.scale': must be > 0.0 (got -1.0)"),
    ],
)
def test_the_class_and_the_recipe_refuse_the_same_values_in_the_same_words(key: str, bad: float,
                                                                           message: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError) as from_recipe:
        recipe({section: {name: bad}})
    make = {"infonce": InfoNCELoss, "margin_mse": MarginMSELoss}[section]
    with pytest.raises(ConfigError) as from_class:
        make(**{name: bad})
    assert from_recipe.value.message == from_class.value.message
    assert from_class.value.message.startswith(message) and "\n" not in str(from_class.value)


def test_recipe_errors_name_the_new_keys() -> None:
    with pytest.raises(ConfigError, match=r"'losses\.margin_mse\.weight': must be >= 0"):
        recipe({"margin_mse": {"weight": -1}})
    with pytest.raises(ConfigError, match=r"losses\.margin_mse\.temperature"):
        recipe({"margin_mse": {"temperature": 0.1}})  # a key margin-MSE does not have
    with pytest.raises(ConfigError, match="at least one of 'infonce', 'listwise' or 'margin_mse'"):
        recipe({"infonce": None})
