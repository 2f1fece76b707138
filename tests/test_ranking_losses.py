"""Ranking losses: float64 hand computations, the logQ correction's consistency, masking."""

from __future__ import annotations

import math

import pytest
import torch

from metarec.algorithms.ranking_losses import (
    catalogue_softmax,
    popularity_log_q,
    sampled_bpr,
    sampled_softmax,
)

pytestmark = pytest.mark.usefixtures("f64")


def _lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_catalogue_softmax_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.0, 3.0], [0.5, -0.5, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    exclude = torch.tensor([[False, False, False, True], [False, False, False, False]])
    loss = catalogue_softmax(logits, targets, exclude)
    z = _lse(1.0, 2.0, 0.0)  # item 3 (the support) leaves the normaliser
    assert loss[0].item() == pytest.approx(-((1.0 - z) + (0.0 - z)) / 2, abs=1e-12)
    assert loss[1].item() == 0.0  # no positive
    # an excluded positive is ignored, not counted
    t2 = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert catalogue_softmax(logits[:1], t2, exclude[:1]).item() == pytest.approx(z - 1.0)


def test_sampled_softmax_with_log_q_by_hand():
    pos = torch.tensor([[2.0, 0.5, 9.0]])
    pos_mask = torch.tensor([[True, True, False]])  # the third positive is padding
    neg = torch.tensor([[1.0, -1.0, 0.3]])
    neg_mask = torch.tensor([[True, False, True]])  # the second negative is an accidental hit
    lq_pos = torch.log(torch.tensor([[0.1, 0.3, 0.5]]))
    lq_neg = torch.log(torch.tensor([0.2, 0.5, 0.05]))
    got = sampled_softmax(pos, pos_mask, neg, neg_mask, lq_pos, lq_neg[None, :])
    negs = [1.0 - math.log(0.2), 0.3 - math.log(0.05)]
    per = []
    for s, q in ((2.0, 0.1), (0.5, 0.3)):
        a = s - math.log(q)
        per.append(-(a - _lse(a, *negs)))
    assert got.item() == pytest.approx(sum(per) / 2, abs=1e-12)
    # no correction: plain sampled softmax
    plain = sampled_softmax(pos, pos_mask, neg, neg_mask)
    ref = [-(s - _lse(s, 1.0, 0.3)) for s in (2.0, 0.5)]
    assert plain.item() == pytest.approx(sum(ref) / 2, abs=1e-12)
    # a constant shift of log Q changes nothing
    shifted = sampled_softmax(pos, pos_mask, neg, neg_mask, lq_pos + 3.0, lq_neg[None, :] + 3.0)
    assert shifted.item() == pytest.approx(got.item(), abs=1e-12)


def test_log_q_correction_makes_the_sampled_gradient_the_full_softmax_gradient():
    """Negatives drawn from a popularity-skewed Q: with the logQ correction the gradient of the
    sampled softmax approaches the full softmax's; without it, it does not."""
    g = torch.Generator().manual_seed(0)
    C, p = 8, 3
    counts = torch.tensor([400.0, 100.0, 50.0, 20.0, 10.0, 5.0, 2.0, 1.0])
    log_q = popularity_log_q(counts, alpha=1.0)
    base = torch.randn(C, generator=g)
    neg = torch.multinomial(log_q.exp(), 400_000, replacement=True, generator=g)

    def grad(kind: str) -> torch.Tensor:
        s = base.clone().requires_grad_(True)
        if kind == "full":
            loss = catalogue_softmax(s[None], torch.nn.functional.one_hot(torch.tensor([p]), C))
        else:
            corr = kind == "corrected"
            loss = sampled_softmax(
                s[[p]][None],
                torch.ones(1, 1, dtype=torch.bool),
                s[neg][None],
                torch.ones(1, neg.shape[0], dtype=torch.bool),
                log_q[[p]][None] if corr else None,
                log_q[neg][None] if corr else None,
            )
        loss.sum().backward()
        assert s.grad is not None
        return s.grad

    full = grad("full")
    assert float((grad("corrected") - full).abs().max()) < 0.01
    assert float((grad("uncorrected") - full).abs().max()) > 0.1


def test_sampled_bpr_by_hand_and_empty_tasks():
    pos = torch.tensor([[1.0, 0.0], [0.3, 0.2]])
    pos_mask = torch.tensor([[True, False], [False, False]])
    neg = torch.tensor([[0.5, 2.0], [0.0, 0.0]])
    neg_mask = torch.tensor([[True, True], [True, True]])
    got = sampled_bpr(pos, pos_mask, neg, neg_mask)

    def nls(x: float) -> float:
        return -math.log(1.0 / (1.0 + math.exp(-x)))

    assert got[0].item() == pytest.approx((nls(0.5) + nls(-1.0)) / 2, abs=1e-12)
    assert got[1].item() == 0.0  # no positive: no pair
    # a task without positives gives no gradient
    s = pos.clone().requires_grad_(True)
    sampled_softmax(s, pos_mask, neg, neg_mask).sum().backward()
    assert s.grad is not None and float(s.grad[1].abs().sum()) == 0.0


def test_popularity_log_q():
    lq = popularity_log_q(torch.tensor([0.0, 1.0, 3.0]), alpha=1.0)
    torch.testing.assert_close(lq.exp(), torch.tensor([1.0, 2.0, 4.0]) / 7.0)
    uni = popularity_log_q(torch.tensor([0.0, 10.0, 99.0]), alpha=0.0)
    torch.testing.assert_close(uni.exp(), torch.full((3,), 1.0 / 3.0))
