"""InfoNCE logit hardness weighting (``losses.infonce.hardness``; LLaVE): hand computations, the plain form against
sentence-transformers 6.2's ``hardness_mode``, composition with focal and masking, config errors."""

from __future__ import annotations

import math

import pytest
import torch

from embedkit.errors import ConfigError
from embedkit.losses import FalseNegativeMasking, InfoNCELoss, build_loss, make_batch

from test_losses import dot, unit  # noqa: E402  (the hand-computation helpers of the loss tests)

B, K, T = 3, 3, 0.1
MODES = ["all_negatives", "hard_negatives", "in_batch_negatives"]


def hand_loss(q, d, mode: str, a: float, normalize: bool, in_batch: bool = True, t: float = T) -> float:
    """The weighted InfoNCE with math only: a weighted negative's exp term is multiplied by w = exp(a * s)
    (normalised to mean 1 over the row's weighted negatives when ``normalize``)."""
    total = 0.0
    for i in range(B):
        cols = [r * K + j for r in range(B) for j in range(K)] if in_batch else [i * K + j for j in range(K)]
        pos = i * K
        s = {c: dot(q[i], d[c]) for c in cols}

        def weighted(c: int) -> bool:
            if c == pos:
                return False
            own = c // K == i
            return {"all_negatives": True, "hard_negatives": own, "in_batch_negatives": not own}[mode]

        w = {c: math.exp(a * s[c]) for c in cols if weighted(c)}
        if normalize and w:
            mean = sum(w.values()) / len(w)
            w = {c: v / mean for c, v in w.items()}
        denom = sum(w.get(c, 1.0) * math.exp(s[c] / t) for c in cols)
        total += -math.log(math.exp(s[pos] / t) / denom)
    return total / B


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_hardness_equals_hand_computation(mode: str, normalize: bool) -> None:
    q, d = unit(B, 8, seed=1), unit(B * K, 8, seed=2)
    cfg = {"mode": mode, "strength": 4.0, "normalize": normalize}
    loss, _ = InfoNCELoss(temperature=T, hardness=cfg)(make_batch(q, d, K))
    assert loss.item() == pytest.approx(hand_loss(q, d, mode, 4.0, normalize), rel=1e-5)
    plain, _ = InfoNCELoss(temperature=T)(make_batch(q, d, K))
    assert abs(loss.item() - plain.item()) > 1e-3  # the weighting really changes the loss


def test_hardness_without_in_batch_negatives_weights_the_rows_own_negatives() -> None:
    q, d = unit(B, 8, seed=3), unit(B * K, 8, seed=4)
    batch = make_batch(q, d, K, in_batch_negatives=False)
    loss, _ = InfoNCELoss(temperature=T, hardness={"mode": "hard_negatives", "strength": 3.0})(batch)
    assert loss.item() == pytest.approx(hand_loss(q, d, "hard_negatives", 3.0, True, in_batch=False), rel=1e-5)
    # in-batch mode has nothing to weight there: plain InfoNCE
    same, _ = InfoNCELoss(temperature=T, hardness={"mode": "in_batch_negatives", "strength": 3.0})(batch)
    plain, _ = InfoNCELoss(temperature=T)(batch)
    assert same.item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_plain_form_equals_sentence_transformers_hardness_mode(mode: str) -> None:
    """``normalize: false`` is exactly sentence-transformers 6.2's MultipleNegativesRankingLoss(hardness_mode=...)
    on the same embeddings (its columns: all positives, then every row's first negative, ...)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, d = unit(B, 8, seed=5), unit(B * K, 8, seed=6)
    ours, _ = InfoNCELoss(temperature=0.05, hardness={"mode": mode, "strength": 5.0, "normalize": False})(
        make_batch(q, d, K))
    st = MultipleNegativesRankingLoss(None, scale=20.0, hardness_mode=mode, hardness_strength=5.0)  # type: ignore[arg-type]
    cols = d.reshape(B, K, -1)
    theirs = st.compute_loss_from_embeddings([q] + [cols[:, j] for j in range(K)], torch.zeros(B))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_weights_are_detached_and_default_is_off() -> None:
    q = unit(B, 8, seed=7).requires_grad_(True)
    d = unit(B * K, 8, seed=8)
    loss_fn = InfoNCELoss(temperature=T, hardness={"strength": 6.0})
    loss, _ = loss_fn(make_batch(q, d, K))
    (g,) = torch.autograd.grad(loss, q)
    # reference: the same weights as constants (computed from the values), so only the logits carry gradient
    qv = q.detach().clone().requires_grad_(True)
    scores = qv @ d.T
    with torch.no_grad():
        own = (torch.arange(B * K).unsqueeze(0) // K) == torch.arange(B).unsqueeze(1)
        keep = torch.ones_like(own)
        labels = torch.arange(B) * K
        log_w = loss_fn.hardness_log_weights(scores, keep, own, labels)
    ref = torch.nn.functional.cross_entropy(scores / T + log_w, labels)
    (g_ref,) = torch.autograd.grad(ref, qv)
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert InfoNCELoss().hardness is None and build_loss({"infonce": {}}).hardness is None


def test_hardness_skips_masked_negatives_and_composes_with_focal() -> None:
    q, d = unit(B, 8, seed=9), unit(B * K, 8, seed=10)
    d[4] = d[0]  # a duplicate of row 0's positive among row 1's negatives: masked, so never weighted
    batch = make_batch(q, d, K, doc_hash=torch.arange(B * K).where(torch.arange(B * K) != 4, 0))
    hard = {"mode": "all_negatives", "strength": 4.0}
    masked, stats = InfoNCELoss(temperature=T, hardness=hard, masking=FalseNegativeMasking(margin=None))(batch)
    assert stats["masked_false_negatives"] >= 1
    assert math.isfinite(masked.item())
    focal, _ = InfoNCELoss(temperature=T, hardness=hard, focal_gamma=2.0)(make_batch(q, d, K))
    weighted, _ = InfoNCELoss(temperature=T, hardness=hard)(make_batch(q, d, K))
    assert focal.item() < weighted.item()  # focal down-weights the (weighted) per-row terms


@pytest.mark.parametrize(("bad", "message"), [
    ({"mode": "hardest"}, "invalid value for 'losses.infonce.hardness.mode'"),
    ({"strength": 0.0}, "invalid value for 'losses.infonce.hardness.strength': must be > 0.0 (got 0.0)"),
    ({"strength": 80.0}, "invalid value for 'losses.infonce.hardness.strength': must be <= 50.0 (got 80.0)"),
    ({"alpha": 5.0}, "losses.infonce.hardness.alpha"),
])
def test_hardness_config_errors_are_one_line_and_agree_with_the_recipe(bad: dict, message: str) -> None:
    from embedkit.training.config import parse_recipe

    with pytest.raises(ConfigError) as from_class:
        InfoNCELoss(hardness=bad)
    with pytest.raises(ConfigError) as from_recipe:
        parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}]}, "losses": {"infonce": {"hardness": bad}}})
    assert message in str(from_class.value) and "\n" not in str(from_class.value)
    assert from_recipe.value.message == from_class.value.message
