"""Tests for metarec.metrics.per_task: hand-computed values, masking, ties, degenerate flags, errors."""

from __future__ import annotations

import math

import pytest
import torch

from metarec.episodes.batch import EpisodeSet
from metarec.metrics.per_task import (
    auc,
    degenerate_flags,
    evaluate,
    hr_at_k,
    hr_at_k_from_rank,
    mae,
    mean_ci,
    mean_over_tasks,
    mrr,
    mrr_from_rank,
    ndcg_at_k,
    ndcg_at_k_from_rank,
    pooled_mae,
    pooled_rmse,
    rank_of_positive,
    rmse,
    student_t_quantile,
)

L2_3 = math.log2(3)  # discount denominator at position 2
L2_5 = math.log2(5)  # ... at position 4


def t(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def b(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.bool)


def pad(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    """Append ``width`` padding columns filled with ``value``."""
    extra = torch.full((x.shape[0], width), value, dtype=x.dtype)
    return torch.cat([x, extra], dim=1)


# --------------------------------------------------------------------------- explicit


def test_mae_rmse_hand_values_and_pooled() -> None:
    # task 0: errors |4-5|=1, |3-1|=2            -> MAE 1.5, RMSE sqrt((1+4)/2)=sqrt(2.5)
    # task 1: errors |2-2|=0, |5-2|=3, |1-1|=0   -> MAE 1.0, RMSE sqrt(9/3)=sqrt(3)
    pred = t([[4.0, 3.0, 0.0], [2.0, 5.0, 1.0]])
    target = t([[5.0, 1.0, 0.0], [2.0, 2.0, 1.0]])
    mask = b([[True, True, False], [True, True, True]])
    assert torch.allclose(mae(pred, target, mask), torch.tensor([1.5, 1.0], dtype=torch.float64))
    assert torch.allclose(
        rmse(pred, target, mask),
        torch.tensor([math.sqrt(2.5), math.sqrt(3.0)], dtype=torch.float64),
    )
    # mean over tasks (MeLU's convention): (1.5 + 1.0) / 2 = 1.25
    assert mean_over_tasks(mae(pred, target, mask)) == pytest.approx(1.25)
    # pooled over the 5 interactions: (1+2+0+3+0)/5 = 1.2 ; RMSE sqrt((1+4+0+9+0)/5) = sqrt(2.8)
    assert pooled_mae(pred, target, mask) == pytest.approx(1.2)
    assert pooled_rmse(pred, target, mask) == pytest.approx(math.sqrt(2.8))
    # mean of per-task RMSE (sqrt(2.5)+sqrt(3))/2 = 1.6566 differs from pooled sqrt(2.8) = 1.6733
    assert mean_over_tasks(rmse(pred, target, mask)) != pytest.approx(math.sqrt(2.8))


def test_empty_task_is_nan_and_skipped_by_mean() -> None:
    pred = t([[1.0, 2.0], [9.0, 9.0]])
    target = t([[2.0, 2.0], [0.0, 0.0]])
    mask = b([[True, True], [False, False]])
    per_task = mae(pred, target, mask)
    assert per_task[0].item() == pytest.approx(0.5)  # (1 + 0) / 2
    assert math.isnan(per_task[1].item())
    assert mean_over_tasks(per_task) == pytest.approx(0.5)
    assert math.isnan(mean_over_tasks(torch.tensor([math.nan])))
    assert math.isnan(pooled_mae(pred, target, torch.zeros(2, 2, dtype=torch.bool)))


# --------------------------------------------------------------------------- nDCG


def test_ndcg_perfect_ranking_is_one() -> None:
    rel = t([[3.0, 2.0, 1.0, 0.0], [1.0, 5.0, 4.0, 2.0]])
    mask = torch.ones(2, 4, dtype=torch.bool)
    for gain in ("exponential", "linear"):
        for k in (1, 2, 4, 10):
            out = ndcg_at_k(rel * 0.5 + 1.0, rel, mask, k, gain=gain)  # same order as rel
            assert torch.allclose(out, torch.ones(2, dtype=torch.float64))


def test_ndcg_reversed_ranking_hand_value() -> None:
    # relevance [3, 2, 1], scores rank them in reverse: ranked relevance (1, 2, 3)
    rel = t([[3.0, 2.0, 1.0]])
    scores = t([[1.0, 2.0, 3.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    # exponential gains 2^r - 1: rel 1 -> 1, 2 -> 3, 3 -> 7
    # DCG  = 1/log2(2) + 3/log2(3) + 7/log2(4) = 1 + 3/1.58496 + 3.5 = 6.39279
    # IDCG = 7/1 + 3/log2(3) + 1/2                = 7 + 1.89279 + 0.5 = 9.39279
    dcg, idcg = 1 + 3 / L2_3 + 7 / 2, 7 + 3 / L2_3 + 1 / 2
    assert ndcg_at_k(scores, rel, mask, 3).item() == pytest.approx(dcg / idcg)  # 0.680606
    assert dcg / idcg == pytest.approx(0.680606, abs=1e-6)
    # linear gains: DCG = 1 + 2/log2(3) + 3/2 = 3.76186 ; IDCG = 3 + 2/log2(3) + 1/2 = 4.76186
    lin = (1 + 2 / L2_3 + 1.5) / (3 + 2 / L2_3 + 0.5)
    assert ndcg_at_k(scores, rel, mask, 3, gain="linear").item() == pytest.approx(lin)  # 0.789998
    # k=1: top item has rel 1 (gain 1) vs ideal rel 3 (gain 7) -> 1/7
    assert ndcg_at_k(scores, rel, mask, 1).item() == pytest.approx(1 / 7)
    # k=2: DCG@2 = 1 + 3/log2(3) ; IDCG@2 = 7 + 3/log2(3)
    assert ndcg_at_k(scores, rel, mask, 2).item() == pytest.approx((1 + 3 / L2_3) / (7 + 3 / L2_3))


def test_ndcg_ties_are_pessimistic() -> None:
    # constant scores: ties put the least relevant first -> same as the reversed ranking
    rel = t([[3.0, 2.0, 1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    const = ndcg_at_k(t([[0.7, 0.7, 0.7]]), rel, mask, 3).item()
    rev = ndcg_at_k(t([[1.0, 2.0, 3.0]]), rel, mask, 3).item()
    assert const == pytest.approx(rev)


def test_ndcg_undefined_when_no_gain() -> None:
    # all-zero relevance (implicit query with no positive): IDCG = 0 -> NaN
    out = ndcg_at_k(t([[0.3, 0.1]]), t([[0.0, 0.0]]), b([[True, True]]), 2)
    assert math.isnan(out.item())


# --------------------------------------------------------------------------- implicit within query


def test_hr_mrr_hand_values() -> None:
    # task 0: scores 0.9(neg) 0.8(pos) 0.1(neg) -> positive at rank 2 : HR@1=0, HR@2=1, RR=1/2
    # task 1: scores 0.2(pos) 0.5(neg) 0.4(neg) 0.3(pos) -> best positive 0.3 at rank 3: RR=1/3
    scores = t([[0.9, 0.8, 0.1, 0.0], [0.2, 0.5, 0.4, 0.3]])
    labels = t([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    mask = b([[True, True, True, False], [True, True, True, True]])
    assert hr_at_k(scores, labels, mask, 1).tolist() == [0.0, 0.0]
    assert hr_at_k(scores, labels, mask, 2).tolist() == [1.0, 0.0]
    assert hr_at_k(scores, labels, mask, 3).tolist() == [1.0, 1.0]
    assert torch.allclose(
        mrr(scores, labels, mask), torch.tensor([1 / 2, 1 / 3], dtype=torch.float64)
    )
    # implicit nDCG@4, task 1: positives at ranks 3 and 4 -> DCG = 1/log2(4) + 1/log2(5)
    # IDCG = 1 + 1/log2(3)
    nd = ndcg_at_k(scores, labels, mask, 4)
    assert nd[1].item() == pytest.approx((0.5 + 1 / L2_5) / (1 + 1 / L2_3))
    # task 0: one positive at rank 2 -> 1/log2(3)
    assert nd[0].item() == pytest.approx(1 / L2_3)


def test_hr_mrr_ties_pessimistic_and_no_positive_nan() -> None:
    # positive tied with two negatives at the top -> ranked after them: rank 3
    scores = t([[0.5, 0.5, 0.5, 0.1], [0.4, 0.3, 0.0, 0.0]])
    labels = t([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = b([[True, True, True, True], [True, True, False, False]])
    rr = mrr(scores, labels, mask)
    assert rr[0].item() == pytest.approx(1 / 3)
    assert math.isnan(rr[1].item())
    hr = hr_at_k(scores, labels, mask, 2)
    assert hr[0].item() == 0.0 and math.isnan(hr[1].item())


def test_auc_hand_value_and_ties() -> None:
    # task 0: pos {0.9, 0.4}, neg {0.5, 0.1}
    #   pairs (0.9,0.5)=1 (0.9,0.1)=1 (0.4,0.5)=0 (0.4,0.1)=1 -> 3/4
    # task 1: pos {0.5}, neg {0.5, 0.2}: (0.5,0.5) tie = 0.5, (0.5,0.2) = 1 -> 1.5/2 = 0.75
    # task 2: constant scores -> every pair tied -> 0.5
    scores = t([[0.9, 0.5, 0.4, 0.1], [0.5, 0.5, 0.2, 0.0], [0.3, 0.3, 0.3, 0.3]])
    labels = t([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    mask = b([[True] * 4, [True, True, True, False], [True] * 4])
    assert auc(scores, labels, mask).tolist() == pytest.approx([0.75, 0.75, 0.5])


def test_auc_matches_pairwise_bruteforce() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (6, 9), generator=g).float()  # many ties
    labels = torch.randint(0, 2, (6, 9), generator=g).float()
    mask = torch.rand(6, 9, generator=g) > 0.2
    got = auc(scores, labels, mask)
    for i in range(6):
        s, y = scores[i][mask[i]], labels[i][mask[i]]
        p, n = s[y == 1], s[y == 0]
        if len(p) == 0 or len(n) == 0:
            assert math.isnan(got[i].item())
            continue
        diff = p[:, None] - n[None, :]
        want = ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()
        assert got[i].item() == pytest.approx(want)


def test_auc_undefined_with_one_class() -> None:
    out = auc(t([[0.1, 0.2]]), t([[1.0, 1.0]]), b([[True, True]]))
    assert math.isnan(out.item())


def test_binary_metrics_reject_ratings() -> None:
    with pytest.raises(ValueError, match=r"0/1.*binarize"):
        auc(t([[0.1, 0.2]]), t([[4.0, 1.0]]), b([[True, True]]))


# --------------------------------------------------------------------------- masking invariance


@pytest.mark.parametrize("garbage", [0.0, 100.0, -100.0, 5.0])
def test_padding_never_changes_results(garbage: float) -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(4, 6, generator=g)
    ratings = torch.randint(1, 6, (4, 6), generator=g).float()
    labels = (ratings >= 4).float()
    labels[:, 0], labels[:, 1] = 1.0, 0.0  # both classes in every task
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2, 4:] = False  # ragged task, also padded inside the original width

    def padded(x: torch.Tensor, value: float) -> torch.Tensor:
        return pad(x, 3, value)

    pmask = pad(mask, 3, False)
    ps, pr, pl = padded(scores, garbage), padded(ratings, abs(garbage)), padded(labels, 1.0)
    # also overwrite the internal padding of task 2
    ps[2, 4:6], pr[2, 4:6] = garbage, abs(garbage)

    pairs = [
        (mae(scores, ratings, mask), mae(ps, pr, pmask)),
        (rmse(scores, ratings, mask), rmse(ps, pr, pmask)),
        (ndcg_at_k(scores, ratings, mask, 3), ndcg_at_k(ps, pr, pmask, 3)),
        (ndcg_at_k(scores, ratings, mask, 10), ndcg_at_k(ps, pr, pmask, 10)),
        (auc(scores, labels, mask), auc(ps, pl, pmask)),
        (hr_at_k(scores, labels, mask, 2), hr_at_k(ps, pl, pmask, 2)),
        (mrr(scores, labels, mask), mrr(ps, pl, pmask)),
    ]
    for a, c in pairs:
        assert torch.allclose(a, c, equal_nan=True)
    assert pooled_rmse(scores, ratings, mask) == pytest.approx(pooled_rmse(ps, pr, pmask))
    assert degenerate_flags(scores, ratings, mask, k=3) == degenerate_flags(ps, pr, pmask, k=3)
    # padded negatives never count in rank_of_positive
    pos = torch.tensor([0.5])
    assert rank_of_positive(pos, t([[0.9, 0.1]])).tolist() == [2]
    assert rank_of_positive(
        pos, t([[0.9, 0.1, 0.99, 0.7]]), b([[True, True, False, False]])
    ).tolist() == [2]


# --------------------------------------------------------------------------- ranks against negatives


def test_rank_of_positive_with_ties() -> None:
    pos = t([0.5, 0.5, 0.5, 0.9])
    neg = t([[0.1, 0.2, 0.3], [0.5, 0.2, 0.6], [0.5, 0.5, 0.5], [0.1, 0.95, 0.0]])
    # task 0: no negative >= 0.5                 -> rank 1
    # task 1: 0.5 (tie, counted above) and 0.6   -> rank 3
    # task 2: three ties, all counted above      -> rank 4 (worst of 4 candidates)
    # task 3: 0.95 above                         -> rank 2
    rank = rank_of_positive(pos, neg)
    assert rank.dtype == torch.int64
    assert rank.tolist() == [1, 3, 4, 2]
    assert hr_at_k_from_rank(rank, 2).tolist() == [1.0, 0.0, 0.0, 1.0]
    # nDCG@3: rank1 -> 1, rank3 -> 1/log2(4) = 0.5, rank4 -> 0 (beyond k), rank2 -> 1/log2(3)
    assert ndcg_at_k_from_rank(rank, 3).tolist() == pytest.approx([1.0, 0.5, 0.0, 1 / L2_3])
    assert mrr_from_rank(rank).tolist() == pytest.approx([1.0, 1 / 3, 1 / 4, 1 / 2])


def test_rank_from_rank_rejects_zero_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        mrr_from_rank(torch.tensor([0, 1]))


# --------------------------------------------------------------------------- degenerate flags


def _names(flags: list[str]) -> list[str]:
    return [f.split(":")[0] for f in flags]


def test_flags_clean_case_has_none() -> None:
    scores = t([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
    ratings = t([[5.0, 1.0, 3.0, 2.0], [1.0, 4.0, 2.0, 3.0]])
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert degenerate_flags(scores, ratings, mask, k=2) == []
    assert degenerate_flags(scores, ratings, mask) == []


def test_flag_constant_predictions() -> None:
    ratings = t([[5.0, 1.0, 3.0], [1.0, 4.0, 2.0], [2.0, 3.0, 4.0]])
    mask = torch.ones(3, 3, dtype=torch.bool)
    # 2 of 3 tasks constant -> majority -> flagged
    scores = t([[3.5, 3.5, 3.5], [3.5, 3.5 + 1e-8, 3.5], [1.0, 2.0, 3.0]])
    flags = degenerate_flags(scores, ratings, mask)
    assert _names(flags) == ["constant predictions"]
    assert "2/3" in flags[0]
    # only 1 of 3 constant -> not flagged
    scores2 = t([[3.5, 3.5, 3.5], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert degenerate_flags(scores2, ratings, mask) == []
    # single-item tasks are trivially constant and do not count
    m1 = b([[True, False, False], [True, False, False], [True, True, True]])
    assert "constant predictions" not in _names(degenerate_flags(scores2, ratings, m1))


def test_flag_query_smaller_than_k() -> None:
    scores = t([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
    ratings = t([[5.0, 1.0, 3.0, 2.0], [1.0, 4.0, 2.0, 3.0]])
    mask = b([[True, True, True, True], [True, True, False, False]])
    flags = degenerate_flags(scores, ratings, mask, k=3)
    assert _names(flags) == ["query smaller than k"]
    assert "1/2" in flags[0] and "k=3" in flags[0]
    assert degenerate_flags(scores, ratings, mask, k=2) == []


def test_flag_metric_at_one_ndcg_equal_relevance_or_single_item() -> None:
    scores = t([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4]])
    # task 0: all ratings equal ; task 1: one real item -> any ranking is perfect
    ratings = t([[4.0, 4.0, 4.0], [5.0, 0.0, 0.0]])
    mask = b([[True, True, True], [True, False, False]])
    flags = degenerate_flags(scores, ratings, mask)
    assert _names(flags) == ["metric at 1.0 by construction"]
    assert "nDCG" in flags[0]
    assert ndcg_at_k(scores, ratings, mask, 3).tolist() == [1.0, 1.0]
    # one task with varied relevance -> nDCG is informative again
    ratings2 = t([[4.0, 2.0, 4.0], [5.0, 0.0, 0.0]])
    assert degenerate_flags(scores, ratings2, mask) == []


def test_flag_metric_at_one_hr_k_covers_all_candidates() -> None:
    scores = t([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4]])
    labels = t([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    flags = degenerate_flags(scores, labels, mask, k=3)
    assert _names(flags) == ["metric at 1.0 by construction"]
    assert "HR@3" in flags[0]
    assert hr_at_k(scores, labels, mask, 3).tolist() == [1.0, 1.0]  # worst positives still hit
    assert degenerate_flags(scores, labels, mask, k=2) == []
    # k > n also triggers "query smaller than k"
    assert _names(degenerate_flags(scores, labels, mask, k=5)) == [
        "query smaller than k",
        "metric at 1.0 by construction",
    ]


def test_flag_empty_query() -> None:
    flags = degenerate_flags(t([[0.0, 0.0]]), t([[0.0, 0.0]]), b([[False, False]]), k=1)
    assert _names(flags) == ["empty query"]


# --------------------------------------------------------------------------- evaluate


def _query(targets: torch.Tensor, mask: torch.Tensor) -> EpisodeSet:
    idx = torch.arange(targets.numel()).reshape(targets.shape) * mask
    return EpisodeSet(users=idx, items=idx, targets=targets, mask=mask)


def test_evaluate_explicit() -> None:
    targets = t([[5.0, 1.0, 3.0, 0.0], [2.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = b([[True, True, True, False], [True, True, False, False], [False] * 4])
    preds = t([[4.0, 2.0, 3.0, 9.0], [2.0, 3.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
    out = evaluate(preds, _query(targets, mask), "explicit", k=2)
    assert set(out) == {"mae", "rmse", "ndcg@2", "n_tasks", "flags"}
    # task 0: |1|,|1|,|0| -> MAE 2/3, RMSE sqrt(2/3); task 1: |0|,|1| -> MAE 1/2, RMSE sqrt(1/2)
    # task 2 has no real item and is skipped
    assert out["mae"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["rmse"] == pytest.approx((math.sqrt(2 / 3) + math.sqrt(1 / 2)) / 2)
    # both tasks ranked perfectly (preds order matches ratings) -> nDCG@2 = 1
    assert out["ndcg@2"] == pytest.approx(1.0)
    assert out["n_tasks"] == 2.0
    assert out["flags"] == []


def test_evaluate_implicit_and_flags() -> None:
    labels = t([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    mask = b([[True, True, True, True], [True, True, True, False]])
    preds = t([[0.9, 0.8, 0.1, 0.2], [0.3, 0.2, 0.1, 0.0]])
    out = evaluate(preds, _query(labels, mask), "implicit", k=1)
    assert set(out) == {"auc", "ndcg@1", "hr@1", "mrr", "n_tasks", "flags"}
    # task 0: pos {0.9, 0.2}, neg {0.8, 0.1}: pairs 1,1,0,1 -> 3/4 ; task 1: pos 0.2 vs {0.3, 0.1} -> 1/2
    assert out["auc"] == pytest.approx((0.75 + 0.5) / 2)
    # task 0 top item is a positive -> HR@1 = 1, RR = 1 ; task 1 positive at rank 2 -> HR@1 = 0, RR = 1/2
    assert out["hr@1"] == pytest.approx(0.5)
    assert out["mrr"] == pytest.approx(0.75)
    assert out["ndcg@1"] == pytest.approx(0.5)
    assert out["flags"] == []
    const = evaluate(torch.zeros(2, 4), _query(labels, mask), "implicit", k=10)
    names = _names(const["flags"])  # type: ignore[arg-type]
    assert names == [
        "constant predictions",
        "query smaller than k",
        "metric at 1.0 by construction",
    ]
    assert const["auc"] == pytest.approx(0.5)


def test_evaluate_rejects_bad_feedback_and_shapes() -> None:
    q = _query(t([[1.0, 2.0]]), b([[True, True]]))
    with pytest.raises(ValueError, match="did you mean 'implicit'"):
        evaluate(torch.zeros(1, 2), q, "implict", k=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same"):
        evaluate(torch.zeros(1, 3), q, "explicit", k=1)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call",
    [
        lambda: ndcg_at_k(t([[1.0]]), t([[1.0]]), b([[True]]), 0),
        lambda: hr_at_k(t([[1.0]]), t([[1.0]]), b([[True]]), 0),
        lambda: hr_at_k_from_rank(torch.tensor([1]), 0),
        lambda: ndcg_at_k_from_rank(torch.tensor([1]), 0),
        lambda: degenerate_flags(t([[1.0]]), t([[1.0]]), b([[True]]), k=0),
        lambda: evaluate(torch.zeros(1, 1), _query(t([[1.0]]), b([[True]])), "explicit", k=0),
    ],
)
def test_k_zero_error_names_value_rule_and_fix(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert "k=0" in msg  # the value
    assert "positive integer" in msg and ">= 1" in msg  # the rule
    assert "pass k >= 1" in msg  # the fix


@pytest.mark.parametrize("k", [-1, 2.5, True, "3"])
def test_other_bad_k_rejected(k: object) -> None:
    with pytest.raises(ValueError, match=f"k={k!r}"):
        ndcg_at_k(t([[1.0]]), t([[1.0]]), b([[True]]), k)  # type: ignore[arg-type]


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="torch.bool"):
        mae(t([[1.0]]), t([[1.0]]), t([[1.0]]))
    with pytest.raises(ValueError, match=r"\(T, N\)"):
        mae(t([1.0]), t([1.0]), b([True]))
    with pytest.raises(ValueError, match="NaN"):
        mae(t([[math.nan]]), t([[1.0]]), b([[True]]))
    # NaN in padding is fine
    assert mae(t([[1.0, math.nan]]), t([[2.0, 0.0]]), b([[True, False]])).item() == 1.0
    with pytest.raises(ValueError, match="did you mean 'linear'"):
        ndcg_at_k(t([[1.0]]), t([[1.0]]), b([[True]]), 1, gain="linaer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="relevance >= 0"):
        ndcg_at_k(t([[1.0]]), t([[-1.0]]), b([[True]]), 1)


def test_metrics_ignore_autograd() -> None:
    pred = torch.tensor([[1.0, 2.0]], requires_grad=True)
    out = mae(pred, t([[2.0, 2.0]]), b([[True, True]]))
    assert not out.requires_grad
    assert out.item() == pytest.approx(0.5)


# --------------------------------------------------------------------------- t quantile, CI


@pytest.mark.parametrize(
    ("p", "df", "want"),
    [
        (0.975, 4, 2.7764),
        (0.975, 9, 2.2622),
        (0.975, 1, 12.7062),
        (0.975, 30, 2.0423),
        (0.95, 10, 1.8125),
        (0.995, 2, 9.9248),
        (0.975, 10**6, 1.9600),
    ],
)
def test_student_t_quantile_known_values(p: float, df: int, want: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(want, abs=1e-4)
    assert student_t_quantile(1 - p, df) == pytest.approx(-want, abs=1e-4)


def test_student_t_quantile_median_and_errors() -> None:
    assert student_t_quantile(0.5, 3) == 0.0
    with pytest.raises(ValueError, match="p=1.0"):
        student_t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df=0"):
        student_t_quantile(0.9, 0)


def test_mean_ci_hand_value() -> None:
    # values 1..5: mean 3, sample sd sqrt(2.5), n=5, df=4 -> half = 2.7764 * sqrt(2.5)/sqrt(5)
    #            = 2.7764 * 0.70711 = 1.9632
    mean, half = mean_ci(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, math.nan]))  # NaN task skipped
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(2.776445 * math.sqrt(0.5), rel=1e-6)
    assert half == pytest.approx(1.9632, abs=1e-4)
    m1, h1 = mean_ci([0.4])
    assert m1 == pytest.approx(0.4) and math.isnan(h1)
    m0, h0 = mean_ci([])
    assert math.isnan(m0) and math.isnan(h0)
    with pytest.raises(ValueError, match="confidence=95"):
        mean_ci([1.0, 2.0], confidence=95)
