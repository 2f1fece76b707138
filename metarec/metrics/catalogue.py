"""Ranking a whole catalogue for each task: accuracy with several relevant items, and
beyond-accuracy measures of the served top-k lists.

Inputs are one block of tasks: ``scores (T, C)`` over the ``C`` catalogue items, ``candidates``
``bool (T, C)`` (the items a task may be recommended) and ``relevant`` ``bool (T, C)`` (its
relevant query items; only relevant candidates count). Ranks are **pessimistic**: a
non-relevant candidate scored equal to a relevant item ranks above it, so constant scores get
the worst ranking, never a lucky one (as everywhere in :mod:`metarec.metrics.per_task`). Among
relevant items ties do not matter (gains are binary). A ``NaN`` score ranks last.

With ``R`` the relevant candidates of a task and ``r_1 <= r_2 <= ...`` their ranks (1-based):

* ``recall@K = |{j : r_j <= K}| / min(K, |R|)`` (1 when the top ``K`` holds as many relevant
  items as it can);
* ``ndcg@K = sum_{j : r_j <= K} 1 / log2(r_j + 1) / IDCG``, ``IDCG = sum_{i=1}^{min(K, |R|)} 1 / log2(i + 1)``
  (binary gains);
* ``hr@K = 1[r_1 <= K]``; ``mrr = 1 / r_1``.

A task with ``|R| = 0`` gets ``NaN`` (left out of means). Only the ranks up to the deepest cut-off
are needed besides ``r_1``, so no row is sorted: one ``topk`` of the non-relevant scores, one of
the (few) relevant ones, and a comparison pass for ``r_1`` only where it lies deeper
(:func:`rank_catalogue`, which takes index lists; :func:`relevant_ranks` takes masks).

Beyond accuracy, on the served top-``k`` lists (:func:`served_top_k`, ties by lower catalogue
position, as ``recommend`` serves) of a pool of ``T`` tasks (:func:`beyond_accuracy`):

* ``coverage@k = |union of the lists| / C``;
* ``overlap@k``: the share of its ``k`` items that a task's list has in common with another
  task's list, averaged over every other task: ``overlap_t = sum_{i in L_t} (c_i - 1) / ((T - 1) k)``
  with ``c_i`` the number of lists holding item ``i``; its mean over tasks is the mean of
  ``|L_a ∩ L_b| / k`` over all pairs of distinct tasks (the exact value that randomly drawn
  pairs estimate);
* ``pop@k``: the mean popularity percentile of a task's listed items, with
  :func:`popularity_percentile` of meta-train counts (1: the most popular item, 0: the least).

Example:
    >>> s = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    >>> cand = torch.ones(1, 4, dtype=torch.bool)
    >>> rel = torch.tensor([[False, True, False, True]])
    >>> m = catalogue_metrics(s, cand, rel, ndcg_k=2, recall_k=2, hr_k=2)
    >>> round(float(m["ndcg@2_all"][0]), 4), float(m["recall@2_all"][0]), float(m["mrr_all"][0])
    (0.3869, 0.5, 0.5)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from metarec.metrics.topk import top_k

__all__ = [
    "RANKING_METRICS",
    "BEYOND_ACCURACY",
    "rank_catalogue",
    "relevant_ranks",
    "metrics_from_ranks",
    "catalogue_metrics",
    "served_top_k",
    "popularity_percentile",
    "beyond_accuracy",
    "sampled_negative_metrics",
]

RANKING_METRICS = ("recall@20_all", "ndcg@10_all", "hr@10_all", "mrr_all")
"""The catalogue ranking metrics of the ranking protocol (default cut-offs)."""
BEYOND_ACCURACY = ("coverage@10", "overlap@10", "pop@10")
"""Beyond-accuracy measures of the served top-10 lists."""


def _clean(scores: torch.Tensor) -> torch.Tensor:
    """A copy with NaN -> -inf (a NaN ranks last). The sum is NaN whenever an entry is (one
    reduction, several times cheaper than testing every entry)."""
    s = scores.clone()
    if bool(torch.isnan(s.sum())):
        s = torch.nan_to_num(s, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    return s


def rank_catalogue(
    scores: torch.Tensor,
    excluded: tuple[torch.Tensor, torch.Tensor],
    relevant: tuple[torch.Tensor, torch.Tensor],
    depth: int,
    k: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ranking statistics of a block of tasks from index lists (the fast form of
    :func:`relevant_ranks` plus :func:`served_top_k`).

    Args:
        scores: ``(T, C)``.
        excluded: ``(rows, cols)`` of the entries that are not candidates.
        relevant: ``(rows, cols)`` of the relevant entries (unique, rows ascending; none of
            them excluded).
        depth: how many of the best relevant items to rank.
        k: the served list's length.

    Returns:
        ``(ranks (T, D), n_relevant (T,), first (T,), served (T, k))`` as :func:`relevant_ranks`
        and :func:`served_top_k` define them.

    Cost: one copy of ``scores``, two ``topk`` passes and, for the tasks whose best relevant
    item ranks below ``depth`` only, one comparison pass; no sort of a row.
    """
    s = _clean(scores)  # (T, C), a copy we may write into
    T, C = s.shape
    D = min(int(depth), C)
    er, ec = excluded
    rr, rc = relevant
    s[er, ec] = -math.inf
    served = _served(s, k, n_candidates=C - torch.bincount(er, minlength=T))
    rel_s = s[rr, rc]  # (P,) relevant scores
    s[rr, rc] = -math.inf  # s now holds the non-relevant candidates
    n_rel = torch.bincount(rr, minlength=T)
    n_non = C - n_rel - torch.bincount(er, minlength=T)
    if D == 0:
        z = torch.zeros(T, 0, dtype=torch.long)
        return z, n_rel, torch.zeros(T, dtype=torch.long), served
    width = max(int(n_rel.max()) if n_rel.numel() else 0, 1)
    slot = torch.arange(rr.shape[0]) - torch.repeat_interleave(
        torch.cumsum(n_rel, 0) - n_rel, n_rel
    )
    grid = torch.full((T, width), -math.inf, dtype=s.dtype)
    grid[rr, slot] = rel_s
    v_rel = torch.topk(grid, min(D, width), dim=1).values  # (T, D') best relevant, descending
    if v_rel.shape[1] < D:
        v_rel = torch.cat([v_rel, torch.full((T, D - v_rel.shape[1]), -math.inf, dtype=s.dtype)], 1)
    v_non = torch.topk(s, D, dim=1).values  # (T, D) best non-relevant
    j = torch.arange(1, D + 1)
    real = torch.arange(D).unsqueeze(0) < n_non.unsqueeze(1)
    above = ((v_non.unsqueeze(1) >= v_rel.unsqueeze(2)) & real.unsqueeze(1)).sum(dim=2)  # (T, D)
    exact = (above < D) | (n_non <= D).unsqueeze(1)
    ranks = torch.where(exact, j + above, torch.full_like(above, depth + 1))
    ranks = torch.where(j.unsqueeze(0) <= n_rel.unsqueeze(1), ranks, torch.zeros_like(ranks))
    first = ranks[:, 0].clone()
    deep = torch.nonzero((n_rel > 0) & ~exact[:, 0]).squeeze(1)  # r_1 beyond depth: count it
    if deep.numel():
        best = v_rel[deep, :1]
        # numpy's comparison and count run several times faster than torch's boolean reductions
        cnt = torch.from_numpy(np.count_nonzero(s[deep].numpy() >= best.numpy(), axis=1))
        # a -inf relevant score ties with every non-relevant candidate (and no excluded one)
        cnt = torch.where(best[:, 0] == -math.inf, n_non[deep], cnt)
        first[deep] = 1 + cnt
    return ranks, n_rel, first, served


