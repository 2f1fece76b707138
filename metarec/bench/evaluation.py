"""Benchmark scoring: within-query metrics plus ranking against sampled negatives and the catalogue.

:func:`score_pool` adapts to every task of a pool (through a ``scorer_for`` callback, so trained
models and the popularity baseline share it) and returns :func:`metarec.metrics.evaluate.evaluate_pool`'s
keys plus per-task arrays. Besides the within-query metrics
(:func:`metarec.metrics.evaluate.per_task_metrics`), each task's **held-out positive** is ranked against
other items the task's user never interacted with (anywhere in the table), from the task's
domain:

* ``*_neg`` metrics: against ``negatives`` (default 99) items sampled uniformly without
  replacement (seeded; the same candidates for every algorithm);
* ``*_all`` metrics: against the whole catalogue of the domain (every such item).

The held-out positive is the task's highest-rated query item (explicit feedback; the first in
query order among ties), and it counts only when its rating is at least the relevance threshold
(4 on a 1..5 scale: ``low + 0.75 * (high - low)``); with implicit feedback it is the task's first
positive query item. A task without one gets ``NaN`` (left out of the mean). With rank ``r``
(1-based, ties pessimistic: a negative scored equal to the positive ranks above it) and ``M``
negatives: ``hr@k = 1[r <= k]``, ``ndcg@k = 1[r <= k] / log2(r + 1)``, ``mrr = 1 / r`` and
``auc = (#{neg < pos} + 0.5 #{neg = pos}) / M`` (see :mod:`metarec.metrics.per_task`).

These single-positive definitions hold for every scenario without ``protocol.ranking``. A ranking
scenario passes ``ranking`` (:class:`metarec.bench.ranking.RankingSpec`) instead: every relevant
query item is ranked against the state's whole catalogue (``recall@20_all``, ``ndcg@10_all``,
``hr@10_all``, ``mrr_all``, ``coverage@10``, ``overlap@10``, ``pop@10``) and against 100 sampled
negatives each (``*_neg``); see :mod:`metarec.bench.ranking`. Methods whose scores rank items but
are not ratings (``score_kind = "rank"``) get no error metrics (``mae``, ``rmse``) on explicit data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from metarec import metrics as M
from metarec.bench.ranking import ERROR_METRICS, RankingSpec, rank_batch, scores_rank_only
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeBatch
from metarec.episodes.pool import TaskPool
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.metrics.evaluate import PoolScores, clip_to_scale, per_task_metrics

__all__ = ["NEGATIVES", "Catalogue", "Scorer", "score_pool"]

NEGATIVES = 99
"""Sampled negatives per held-out positive (the common 1 + 99 candidate protocol)."""

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(users (T, N), items (T, N)) -> scores (T, N)`` for the tasks of one batch."""


class Catalogue:
    """Per-user interacted items and per-domain item lists of a table (built once per table)."""

    def __init__(self, table: InteractionTable):
        order = np.argsort(table.users, kind="stable")
        self._items = table.items[order]
        self._start = np.searchsorted(table.users[order], np.arange(table.n_users + 1))
        # an item's domain: the domain of most of its interactions
        n_dom = max(int(table.domains.max(initial=0)) + 1, 1)
        counts = np.zeros((table.n_items, n_dom), dtype=np.int64)
        np.add.at(counts, (table.items, table.domains), 1)
        seen = counts.sum(axis=1) > 0
        item_domain = np.where(seen, counts.argmax(axis=1), -1)
        self.by_domain = {d: np.flatnonzero(item_domain == d) for d in range(n_dom)}
        self.all_items = np.flatnonzero(seen)
        self.threshold = None
        if table.feedback == "explicit" and table.rating_scale is not None:
            lo, hi = table.rating_scale
            self.threshold = lo + 0.75 * (hi - lo)

    def seen(self, user: int) -> np.ndarray:
        """Sorted items ``user`` interacted with anywhere in the table."""
        return np.unique(self._items[self._start[user] : self._start[user + 1]])

    def domain_items(self, domain: int) -> np.ndarray:
        items = self.by_domain.get(domain)
        return items if items is not None and items.size else self.all_items

    def negatives(
        self, user: int, domain: int, n: int | None, rng: np.random.Generator
    ) -> np.ndarray:
        """Items of ``domain`` that ``user`` never interacted with: ``n`` sampled, or all (``None``)."""
        pool = self.domain_items(domain)
        free = pool[~np.isin(pool, self.seen(user), assume_unique=True)]
        if n is None or free.size <= n:
            return free
        return np.sort(rng.choice(free, size=n, replace=False))


