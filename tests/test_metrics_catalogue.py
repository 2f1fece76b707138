"""Catalogue ranking metrics (metarec.metrics.catalogue, metarec.metrics.ranking_pool): hand-computed
float64 values for every metric, pessimistic ties, and brute-force references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from metarec.metrics.catalogue import (
    beyond_accuracy,
    catalogue_metrics,
    popularity_percentile,
    relevant_ranks,
    sampled_negative_metrics,
    served_top_k,
)
from metarec.metrics.ranking_pool import _without_replacement

L2 = math.log2


def _t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def test_hand_computed_metrics_one_task():
    # 8 items, scores descending by index; relevant: items 1, 4, 7; candidates: all but item 2
    s = _t([[8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    cand = torch.ones(1, 8, dtype=torch.bool)
    cand[0, 2] = False
    rel = torch.zeros(1, 8, dtype=torch.bool)
    rel[0, [1, 4, 7]] = True
    # ranks among candidates (item 2 left out): item1 -> 2, item4 -> 4, item7 -> 7
    m = catalogue_metrics(s, cand, rel, recall_k=4, ndcg_k=5, hr_k=1)
    assert m["recall@4_all"].item() == pytest.approx(2 / 3, abs=1e-15)  # 2 of min(4, 3)
    dcg = 1 / L2(3) + 1 / L2(5)
    idcg = 1 / L2(2) + 1 / L2(3) + 1 / L2(4)
    assert m["ndcg@5_all"].item() == pytest.approx(dcg / idcg, abs=1e-15)
    assert m["hr@1_all"].item() == 0.0
    assert m["mrr_all"].item() == pytest.approx(0.5, abs=1e-15)
    assert m["ndcg@5_all"].dtype == torch.float64


def test_recall_denominator_is_min_k_relevant():
    # 30 items, 25 relevant (items 0..24, scored highest): the top 20 are all relevant -> recall 1
    s = _t([list(range(30, 0, -1))])
    cand = torch.ones(1, 30, dtype=torch.bool)
    rel = torch.zeros(1, 30, dtype=torch.bool)
    rel[0, :25] = True
    m = catalogue_metrics(s, cand, rel)
    assert m["recall@20_all"].item() == 1.0
    assert m["ndcg@10_all"].item() == pytest.approx(1.0, abs=1e-15)
    assert m["hr@10_all"].item() == 1.0 and m["mrr_all"].item() == 1.0


def test_ties_are_pessimistic_and_constant_scores_rank_worst():
    s = torch.zeros(1, 5, dtype=torch.float64)
    cand = torch.ones(1, 5, dtype=torch.bool)
    rel = torch.tensor([[True, False, False, False, False]])
    m = catalogue_metrics(s, cand, rel, recall_k=2, ndcg_k=2, hr_k=2)
    # the relevant item ties with 4 non-relevant ones: rank 5
    assert m["mrr_all"].item() == pytest.approx(1 / 5)
    assert m["hr@2_all"].item() == 0.0 and m["recall@2_all"].item() == 0.0
    # a relevant item tied with another relevant one: binary gains, the pair takes ranks 1 and 2
    rel2 = torch.tensor([[True, True, False, False, False]])
    s2 = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    m2 = catalogue_metrics(s2, cand, rel2, recall_k=2, ndcg_k=2, hr_k=1)
    assert m2["ndcg@2_all"].item() == pytest.approx(1.0) and m2["recall@2_all"].item() == 1.0


def test_no_relevant_candidate_is_nan_and_nan_scores_rank_last():
    s = _t([[1.0, 2.0, 3.0], [float("nan"), 0.0, 1.0]])
    cand = torch.ones(2, 3, dtype=torch.bool)
    rel = torch.tensor([[False, False, False], [True, False, False]])
    m = catalogue_metrics(s, cand, rel)
    assert all(math.isnan(v[0].item()) for v in m.values())
    assert m["mrr_all"][1].item() == pytest.approx(1 / 3)  # NaN ranks below both others
    # a relevant item that is not a candidate does not count
    rel_nc = torch.tensor([[True, False, False], [False, False, False]])
    cand_nc = torch.tensor([[False, True, True], [True, True, True]])
    assert math.isnan(catalogue_metrics(s, cand_nc, rel_nc)["ndcg@10_all"][0].item())


def _brute_ranks(s: np.ndarray, cand: np.ndarray, rel: np.ndarray) -> list[int]:
    """Pessimistic ranks of the relevant candidates by a full sort: key (-score, relevant)."""
    idx = [i for i in range(len(s)) if cand[i]]
    order = sorted(idx, key=lambda i: (-s[i], rel[i]))
    return sorted(r + 1 for r, i in enumerate(order) if rel[i])


def test_relevant_ranks_match_a_full_sort():
    rng = np.random.default_rng(0)
    for trial in range(200):
        C = int(rng.integers(1, 60))
        s = rng.integers(0, 6, size=(3, C)).astype(np.float64)  # many ties
        cand = rng.random((3, C)) < 0.8
        rel = rng.random((3, C)) < 0.3
        depth = int(rng.integers(1, 25))
        ranks, n_rel, first = relevant_ranks(
            torch.from_numpy(s), torch.from_numpy(cand), torch.from_numpy(rel), depth
        )
        for t in range(3):
            want = _brute_ranks(s[t], cand[t], rel[t])
            assert n_rel[t].item() == len(want)
            assert first[t].item() == (want[0] if want else 0)
            got = [r for r in ranks[t].tolist() if r > 0]
            assert len(got) == min(len(want), min(depth, C))
            for g, w in zip(got, want):
                assert (g == w) if w <= depth else (g > depth), (trial, t, got, want)


def test_metrics_match_a_full_sort_reference():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 300))
    cand = rng.random((5, 300)) < 0.9
    rel = rng.random((5, 300)) < 0.05
    m = catalogue_metrics(torch.from_numpy(s), torch.from_numpy(cand), torch.from_numpy(rel))
    for t in range(5):
        r = _brute_ranks(s[t], cand[t], rel[t])
        n = len(r)
        rec = sum(x <= 20 for x in r) / min(20, n)
        ndcg = sum(1 / L2(x + 1) for x in r if x <= 10) / sum(
            1 / L2(i + 2) for i in range(min(10, n))
        )
        assert m["recall@20_all"][t].item() == pytest.approx(rec, abs=1e-12)
        assert m["ndcg@10_all"][t].item() == pytest.approx(ndcg, abs=1e-12)
        assert m["hr@10_all"][t].item() == float(r[0] <= 10)
        assert m["mrr_all"][t].item() == pytest.approx(1 / r[0], abs=1e-12)


def test_served_top_k_ties_by_lower_position_and_padding():
    s = _t([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    cand = torch.tensor([[True, True, True, True], [True, False, True, False]])
    got = served_top_k(s, cand, k=3)
    assert got.tolist() == [[1, 2, 3], [0, 2, -1]]
    assert served_top_k(s, cand, k=6).shape == (2, 6)


def test_popularity_percentile_by_hand():
    assert popularity_percentile(np.array([5, 0, 5, 9])).tolist() == [0.5, 0.0, 0.5, 1.0]
    assert popularity_percentile(np.array([3, 3, 3])).tolist() == [0.5, 0.5, 0.5]
    assert popularity_percentile(np.array([1, 2, 3])).tolist() == [0.0, 0.5, 1.0]


def test_beyond_accuracy_by_hand_and_overlap_equals_the_mean_over_pairs():
    served = np.array([[0, 1], [1, 2], [3, -1]])
    pct = np.array([0.0, 0.25, 0.5, 1.0, 0.75])
    cov, overlap, pop = beyond_accuracy(served, 5, pct, k=2)
    assert cov == pytest.approx(4 / 5)
    # pairs: (0,1) share item 1 -> 1/2; (0,2) -> 0; (1,2) -> 0; per task: mean over the others
    assert overlap.tolist() == pytest.approx([0.25, 0.25, 0.0])
    assert overlap.mean() == pytest.approx((0.5 + 0 + 0) / 3)
    assert pop.tolist() == pytest.approx([0.125, 0.375, 1.0])
    rng = np.random.default_rng(0)
    lists = np.stack([rng.choice(30, size=10, replace=False) for _ in range(40)])
    _, ov, _ = beyond_accuracy(lists, 30, np.zeros(30), k=10)
    pairs = [len(set(a) & set(b)) / 10 for a, b in itertools.combinations(lists.tolist(), 2)]
    assert ov.mean() == pytest.approx(np.mean(pairs), abs=1e-12)


def test_sampled_negative_metrics_by_hand():
    pos = _t([2.0, 0.5, 1.0])
    neg = _t([[1.0, 3.0, 2.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    task = torch.tensor([0, 0, 1])
    m = sampled_negative_metrics(pos, neg, mask, task, n_tasks=3, k=2)
    # item 0: negatives >= 2.0: {3, 2} -> rank 3; item 1: {1, 2} (0.0 masked) -> rank 3; item 2: rank 1
    assert m["mrr_neg"].tolist()[:2] == pytest.approx([1 / 3, 1.0])
    assert m["hr@2_neg"].tolist()[:2] == pytest.approx([0.0, 1.0])
    assert m["ndcg@2_neg"][1].item() == pytest.approx(1.0)
    # auc: item 0: below 1, tie 1 of 3 -> 0.5; item 1: 0 of 2 -> 0; task 0 mean 0.25
    assert m["auc_neg"][0].item() == pytest.approx(0.25)
    assert math.isnan(m["auc_neg"][2].item())


def test_sampling_without_replacement_is_distinct_and_covers_the_pool():
    rng = np.random.default_rng(0)
    free = np.arange(100, 400)
    vals, mask = _without_replacement(rng, free, 500, 100)
    assert mask.all()
    assert all(len(set(r)) == 100 for r in vals.tolist())
    counts = np.bincount(vals.reshape(-1) - 100, minlength=300)
    assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.5 * counts.mean()
    small, mask2 = _without_replacement(rng, np.arange(5), 3, 10)
    assert mask2.sum(axis=1).tolist() == [5, 5, 5]
