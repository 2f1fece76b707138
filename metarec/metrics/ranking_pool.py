"""Catalogue ranking of one evaluation pool, batch by batch (the ranking protocol's metrics).

:class:`CatalogueRanking` holds what a pool's ranking needs beside the scores: the catalogue
(sorted item indices, see :func:`metarec.episodes.ranking.state_catalogue`), each task's
excluded and relevant items (:func:`metarec.episodes.ranking.ranking_targets`), the catalogue's
meta-train popularity, and per relevant item ``negatives`` sampled negatives. Scoring is the
caller's (:func:`metarec.methods.catalogue.score_catalogue`); per batch of tasks in pool order::

    ev = CatalogueRanking(table, pool, items, counts)
    for start in range(0, len(pool), 256):
        scores = ...                                        # (T, C) over ev.items
        vals = ev.batch(np.arange(start, start + T), scores)   # {metric: (T,)}
    pool_level = ev.finish()                                # coverage@10, overlap@10, pop@10

Metrics (:mod:`metarec.metrics.catalogue` for the formulas): ``recall@20_all``, ``ndcg@10_all``,
``hr@10_all``, ``mrr_all`` over the catalogue; ``hr@10_neg``, ``ndcg@10_neg``, ``mrr_neg``,
``auc_neg``: each relevant item against its own ``negatives`` items sampled uniformly without
replacement from the catalogue items the user never interacted with (anywhere in the table),
averaged over the task's relevant items (seeded per task unit: the same candidates for every
method and every number of shots); ``overlap@10`` and ``pop@10`` per task and ``coverage@10`` for
the pool, on the served top-10 lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool
from metarec.episodes.ranking import ranking_targets
from metarec.metrics.catalogue import (
    beyond_accuracy,
    metrics_from_ranks,
    popularity_percentile,
    rank_catalogue,
    sampled_negative_metrics,
)

__all__ = ["CatalogueRanking", "RANKING_NEGATIVES"]

RANKING_NEGATIVES = 100
"""Sampled negatives per relevant query item (``*_neg`` metrics of the ranking protocol)."""


class CatalogueRanking:
    """The catalogue ranking of one pool (see the module docstring).

    Args:
        table: the interaction table.
        pool: an evaluation pool with pinned queries.
        items: ``int64 (C,)`` sorted catalogue item indices.
        counts: ``(C,)`` meta-train interaction counts of the catalogue items (``pop@10``).
        relevance: the relevance threshold (``None``: the table's default, see
            :func:`metarec.episodes.ranking.relevance_threshold`).
        negatives: sampled negatives per relevant item (``None`` or 0: no ``*_neg`` metrics).
        seed: seeds the sampled negatives.
        k: the served list's length (``coverage@k``, ``overlap@k``, ``pop@k``).
    """

    def __init__(
        self,
        table: InteractionTable,
        pool: TaskPool,
        items: np.ndarray,
        counts: np.ndarray,
        *,
        relevance: float | None = None,
        negatives: int | None = RANKING_NEGATIVES,
        seed: int = 0,
        k: int = 10,
    ) -> None:
        self.items = np.asarray(items, dtype=np.int64)
        self.k = k
        self.negatives = int(negatives or 0)
        self.seed = seed
        self.percentile = popularity_percentile(np.asarray(counts))
        self.targets = ranking_targets(table, pool, relevance)
        self.units = pool.units
        self.users = (
            table.users[pool.rows[pool.offsets[:-1]]] if len(pool) else np.zeros(0, np.int64)
        )
        C = self.items.shape[0]
        t = self.targets
        self._ex_pos, self._ex_off = self._positions(t.excluded, t.excluded_offsets)
        self._rel_pos, self._rel_off = self._positions(t.relevant, t.relevant_offsets)
        self.outside = int(t.relevant.shape[0] - self._rel_pos.shape[0])  # relevant, not in C
        if self.negatives:
            rows = np.flatnonzero(np.isin(table.users, self.users))
            u, it = table.users[rows], table.items[rows]
            o = np.lexsort((it, u))
            self._seen_users, self._seen_items = u[o], it[o]
        self._served: list[np.ndarray] = []
        self._no_relevant = 0
        self.n_catalogue = C

    # ------------------------------------------------------------------ public
    def batch(self, positions: np.ndarray, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-task metrics ``{name: float64 (T,)}`` of the pool's tasks at ``positions`` (pool
        order) from their catalogue ``scores (T, C)``; the served lists are kept for
        :meth:`finish`."""
        positions = np.asarray(positions, dtype=np.int64)
        T, C = scores.shape
        if C != self.n_catalogue or T != positions.shape[0]:
            raise ValueError(
                f"scores: expected ({positions.shape[0]}, {self.n_catalogue}) scores over the catalogue, "
                f"got {tuple(scores.shape)}"
            )
        scores = scores.detach().cpu()
        et, ec = self._pairs(positions, self._ex_pos, self._ex_off)
        rt, rc = self._pairs(positions, self._rel_pos, self._rel_off)
        ranks, n_rel, first, served = rank_catalogue(scores, (et, ec), (rt, rc), 20, self.k)
        vals = metrics_from_ranks(ranks, n_rel, first)
        self._no_relevant += int(torch.isnan(vals["ndcg@10_all"]).sum())
        self._served.append(served.numpy())
        if self.negatives:
            vals.update(self._sampled(positions, scores, rt, rc))
        return vals

    def finish(self) -> dict[str, Any]:
        """``{"coverage@k": float, "overlap@k": (n,), "pop@k": (n,), "flags": [...]}`` over every
        batch seen (then the served lists are cleared)."""
        served = (
            np.concatenate(self._served) if self._served else np.zeros((0, self.k), dtype=np.int64)
        )
        cov, overlap, pop = beyond_accuracy(served, self.n_catalogue, self.percentile, self.k)
        flags = []
        if self._no_relevant:
            flags.append(
                f"ranking: {self._no_relevant} of {served.shape[0]} task(s) have no relevant query item among "
                "the candidates (left out of the *_all and *_neg means)"
            )
        if self.outside:
            flags.append(
                f"ranking: {self.outside} relevant query item(s) lie outside the state's catalogue and are not ranked"
            )
        self._served, self._no_relevant = [], 0
        return {
            f"coverage@{self.k}": cov,
            f"overlap@{self.k}": overlap,
            f"pop@{self.k}": pop,
            "flags": flags,
        }

    # ------------------------------------------------------------------ helpers
    def _positions(self, items: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR item lists -> CSR catalogue positions (items outside the catalogue dropped)."""
        pos = np.searchsorted(self.items, items)
        inside = (
            (pos < self.items.shape[0])
            & (self.items[np.minimum(pos, max(self.items.shape[0] - 1, 0))] == items)
            if self.items.shape[0]
            else np.zeros(items.shape[0], dtype=bool)
        )
        seg = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
        kept = np.bincount(seg[inside], minlength=offsets.shape[0] - 1)
        return pos[inside].astype(np.int64), np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)

    @staticmethod
    def _pairs(
        positions: np.ndarray, pos: np.ndarray, off: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row, column)`` index tensors of the CSR lists of ``positions``."""
        starts, lens = off[positions], off[positions + 1] - off[positions]
        rows = np.repeat(np.arange(positions.shape[0]), lens)
        idx = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        return torch.from_numpy(rows), torch.from_numpy(pos[idx])

    def _free(self, user: int) -> np.ndarray:
        """Catalogue positions of items ``user`` never interacted with."""
        a, b = np.searchsorted(self._seen_users, [user, user + 1])
        seen = self._seen_items[a:b]
        return np.flatnonzero(~np.isin(self.items, seen))

    def _sampled(
        self, positions: np.ndarray, scores: torch.Tensor, rt: torch.Tensor, rc: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        M = self.negatives
        rows_np = rt.numpy()
        negs = np.zeros((rows_np.shape[0], M), dtype=np.int64)
        mask = np.zeros((rows_np.shape[0], M), dtype=bool)
        bounds = np.searchsorted(rows_np, np.arange(positions.shape[0] + 1))
        for t, j in enumerate(positions):
            a, b = bounds[t], bounds[t + 1]
            if a == b:
                continue
            free = self._free(int(self.users[j]))
            rng = np.random.default_rng([self.seed, 17, int(self.units[j])])
            picks, ok = _without_replacement(rng, free, b - a, M)
            negs[a:b], mask[a:b] = picks, ok
        pos_s = scores[rt, rc]
        neg_s = scores[rt.unsqueeze(1).expand(-1, M), torch.from_numpy(negs)]  # (P, M)
        return sampled_negative_metrics(
            pos_s, neg_s, torch.from_numpy(mask), rt, positions.shape[0], k=10
        )


def _without_replacement(
    rng: np.random.Generator, free: np.ndarray, rows: int, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` independent uniform draws of ``m`` distinct entries of ``free`` (all of them when
    ``free`` has at most ``m``): ``(values (rows, m), mask (rows, m))``. Duplicates of a draw with
    replacement are redrawn until none is left; the process is symmetric in the entries, so every
    ``m``-subset is equally likely."""
    f = free.shape[0]
    if f <= m:
        vals = np.zeros((rows, m), dtype=np.int64)
        vals[:, :f] = free
        mask = np.zeros((rows, m), dtype=bool)
        mask[:, :f] = True
        return vals, mask
    idx = rng.integers(0, f, size=(rows, m))
    for _ in range(1000):
        idx.sort(axis=1)
        dup = np.zeros(idx.shape, dtype=bool)
        dup[:, 1:] = idx[:, 1:] == idx[:, :-1]
        n = int(dup.sum())
        if n == 0:
            break
        idx[dup] = rng.integers(0, f, size=n)
    return free[idx], np.ones((rows, m), dtype=bool)
