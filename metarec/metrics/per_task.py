"""Evaluation metrics for few-shot recommendation on padded episode tensors.

Every per-task metric takes ``(T, N)`` tensors laid out like
:class:`~metarec.episodes.batch.EpisodeSet`: ``scores`` (the model's predictions), ``targets``
(ratings, or 0/1 labels for implicit feedback) and a boolean ``mask`` (True = a real
interaction, False = padding). It returns a ``float64 (T,)`` tensor with one value per task;
padded positions never change a result. A task on which a metric is undefined (no real item,
no positive, no negative, ...) gets ``NaN``; :func:`mean_over_tasks` averages the finite
values, so such tasks are skipped, and :func:`mean_ci` adds a Student-t confidence interval.

Averaging conventions (they give different numbers; say which one a table reports):

* :func:`mae` / :func:`rmse` are **per task** (error over one task's real query items), and a
  headline number is their mean over tasks. MeLU (Lee et al., KDD 2019) reports MAE as the mean
  over tasks (users) of the per-task MAE, i.e. ``mean_over_tasks(mae(...))``.
* :func:`pooled_mae` / :func:`pooled_rmse` pool all real interactions of all tasks into one
  error, so tasks with larger query sets weigh more. For MAE the two agree when every task has
  the same query size; for RMSE they differ even then (mean of square roots vs root of mean).

Ranking within the query set (as MeLU and TaNP report: each task's query items are ranked by
score and compared with their true ratings/labels): :func:`ndcg_at_k`, :func:`hr_at_k`,
:func:`mrr`, :func:`auc`. Ranking one held-out positive against sampled negatives or the full
catalogue: :func:`rank_of_positive` then :func:`hr_at_k_from_rank`,
:func:`ndcg_at_k_from_rank`, :func:`mrr_from_rank`.

Ties in scores are broken **pessimistically** everywhere: among items with equal scores, the
less relevant ones are ranked first (and a positive tied with a negative is ranked below it).
So a model that outputs constant scores gets the worst ranking, never a lucky one; AUC instead
counts a tied (positive, negative) pair as half correct, as is standard.

:func:`degenerate_flags` names results that look good for the wrong reason (constant
predictions, query sets smaller than ``k``, a metric that is 1.0 whatever the scores), and
:func:`evaluate` returns the standard set of means for one query :class:`EpisodeSet`.

The averaging and its Student-t intervals live in :mod:`metarec.metrics.averaging`, the flags in
:mod:`metarec.metrics.degenerate` and the input checks in ``metarec.metrics._checks``; every name is
importable from here.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from metarec._errors import ConfigError, suggest
from metarec.episodes.batch import EpisodeSet
from metarec.metrics._checks import _check_2d, _check_binary, _check_k, _nan, _work_dtype
from metarec.metrics.averaging import _t_upper_tail as _t_upper_tail  # used by metarec.bench.stats
from metarec.metrics.averaging import mean_ci, mean_over_tasks, student_t_quantile
from metarec.metrics.degenerate import degenerate_flags

__all__ = [
    "mae",
    "rmse",
    "pooled_mae",
    "pooled_rmse",
    "ndcg_at_k",
    "hr_at_k",
    "mrr",
    "auc",
    "rank_of_positive",
    "hr_at_k_from_rank",
    "ndcg_at_k_from_rank",
    "mrr_from_rank",
    "degenerate_flags",
    "evaluate",
    "mean_over_tasks",
    "mean_ci",
    "student_t_quantile",
]

Gain = Literal["exponential", "linear"]
Feedback = Literal["explicit", "implicit"]


# --------------------------------------------------------------------------- explicit


def mae(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each task over its real interactions.

    ``MAE_t = (1 / n_t) * sum_{i : mask[t,i]} |pred[t,i] - target[t,i]|`` with ``n_t`` the
    number of real items of task ``t``. Returns ``float64 (T,)``; ``NaN`` where ``n_t = 0``.
    MeLU's reported MAE is ``mean_over_tasks(mae(...))`` (mean over users of per-user MAE);
    see :func:`pooled_mae` for the error pooled over all interactions.
    """
    p, y, m = _check_2d(predictions, targets, mask, what="predictions")
    n = m.sum(dim=1)
    total = ((p - y).abs() * m).sum(dim=1)
    return torch.where(n > 0, total / n.clamp(min=1), _nan(total))