def _served(s: torch.Tensor, k: int, n_candidates: torch.Tensor) -> torch.Tensor:
    """Top-``k`` columns of ``s`` (non-candidates at -inf), ties by lower column; ``-1`` beyond a
    task's number of candidates."""
    _, cols = top_k(s, k)
    slots = torch.arange(cols.shape[1]).unsqueeze(0)
    cols = torch.where(slots < n_candidates.unsqueeze(1), cols, torch.full_like(cols, -1))
    if cols.shape[1] < k:  # a catalogue smaller than k
        pad = torch.full((cols.shape[0], k - cols.shape[1]), -1, dtype=cols.dtype)
        cols = torch.cat([cols, pad], dim=1)
    return cols


def relevant_ranks(
    scores: torch.Tensor, candidates: torch.Tensor, relevant: torch.Tensor, depth: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pessimistic ranks of each task's best ``depth`` relevant candidates.

    Args:
        scores: ``(T, C)``.
        candidates, relevant: ``bool (T, C)``.
        depth: how many of the best relevant items to rank (the deepest cut-off).

    Returns:
        ``(ranks (T, D), n_relevant (T,), first (T,))``: ``ranks[t, j]`` the rank of task ``t``'s
        ``(j+1)``-th best relevant candidate (``D = min(depth, C)``; ``depth + 1`` when it ranks
        below ``depth``, ``0`` where the task has fewer relevant candidates), the number of
        relevant candidates, and ``r_1`` (the best relevant item's rank, exact at any depth;
        ``0`` without one). All ``int64``.
    """
    er, ec = torch.nonzero(~candidates, as_tuple=True)
    rr, rc = torch.nonzero(relevant & candidates, as_tuple=True)
    ranks, n_rel, first, _ = rank_catalogue(scores, (er, ec), (rr, rc), depth, k=0)
    return ranks, n_rel, first


def metrics_from_ranks(
    ranks: torch.Tensor,
    n_rel: torch.Tensor,
    first: torch.Tensor,
    *,
    recall_k: int = 20,
    ndcg_k: int = 10,
    hr_k: int = 10,
) -> dict[str, torch.Tensor]:
    """``{recall@K_all, ndcg@K_all, hr@K_all, mrr_all}`` (``float64 (T,)``) from
    :func:`relevant_ranks`' output at depth ``>= max(recall_k, ndcg_k)``."""
    r = ranks.double()
    ok = ranks > 0
    nan = torch.full(n_rel.shape, math.nan, dtype=torch.float64)
    has = n_rel > 0
    nr = n_rel.double()
    hits = ((ranks <= recall_k) & ok).sum(dim=1).double()
    recall = hits / torch.clamp(torch.minimum(nr, torch.tensor(float(recall_k))), min=1.0)
    gain = torch.where((ranks <= ndcg_k) & ok, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r))
    ideal = 1.0 / torch.log2(torch.arange(2, ndcg_k + 2, dtype=torch.float64))  # (K,)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), ideal.cumsum(0)])
    idcg = cum[torch.clamp(n_rel, max=ndcg_k)]
    ndcg = gain.sum(dim=1) / torch.clamp(idcg, min=1e-300)
    f = first.double()
    hr = (f <= hr_k).double()
    mrr = 1.0 / torch.clamp(f, min=1.0)
    out = {
        f"recall@{recall_k}_all": recall,
        f"ndcg@{ndcg_k}_all": ndcg,
        f"hr@{hr_k}_all": hr,
        "mrr_all": mrr,
    }
    return {name: torch.where(has, v, nan) for name, v in out.items()}