def _positives(batch: EpisodeBatch, cat: Catalogue) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task: the held-out positive's user and item, and whether the task has one."""
    q = batch.query
    tg = q.targets.detach().cpu().double().numpy()
    m = q.mask.cpu().numpy()
    rel = np.where(m, tg, -np.inf)
    j = rel.argmax(axis=1)
    best = rel[np.arange(len(j)), j]
    ok = best >= (cat.threshold if cat.threshold is not None else 1.0)
    users = q.users.cpu().numpy()[np.arange(len(j)), j]
    items = q.items.cpu().numpy()[np.arange(len(j)), j]
    return users, items, ok


def _rank_metrics(
    pos: torch.Tensor, neg: torch.Tensor, nmask: torch.Tensor, ok: torch.Tensor, k: int, suffix: str
) -> dict[str, torch.Tensor]:
    rank = M.rank_of_positive(pos, neg, nmask)
    nan = torch.full(pos.shape, float("nan"), dtype=torch.float64)
    n_neg = nmask.sum(dim=1).double()
    below = ((neg < pos.unsqueeze(1)) & nmask).sum(dim=1).double()
    ties = ((neg == pos.unsqueeze(1)) & nmask).sum(dim=1).double()
    auc = torch.where(n_neg > 0, (below + 0.5 * ties) / n_neg.clamp(min=1), nan)
    keep = ok & (n_neg > 0)
    out = {
        f"hr@{k}_{suffix}": M.hr_at_k_from_rank(rank, k),
        f"ndcg@{k}_{suffix}": M.ndcg_at_k_from_rank(rank, k),
        f"mrr_{suffix}": M.mrr_from_rank(rank),
        f"auc_{suffix}": auc,
    }
    return {name: torch.where(keep, v.double().cpu(), nan) for name, v in out.items()}


def _candidates(
    batch, cat, users, items, ok, n: int | None, rng
) -> tuple[torch.Tensor, torch.Tensor]:
    doms = batch.domains.cpu().numpy()
    lists = [
        cat.negatives(int(u), int(d), n, rng) if o else np.zeros(0, dtype=np.int64)
        for u, d, o in zip(users, doms, ok, strict=True)
    ]
    width = max(1, max(len(x) for x in lists))
    neg = np.zeros((len(lists), width), dtype=np.int64)
    mask = np.zeros((len(lists), width), dtype=bool)
    for t, x in enumerate(lists):
        neg[t, : len(x)] = x
        mask[t, : len(x)] = True
    return torch.from_numpy(neg), torch.from_numpy(mask)


