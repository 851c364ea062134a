"""The spread-out / GOR regulariser (``losses.spread_out``): hand computations of both forms, GradCache equals
uncached, the cross-device choice (computed over the gathered batch) splits exactly over ranks, config errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from embedkit.errors import ConfigError
from embedkit.losses import CombinedLoss, InfoNCELoss, LossConfig, SpreadOutLoss, build_loss, make_batch

from test_gradcache import TOL, dropout_model, max_diff, run_both  # noqa: F401  (fixture + GradCache harness)
from test_losses import dot, unit  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_moments(rows: list[torch.Tensor]) -> tuple[float, float]:
    """Mean and mean square of the cosines of every ordered pair i != j, with math only."""
    sims = [dot(a, b) for (i, a), (j, b) in itertools.product(enumerate(rows), repeat=2) if i != j]
    return sum(sims) / len(sims), sum(s * s for s in sims) / len(sims)


def hand_value(rows: list[torch.Tensor], form: str) -> float:
    m1, m2 = hand_moments(rows)
    if form == "gor":
        return m1 * m1 + max(0.0, m2 - 1.0 / len(rows[0]))
    return m2


@pytest.mark.parametrize("form", ["second_moment", "gor"])
@pytest.mark.parametrize("over", ["queries", "queries_and_positives"])
def test_value_equals_hand_computation(over: str, form: str) -> None:
    q, d = unit(4, 6, seed=1), unit(4 * 2, 6, seed=2)
    q[1] = (q[0] + 0.2 * q[1]) / (q[0] + 0.2 * q[1]).norm()  # a close pair: the second moment is well above 1/d
    loss, stats = SpreadOutLoss(over=over, form=form)(make_batch(q, d, 2))
    expected = hand_value(list(q), form)
    if over == "queries_and_positives":
        expected += hand_value([d[2 * i] for i in range(4)], form)  # the positives, not the hard negatives
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    m1, m2 = hand_moments(list(q))
    assert stats["spread_out_m1_queries"] == pytest.approx(m1, rel=1e-5, abs=1e-7)
    assert stats["spread_out_m2_queries"] == pytest.approx(m2, rel=1e-5)


def test_gor_hinge_is_zero_for_a_spread_batch_and_second_moment_is_not() -> None:
    # 4 orthogonal directions and their opposites in 4 dims: M1 = -1/7, M2 = 1/7 < 1/4 -> GOR = M1^2 only
    e = torch.cat([torch.eye(4), -torch.eye(4)])
    gor, _ = SpreadOutLoss(over="queries", form="gor")(make_batch(e, e.clone(), 1))
    m2, _ = SpreadOutLoss(over="queries")(make_batch(e, e.clone(), 1))
    assert gor.item() == pytest.approx((1 / 7) ** 2, rel=1e-5)
    assert m2.item() == pytest.approx(1 / 7, rel=1e-5)


def test_gradient_pushes_a_close_pair_apart() -> None:
    q = unit(3, 5, seed=3)
    q[1] = (q[0] + 0.05 * q[1]) / (q[0] + 0.05 * q[1]).norm()
    q.requires_grad_(True)
    loss, _ = SpreadOutLoss(over="queries")(make_batch(q, unit(3, 5, seed=4), 1))
    (g,) = torch.autograd.grad(loss, q)
    with torch.no_grad():
        moved = torch.nn.functional.normalize(q - 0.1 * g, dim=-1)
    assert float(moved[0] @ moved[1]) < float(q[0].detach() @ q[1].detach())


def test_computed_over_the_gathered_batch_so_ranks_split_it_exactly() -> None:
    """Cross-device: each rank sees the gathered batch with ``local_rows`` = its rows and is weighted by its share
    of the rows (embedkit.training.gradcache._loss); the regulariser ignores ``local_rows``, so the weighted sum over
    ranks -- value and gradient -- equals the one-process value. A per-rank value (local rows only) would not."""
    q = unit(5, 8, seed=5).requires_grad_(True)
    d = unit(10, 8, seed=6).requires_grad_(True)
    loss_fn = CombinedLoss({"infonce": (InfoNCELoss(temperature=0.05), 1.0), "spread_out": (SpreadOutLoss(), 0.5)})
    full = make_batch(q, d, 2)
    whole, _ = loss_fn(full)
    g_whole = torch.autograd.grad(whole, [q, d])
    split = [slice(0, 3), slice(3, 5)]
    parts = sum(loss_fn(full.with_local_rows(r))[0] * ((r.stop - r.start) / 5) for r in split)
    g_parts = torch.autograd.grad(parts, [q, d])
    assert float(parts) == pytest.approx(whole.item(), rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_whole, g_parts))
    per_rank = sum(SpreadOutLoss()(make_batch(q[r], d[2 * r.start:2 * r.stop], 2))[0] * ((r.stop - r.start) / 5)
                   for r in split)
    assert abs(float(per_rank) - SpreadOutLoss()(full)[0].item()) > 1e-3  # the choice matters


@pytest.mark.parametrize("form", ["second_moment", "gor"])
def test_gradcache_equals_uncached_with_spread_out(dropout_model, form: str) -> None:  # noqa: F811
    loss_fn = build_loss({"infonce": {"temperature": 0.05}, "spread_out": {"weight": 2.0, "form": form}})
    g_ref, g_gc, s_ref, s_gc = run_both(dropout_model, loss_fn)
    assert max_diff(g_ref, g_gc) <= TOL
    assert max(g.abs().max().item() for g in g_ref.values()) > 1e-3
    assert s_ref["spread_out/loss"] == pytest.approx(s_gc["spread_out/loss"], rel=1e-5) and s_ref["spread_out/loss"] > 0


def test_build_adds_a_weighted_component_and_is_not_a_loss_alone() -> None:
    loss_fn = build_loss({"infonce": {}, "spread_out": {"weight": 0.25, "over": "queries"}})
    assert isinstance(loss_fn, CombinedLoss) and loss_fn.weights == {"infonce": 1.0, "spread_out": 0.25}
    assert loss_fn.losses["spread_out"].over == "queries"
    with pytest.raises(ConfigError, match="at least one of 'infonce', 'listwise' or 'margin_mse'"):
        build_loss({"infonce": None, "spread_out": {"weight": 1.0}})
    assert LossConfig.model_validate({"spread_out": {}}).infonce is not None  # the default InfoNCE stays


@pytest.mark.parametrize(("bad", "message"), [
    ({"weight": -1.0}, "invalid value for 'losses.spread_out.weight': must be >= 0.0 (got -1.0)"),
    ({"over": "documents"}, "invalid value for 'losses.spread_out.over'"),
    ({"form": "first_moment"}, "invalid value for 'losses.spread_out.form'"),
])
def test_recipe_errors_are_one_line_and_name_the_key(bad: dict, message: str) -> None:
    from embedkit.training.config import parse_recipe

    with pytest.raises(ConfigError) as exc:
        parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}, "losses": {"spread_out": bad}})
    assert message in str(exc.value) and "\n" not in str(exc.value)
    if "weight" not in bad:
        with pytest.raises(ConfigError) as from_class:
            SpreadOutLoss(**bad)
        assert from_class.value.message == exc.value.message