def catalogue_metrics(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    relevant: torch.Tensor,
    *,
    recall_k: int = 20,
    ndcg_k: int = 10,
    hr_k: int = 10,
) -> dict[str, torch.Tensor]:
    """``{recall@K_all, ndcg@K_all, hr@K_all, mrr_all}``: ``float64 (T,)`` each (formulas in the
    module docstring; ``NaN`` for a task without a relevant candidate)."""
    ranks, n_rel, first = relevant_ranks(scores, candidates, relevant, max(recall_k, ndcg_k))
    return metrics_from_ranks(ranks, n_rel, first, recall_k=recall_k, ndcg_k=ndcg_k, hr_k=hr_k)


def served_top_k(scores: torch.Tensor, candidates: torch.Tensor, k: int = 10) -> torch.Tensor:
    """The served top-``k`` catalogue positions of each task, best first, ties by lower
    position: ``int64 (T, k)``, ``-1`` where a task has fewer than ``k`` candidates."""
    s = _clean(scores)
    s[~candidates] = -math.inf
    return _served(s, k, candidates.sum(dim=1))


def popularity_percentile(counts: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of each item's count among ``C`` items: ``float64 (C,)``,
    ``(#{j: n_j < n_i} + (#{j: n_j = n_i} - 1) / 2) / (C - 1)``: 1 for the single most popular
    item, 0 for the single least popular, 0.5 for all when all counts are equal.

    >>> popularity_percentile(np.array([5, 0, 5, 9])).tolist()
    [0.5, 0.0, 0.5, 1.0]
    """
    n = np.asarray(counts, dtype=np.float64)
    C = n.shape[0]
    if C <= 1:
        return np.full(C, 0.5)
    srt = np.sort(n)
    below = np.searchsorted(srt, n, side="left")
    equal = np.searchsorted(srt, n, side="right") - below
    return (below + (equal - 1) / 2.0) / (C - 1)


def beyond_accuracy(
    served: np.ndarray, n_catalogue: int, percentile: np.ndarray, k: int = 10
) -> tuple[float, np.ndarray, np.ndarray]:
    """``(coverage@k, overlap@k (T,), pop@k (T,))`` of a pool's served lists.

    Args:
        served: ``int64 (T, k)`` catalogue positions (``-1``: an empty slot, not counted).
        n_catalogue: ``C``.
        percentile: ``float64 (C,)``: :func:`popularity_percentile` of the catalogue items.

    ``overlap`` is ``NaN`` with fewer than two tasks, ``pop`` where a list is empty (formulas in
    the module docstring).
    """
    served = np.asarray(served, dtype=np.int64)
    T = served.shape[0]
    ok = served >= 0
    items = served[ok]
    coverage = float(np.unique(items).shape[0]) / max(n_catalogue, 1)
    counts = np.bincount(items, minlength=n_catalogue).astype(np.float64)
    c = np.where(ok, counts[np.maximum(served, 0)] - 1.0, 0.0)
    overlap = c.sum(axis=1) / ((T - 1) * k) if T > 1 else np.full(T, np.nan)
    pct = np.where(ok, np.asarray(percentile, dtype=np.float64)[np.maximum(served, 0)], 0.0)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pop = np.where(n > 0, pct.sum(axis=1) / np.maximum(n, 1), np.nan)
    return coverage, overlap, pop


def sampled_negative_metrics(
    positive: torch.Tensor,
    negatives: torch.Tensor,
    mask: torch.Tensor,
    task: torch.Tensor,
    n_tasks: int,
    k: int = 10,
) -> dict[str, torch.Tensor]:
    """Rank each relevant item against its own sampled negatives, then average per task.

    Args:
        positive: ``(P,)`` scores of ``P`` relevant items (of all tasks).
        negatives: ``(P, M)`` scores of each one's sampled negatives; ``mask`` ``bool (P, M)``.
        task: ``int64 (P,)``: the task of each relevant item.

    Returns:
        ``{hr@k_neg, ndcg@k_neg, mrr_neg, auc_neg}``: ``float64 (n_tasks,)``, each the mean over
        a task's relevant items of ``1[r <= k]``, ``1[r <= k] / log2(r + 1)``, ``1 / r`` and
        ``(#{neg < pos} + 0.5 #{neg = pos}) / M`` with ``r = 1 + #{neg >= pos}`` (pessimistic);
        ``NaN`` for a task without relevant items.
    """
    pos = _clean(positive).double().unsqueeze(1)
    neg = _clean(negatives).double()
    above = ((neg >= pos) & mask).sum(dim=1).double()
    below = ((neg < pos) & mask).sum(dim=1).double()
    ties = ((neg == pos) & mask).sum(dim=1).double()
    m = mask.sum(dim=1).double()
    r = 1.0 + above
    hit = (r <= k).double()
    per = {
        f"hr@{k}_neg": hit,
        f"ndcg@{k}_neg": hit / torch.log2(r + 1.0),
        "mrr_neg": 1.0 / r,
        "auc_neg": torch.where(
            m > 0, (below + 0.5 * ties) / m.clamp(min=1.0), torch.full_like(m, math.nan)
        ),
    }
    out = {}
    for name, v in per.items():
        ok = ~torch.isnan(v)
        tot = torch.zeros(n_tasks, dtype=torch.float64).index_add_(0, task[ok], v[ok])
        cnt = torch.zeros(n_tasks, dtype=torch.float64).index_add_(
            0, task[ok], torch.ones_like(v[ok])
        )
        out[name] = torch.where(cnt > 0, tot / cnt.clamp(min=1.0), torch.full_like(tot, math.nan))
    return out