def _score_candidates(
    scorer: Scorer, users, items, neg, chunk: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the positive ``(T,)`` and of the negatives ``(T, M)``, ``chunk`` candidates at a time."""
    cand = torch.cat([torch.as_tensor(items).unsqueeze(1), neg], dim=1)  # (T, 1 + M)
    u = torch.as_tensor(users).unsqueeze(1).expand_as(cand)
    parts = [
        scorer(u[:, s : s + chunk].to(device), cand[:, s : s + chunk].to(device))
        .detach()
        .double()
        .cpu()
        for s in range(0, cand.shape[1], chunk)
    ]
    s = torch.cat(parts, dim=1)
    return s[:, 0], s[:, 1:]


def score_pool(
    table: InteractionTable,
    pool: TaskPool,
    sampler_config: SamplerConfig,
    scorer_for: Callable[[EpisodeBatch], Scorer],
    *,
    k: int = 10,
    seed: int = 0,
    negatives: int | None = NEGATIVES,
    catalogue: bool = False,
    cat: Catalogue | None = None,
    clip: bool = True,
    batch_size: int = 256,
    max_tasks: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    names: Sequence[str] | None = None,
    ranking: RankingSpec | None = None,
) -> dict[str, Any]:
    """Score every task of ``pool`` (pool order, fixed ``seed``: the same tasks, supports and
    sampled negatives for every algorithm).

    Args:
        scorer_for: called once per batch of tasks (it adapts to the batch's supports, and its
            time counts as adaptation time); returns the batch's :data:`Scorer`.
        negatives: sampled negatives per held-out positive (``None``: no sampled ranking).
        catalogue: also rank against the whole catalogue of the task's domain.
        clip: clip explicit predictions to the rating scale before the error metrics.
        names: the within-query metrics (a scenario's ``metrics.names``, see
            :func:`metarec.metrics.evaluate.metric_selection`); the ranking metrics (``*_neg``,
            ``*_all``) follow ``negatives`` and ``catalogue``.
        ranking: a ranking scenario's :class:`~metarec.bench.ranking.RankingSpec`: the ranking
            protocol's metrics replace the single-positive ``*_neg`` / ``*_all`` (``negatives``
            and ``catalogue`` are then ignored).

    Returns:
        ``{metric: mean over tasks, "n_tasks", "flags", "adapt_ms_per_task", "per_task":
        {metric: float64 (T,)}, "units": int64 (T,)}``.
    """
    cat = cat if cat is not None else Catalogue(table)
    sampler = TaskSampler(table, pool, sampler_config, seed=seed, device=device, dtype=dtype)
    rng = np.random.default_rng([seed, 7])
    n = len(pool) if max_tasks is None else min(max_tasks, len(pool))
    acc = PoolScores()
    adapt_s = 0.0
    ev = ranking.evaluator(table, pool) if ranking is not None else None
    rank_only = False
    for start in range(0, n, batch_size):
        positions = np.arange(start, min(start + batch_size, n))
        b = sampler.batch(positions)
        t0 = time.perf_counter()
        scorer = scorer_for(b)
        adapt_s += time.perf_counter() - t0
        with torch.no_grad():
            p = scorer(b.query.users, b.query.items)
            ranks = table.feedback == "explicit" and scores_rank_only(scorer)
            if clip and not ranks:  # clipping scores that are not ratings would flatten them
                p = clip_to_scale(p, table)
            vals = per_task_metrics(p, b.query.targets, b.query.mask, table.feedback, k, names)
            if ranks:
                rank_only = True
                vals = {m: v for m, v in vals.items() if m not in ERROR_METRICS}
            if ev is not None:
                vals.update(rank_batch(ev, positions, scorer, device))
            else:
                users, items, ok = _positives(b, cat)
                okt = torch.from_numpy(ok)
                for n_neg, suffix, chunk in ((negatives, "neg", 1024), (None, "all", 512)):
                    if (suffix == "neg" and negatives is None) or (
                        suffix == "all" and not catalogue
                    ):
                        continue
                    neg, nmask = _candidates(b, cat, users, items, ok, n_neg, rng)
                    ps, ns = _score_candidates(scorer, users, items, neg, chunk, device)
                    vals.update(_rank_metrics(ps, ns, nmask, okt, k, suffix))
        acc.add(vals, p, b.query.targets, b.query.mask)
    out = acc.result(n, k, adapt_s=adapt_s, per_task=True)
    out["units"] = pool.units[:n].copy()
    if rank_only:
        out["flags"].append(
            "scores rank items and are not ratings: error metrics (mae, rmse) are left out"
        )
    if ev is not None:
        fin = ev.finish()
        out["flags"] += fin.pop("flags")
        for name, v in fin.items():
            if isinstance(v, np.ndarray):
                out["per_task"][name] = v
                out[name] = M.mean_over_tasks(v.tolist())
            else:
                out[name] = float(v)
    return out