def rmse(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Root mean squared error of each task over its real interactions.

    ``RMSE_t = sqrt((1 / n_t) * sum_{i : mask[t,i]} (pred[t,i] - target[t,i])^2)``.
    Returns ``float64 (T,)``; ``NaN`` where ``n_t = 0``. The mean over tasks of ``RMSE_t`` is
    not the pooled RMSE (:func:`pooled_rmse`), even when all tasks have the same size.
    """
    p, y, m = _check_2d(predictions, targets, mask, what="predictions")
    n = m.sum(dim=1)
    total = ((p - y).square() * m).sum(dim=1)
    return torch.where(n > 0, (total / n.clamp(min=1)).sqrt(), _nan(total))


def pooled_mae(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    """MAE pooled over all real interactions of all tasks (one number, not per task).

    ``MAE_pooled = sum_{t,i : mask} |pred - target| / sum_t n_t``; ``NaN`` if no real item.
    Tasks with larger query sets weigh more than in ``mean_over_tasks(mae(...))``.
    """
    p, y, m = _check_2d(predictions, targets, mask, what="predictions")
    n = int(m.sum())
    return float(((p - y).abs() * m).sum()) / n if n else float("nan")


def pooled_rmse(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    """RMSE pooled over all real interactions of all tasks (one number, not per task).

    ``RMSE_pooled = sqrt(sum_{t,i : mask} (pred - target)^2 / sum_t n_t)``; ``NaN`` if no real
    item.
    """
    p, y, m = _check_2d(predictions, targets, mask, what="predictions")
    n = int(m.sum())
    return math.sqrt(float(((p - y).square() * m).sum()) / n) if n else float("nan")


# --------------------------------------------------------------------------- within-query ranking


def _pessimistic_order(s: torch.Tensor, rel: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Permutation ``(T, N)``: real items first, by score descending, ties by relevance ascending.

    Built from stable sorts applied least-significant key first.
    """
    idx = torch.sort(rel, dim=1, stable=True).indices  # ties: least relevant first
    order = torch.sort(s.gather(1, idx), dim=1, descending=True, stable=True).indices
    idx = idx.gather(1, order)
    order = torch.sort(m.gather(1, idx).to(torch.int8), dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def _discounts(n: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """``1 / log2(position + 1)`` for positions ``1..n``, zero beyond ``k``; shape ``(n,)``."""
    pos = torch.arange(1, n + 1, dtype=like.dtype, device=like.device)
    return torch.where(pos <= k, 1.0 / torch.log2(pos + 1.0), torch.zeros_like(pos))


def ndcg_at_k(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    gain: Gain = "exponential",
) -> torch.Tensor:
    """nDCG@k of each task's real items ranked by ``scores``, with graded ``relevance``.

    ``DCG@k = sum_{r=1}^{min(k, n_t)} g(rel_(r)) / log2(r + 1)`` where ``rel_(r)`` is the true
    relevance of the item ranked ``r``-th by score, and ``nDCG@k = DCG@k / IDCG@k`` with
    ``IDCG@k`` the DCG@k of the items sorted by their true relevance. The gain ``g`` is
    ``2^rel - 1`` (``gain="exponential"``, the standard Järvelin-Kekäläinen/Burges form, the
    default) or ``rel`` (``gain="linear"``). The official MeLU code does not include its nDCG
    implementation and re-implementations use either gain, so state the gain when comparing
    with published numbers. Relevance is the rating (explicit) or the 0/1 label (implicit,
    where both gains coincide).

    Ties in scores are broken pessimistically (less relevant item first). If ``n_t < k`` the
    whole query is ranked. Returns ``float64 (T,)``; ``NaN`` where ``IDCG = 0`` (no real item,
    or every real item has zero gain: no ranking is better than another).
    """
    _check_k(k)
    if gain not in ("exponential", "linear"):
        raise ConfigError(
            f"gain={gain!r}: must be 'exponential' (2^rel - 1) or 'linear' (rel)"
            f"{suggest(str(gain), ['exponential', 'linear'])}"
        )
    s, rel, m = _check_2d(scores, relevance, mask)
    if bool((rel[m] < 0).any()):
        raise ConfigError(
            "relevance is negative at some real positions: graded gains need relevance >= 0; "
            "shift the ratings (e.g. rating - min_rating) or binarize them"
        )
    g = torch.expm1(rel * math.log(2.0)) if gain == "exponential" else rel
    g = g * m
    n = s.shape[1]
    disc = _discounts(n, k, g)
    order = _pessimistic_order(s, rel, m)
    dcg = (g.gather(1, order) * disc).sum(dim=1)
    idcg = (torch.sort(g, dim=1, descending=True).values * disc).sum(dim=1)
    return torch.where(idcg > 0, dcg / idcg.clamp(min=torch.finfo(g.dtype).tiny), _nan(dcg))


def _first_positive_rank(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """1-based pessimistic position of the best-ranked positive; ``NaN`` if the task has none."""
    s, y, m = _check_2d(scores, labels, mask)
    _check_binary(y, m)
    order = _pessimistic_order(s, y, m)
    pos = (y * m).gather(1, order) > 0
    if s.shape[1] == 0:
        return torch.full(s.shape[:1], math.nan, dtype=s.dtype, device=s.device)
    ranks = torch.arange(1, s.shape[1] + 1, dtype=s.dtype, device=s.device).expand_as(s)
    first = torch.where(pos, ranks, torch.full_like(ranks, math.inf)).min(dim=1).values
    return torch.where(torch.isinf(first), _nan(first), first)


def hr_at_k(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Hit rate@k within each task's query: 1 if a positive is among the top-``k`` ranked items.

    ``HR@k_t = 1[min_{i positive} rank_t(i) <= k]`` with ``rank_t`` the 1-based position of
    item ``i`` when task ``t``'s real items are sorted by score (ties pessimistic: negatives
    first). ``labels`` are 0/1. Returns ``float64 (T,)``; ``NaN`` for tasks with no positive.
    If ``k >= n_t`` every task with a positive scores 1 (see :func:`degenerate_flags`).
    """
    _check_k(k)
    first = _first_positive_rank(scores, labels, mask)
    return torch.where(torch.isnan(first), first, (first <= k).to(first.dtype))


def mrr(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reciprocal rank of the best-ranked positive within each task's query.

    ``RR_t = 1 / min_{i positive} rank_t(i)`` (1-based, ties pessimistic: negatives first);
    its mean over tasks is the MRR. ``labels`` are 0/1. Returns ``float64 (T,)``; ``NaN`` for
    tasks with no positive.
    """
    return 1.0 / _first_positive_rank(scores, labels, mask)


def auc(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ROC AUC of each task: the fraction of (positive, negative) pairs ordered correctly.

    ``AUC_t = (1 / (P_t * N_t)) * sum_{p pos} sum_{q neg} (1[s_p > s_q] + 0.5 * 1[s_p = s_q])``
    over task ``t``'s real items (``P_t`` positives, ``N_t`` negatives; ties count 0.5, so
    constant scores give 0.5). ``labels`` are 0/1. Computed in ``O(N log N)`` per task by
    sorting the negatives. Returns ``float64 (T,)``; ``NaN`` where ``P_t = 0`` or ``N_t = 0``.
    """
    s, y, m = _check_2d(scores, labels, mask)
    _check_binary(y, m)
    pos = m & (y > 0)
    neg = m & (y == 0)
    inf = torch.full_like(s, math.inf)
    neg_sorted = torch.sort(torch.where(neg, s, inf), dim=1).values.contiguous()
    probe = s.contiguous()
    below = torch.searchsorted(neg_sorted, probe, side="left").to(s.dtype)  # negatives < s_p
    upto = torch.searchsorted(neg_sorted, probe, side="right").to(s.dtype)  # negatives <= s_p
    correct = ((below + 0.5 * (upto - below)) * pos).sum(dim=1)
    pairs = pos.sum(dim=1).to(s.dtype) * neg.sum(dim=1).to(s.dtype)
    return torch.where(pairs > 0, correct / pairs.clamp(min=1), _nan(correct))


# --------------------------------------------------------------------------- rank against negatives


def rank_of_positive(
    pos_score: torch.Tensor, neg_scores: torch.Tensor, neg_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """1-based rank of each task's positive among itself and its negatives.

    ``rank_t = 1 + #{j : neg_mask[t,j] and neg_scores[t,j] >= pos_score[t]}``: every real
    negative scored **at least as high** as the positive is ranked above it (ties counted
    pessimistically), so constant scores give the worst rank ``M_t + 1``, never a lucky 1.
    ``pos_score`` is ``(T,)``, ``neg_scores`` ``(T, M)`` (sampled negatives or the whole
    catalogue minus the positive), ``neg_mask`` ``bool (T, M)`` (default: all real).
    Returns ``int64 (T,)``.
    """
    if pos_score.dim() != 1 or neg_scores.dim() != 2 or neg_scores.shape[0] != pos_score.shape[0]:
        raise ConfigError(
            f"pos_score {tuple(pos_score.shape)} and neg_scores {tuple(neg_scores.shape)}: "
            "expected (T,) and (T, M); pass one positive score and one row of negatives per task"
        )
    if neg_mask is None:
        neg_mask = torch.ones(neg_scores.shape, dtype=torch.bool, device=neg_scores.device)
    pos2 = pos_score.detach().unsqueeze(1).expand_as(neg_scores)
    # Reuse the (T, N) validation with the positive score as "targets".
    s, p, m = _check_2d(neg_scores, pos2, neg_mask, what="neg_scores")
    if not bool(torch.isfinite(pos_score.detach()).all()):
        raise ConfigError(
            "pos_score contains NaN or infinite values: ranks are undefined; check the model "
            "for divergence before evaluating"
        )
    return 1 + ((s >= p) & m).sum(dim=1).to(torch.int64)


def _check_rank(rank: torch.Tensor) -> torch.Tensor:
    if rank.numel() and bool((rank < 1).any()):
        raise ConfigError(
            f"rank contains values < 1 (min {rank.min().item()}): ranks are 1-based; "
            "pass the output of rank_of_positive (add 1 to 0-based ranks)"
        )
    return rank.detach().to(_work_dtype(rank))


def hr_at_k_from_rank(rank: torch.Tensor, k: int) -> torch.Tensor:
    """Hit rate@k from 1-based ranks: ``HR@k_t = 1[rank_t <= k]``. Returns ``float64 (T,)``."""
    _check_k(k)
    r = _check_rank(rank)
    return (r <= k).to(r.dtype)


def ndcg_at_k_from_rank(rank: torch.Tensor, k: int) -> torch.Tensor:
    """nDCG@k for a single relevant item: ``1 / log2(rank_t + 1)`` if ``rank_t <= k`` else 0.

    With one positive the ideal DCG is ``1 / log2(2) = 1``, so this is also the DCG.
    Returns ``float64 (T,)``.
    """
    _check_k(k)
    r = _check_rank(rank)
    return torch.where(r <= k, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r))


def mrr_from_rank(rank: torch.Tensor) -> torch.Tensor:
    """Reciprocal rank ``1 / rank_t`` (no cutoff); its mean over tasks is the MRR. ``(T,)``."""
    return 1.0 / _check_rank(rank)


# --------------------------------------------------------------------------- standard set


def evaluate(
    predictions: torch.Tensor,
    query: EpisodeSet,
    feedback: Feedback = "explicit",
    k: int = 10,
) -> dict[str, float | list[str]]:
    """The standard metrics on one query set, averaged over tasks with >= 1 real query item.

    * ``feedback="explicit"`` (targets are ratings): ``"mae"``, ``"rmse"`` (means over tasks of
      the per-task values, MeLU's convention) and ``"ndcg@{k}"`` (within the query,
      relevance = rating, exponential gain).
    * ``feedback="implicit"`` (targets are 0/1): ``"auc"``, ``"ndcg@{k}"``, ``"hr@{k}"`` and
      ``"mrr"``, all within the query set.

    Also ``"n_tasks"`` (tasks averaged over, as a float) and ``"flags"`` (the list from
    :func:`degenerate_flags`). Tasks on which a metric is undefined (e.g. AUC with only
    positives) are left out of that metric's mean; a metric undefined on every task is ``NaN``.
    ``predictions`` is ``(T, N)``, aligned with ``query.targets``.
    """
    if feedback not in ("explicit", "implicit"):
        raise ConfigError(
            f"feedback={feedback!r}: must be 'explicit' (ratings) or 'implicit' (0/1 labels)"
            f"{suggest(str(feedback), ['explicit', 'implicit'])}"
        )
    _check_k(k)
    y, m = query.targets, query.mask
    _check_2d(predictions, y, m, what="predictions")
    y, m = y.to(predictions.device), m.to(predictions.device)
    keep = m.sum(dim=1) > 0
    p, y, m = predictions[keep], y[keep], m[keep]
    out: dict[str, float | list[str]] = {}
    if feedback == "explicit":
        out["mae"] = mean_over_tasks(mae(p, y, m))
        out["rmse"] = mean_over_tasks(rmse(p, y, m))
        out[f"ndcg@{k}"] = mean_over_tasks(ndcg_at_k(p, y, m, k))
    else:
        out["auc"] = mean_over_tasks(auc(p, y, m))
        out[f"ndcg@{k}"] = mean_over_tasks(ndcg_at_k(p, y, m, k))
        out[f"hr@{k}"] = mean_over_tasks(hr_at_k(p, y, m, k))
        out["mrr"] = mean_over_tasks(mrr(p, y, m))
    out["n_tasks"] = float(int(keep.sum()))
    out["flags"] = degenerate_flags(p, y, m, k=k)
    return out
