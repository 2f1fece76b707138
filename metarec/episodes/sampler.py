"""The episodic task sampler: task pools -> padded :class:`EpisodeBatch` tensors.

All index work is vectorised numpy over the concatenated rows of the drawn units (no Python
loop over interactions or tasks), then one ``torch.from_numpy`` per tensor.

Support/query rules, per task:

* **pinned query** (the pool has ``query_flag``, as evaluation pools and MeLU's protocol do):
  the query is the pinned rows; the support is drawn from the other rows (in time mode only
  from rows strictly earlier than the earliest query row), the first ``n_support`` of them
  (``None``: all), in a random order or, when the pool pins one (``support_rank``, the ranking
  protocol), in that order.
* **random**: rows are shuffled; the first ``n_support`` form the support, the next ``n_query``
  (``None``: all remaining) the query.
* **time**: the earliest ``n_support`` rows form the support; the query is the following rows
  whose timestamp is strictly later than every support row, the first ``n_query`` of them.

With implicit feedback and ``negatives > 0``, each positive gets ``negatives`` sampled items of
its domain that the same user never interacted with (label 0), in the same set. The items come
from the domain's whole catalogue (every item of the domain in the table; evaluation samplers, so
that every algorithm ranks against the same candidates) or, with ``negatives_from="pool"``, from
the items of the pool's own rows (meta-training: an item that only held-out rows contain would
otherwise appear in training as a negative and never as a positive, and an id model would learn
that "unseen in training" means "not interacted"); uniformly, or with ``negatives_by="popularity"``
in proportion to the item's rows there (each set then carries ``logq``, the log-probability of
drawing each entry's item, for the sampled softmax's correction).

With ``relevance`` (explicit ratings trained to rank, :mod:`metarec.config.objective`), the
targets are relevance labels (``rating >= relevance`` -> 1, else 0) and the sampled negatives
above are added to explicit tables too (the user's rated items are never drawn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.episodes.pool import TaskPool, _ranges

__all__ = ["SamplerConfig", "TaskSampler", "pin_queries"]


@dataclass(frozen=True)
class SamplerConfig:
    """How tasks are cut from a pool.

    Args:
        n_support: support interactions per task (k shots); ``None`` = all non-query rows.
        n_query: query interactions per task; ``None`` = all remaining rows.
        order: ``"random"`` or ``"time"`` (support strictly before query).
        negatives: implicit feedback only: sampled negatives per positive.
        negatives_from: where sampled negatives come from: ``"catalogue"`` (every item of the
            task's domain in the table) or ``"pool"`` (the items of the pool's rows).
        negatives_by: ``"uniform"`` or ``"popularity"`` (in proportion to the item's rows among
            those of ``negatives_from``; the sets then carry ``logq``).
        relevance: targets are relevance labels, ``rating >= relevance`` -> 1 (explicit ratings
            trained to rank); ``None``: the targets as the table holds them.

    Example:
        >>> from metarec.data.synthetic import make_synthetic
        >>> from metarec.episodes.splits import random_split
        >>> t = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> pool = random_split(t, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10).pools["meta-test"]
        >>> cfg = SamplerConfig(n_support=3, n_query=5)   # 3-shot tasks, 5 query ratings each
        >>> b = TaskSampler(t, pool, cfg, seed=0).sample(4)
        >>> b.support.sizes().tolist(), b.query.sizes().tolist()
        ([3, 3, 3, 3], [5, 5, 5, 5])
        >>> SamplerConfig(n_support=None, n_query=None)
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: n_support=None and n_query=None: one of them must be a number ...
    """

    n_support: int | None = 10
    n_query: int | None = 10
    order: Literal["random", "time"] = "random"
    negatives: int = 0
    negatives_from: Literal["catalogue", "pool"] = "catalogue"
    negatives_by: Literal["uniform", "popularity"] = "uniform"
    relevance: float | None = None

    def __post_init__(self) -> None:
        if self.n_support is not None and self.n_support < 1:
            raise ConfigError(
                f"n_support={self.n_support}: each task needs at least one support interaction; pass n_support >= 1"
            )
        if self.n_query is not None and self.n_query < 1:
            raise ConfigError(
                f"n_query={self.n_query}: each task needs at least one query interaction; pass n_query >= 1 "
                "or n_query=None (all remaining)"
            )
        if self.n_support is None and self.n_query is None:
            raise ConfigError(
                "n_support=None and n_query=None: one of them must be a number (the other takes the rest); "
                "e.g. n_support=None, n_query=10 (MeLU)"
            )
        if self.order not in ("random", "time"):
            raise ConfigError(f"order={self.order!r}: must be 'random' or 'time'")
        if self.negatives < 0:
            raise ConfigError(
                f"negatives={self.negatives}: must be >= 0; pass negatives=0 to disable"
            )
        if self.negatives_from not in ("catalogue", "pool"):
            raise ConfigError(
                f"negatives_from={self.negatives_from!r}: must be 'catalogue' (every item of the domain) or 'pool' "
                "(the items of the pool's rows)"
            )
        if self.negatives_by not in ("uniform", "popularity"):
            raise ConfigError(
                f"negatives_by={self.negatives_by!r}: must be 'uniform' or 'popularity' (in proportion to the "
                "item's interactions)"
            )


class TaskSampler:
    """Draws batches of few-shot tasks from a :class:`TaskPool`.

    Example:
        >>> from metarec.data.synthetic import make_synthetic
        >>> from metarec.episodes.pool import build_pool
        >>> t = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> pool = build_pool(t, np.arange(len(t)), t.users, "all", "user", min_interactions=15)
        >>> s = TaskSampler(t, pool, SamplerConfig(n_support=5, n_query=10), seed=0)
        >>> b = s.sample(8)
        >>> tuple(b.support.users.shape), tuple(b.query.users.shape)
        ((8, 5), (8, 10))
    """

    def __init__(
        self,
        table: InteractionTable,
        pool: TaskPool,
        config: SamplerConfig | None = None,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.table = table
        self.pool = pool
        self.config = config or SamplerConfig()
        self.rng = np.random.default_rng(seed)
        self.device = torch.device(device)
        self.dtype = dtype
        if len(pool) == 0:
            raise ConfigError(
                f"pool {pool.name!r}: no task units left after filtering; lower min_interactions or n_support/n_query"
            )
        if self.config.negatives and table.feedback != "implicit" and self.config.relevance is None:
            raise ConfigError(
                f"negatives={self.config.negatives}: sampled negatives are for implicit feedback, but the table is "
                f"{table.feedback!r}; pass negatives=0, or relevance=<threshold> to train on relevance labels"
            )
        self._ts = (
            table.timestamps
            if table.timestamps is not None
            else np.arange(len(table), dtype=np.int64)
        )
        if self.config.negatives:
            self._prepare_negatives()

    # ------------------------------------------------------------------ public
    def sample(self, n_tasks: int) -> EpisodeBatch:
        """``n_tasks`` tasks from distinct units drawn uniformly (with replacement only when
        the pool has fewer units than ``n_tasks``)."""
        if n_tasks < 1:
            raise ConfigError(f"n_tasks={n_tasks}: must be >= 1")
        U = len(self.pool)
        sel = self.rng.choice(U, size=n_tasks, replace=n_tasks > U)
        return self.batch(sel)

    def iterate(self, batch_size: int = 256) -> list[EpisodeBatch]:
        """Every unit of the pool once, in pool order, in batches (for evaluation)."""
        return [
            self.batch(np.arange(i, min(i + batch_size, len(self.pool))))
            for i in range(0, len(self.pool), batch_size)
        ]

    def batch(self, sel: np.ndarray) -> EpisodeBatch:
        """The tasks of pool units at positions ``sel``."""
        cfg, pool = self.config, self.pool
        sel = np.asarray(sel, dtype=np.int64)
        T = sel.shape[0]
        lens = pool.lengths[sel]
        flat = _ranges(pool.offsets[sel], lens)
        seg = np.repeat(np.arange(T, dtype=np.int64), lens)
        rows = pool.rows[flat]
        seg_start = np.cumsum(lens) - lens
        ts = self._ts[rows]

        if pool.query_flag is not None:
            is_q = pool.query_flag[flat]
            cand = ~is_q
            if cfg.order == "time":  # support strictly before the earliest query row of its task
                qmin = np.full(T, np.iinfo(np.int64).max)
                np.minimum.at(qmin, seg[is_q], ts[is_q])
                cand &= ts < qmin[seg]
            if pool.support_rank is not None:  # a pinned support order (ranking protocol)
                key = pool.support_rank[flat]
            elif cfg.order == "random":
                key = self.rng.random(rows.shape[0])
            else:
                key = np.arange(rows.shape[0])
            order = np.lexsort((key, ~cand, seg))  # candidates first, then by key, within task
            rank = np.empty_like(order)
            rank[order] = np.arange(order.shape[0]) - np.repeat(seg_start, lens)
            is_s = cand & ((rank < cfg.n_support) if cfg.n_support is not None else True)
            s_key = rank
            q_key = np.arange(rows.shape[0])
        elif cfg.order == "random":
            key = self.rng.random(rows.shape[0])
            order = np.lexsort((key, seg))
            rank = np.empty_like(order)
            rank[order] = np.arange(order.shape[0]) - np.repeat(seg_start, lens)
            ns, nq = cfg.n_support, cfg.n_query
            if ns is None:  # query first, all the rest is support
                if (
                    nq is None
                ):  # SamplerConfig refuses this; checked again for a config built around it
                    raise ConfigError(
                        "n_support=None and n_query=None: one of them must be a number; e.g. n_query=10"
                    )
                is_q = rank < nq
                is_s = ~is_q
            else:
                is_s = rank < ns
                is_q = rank >= ns if nq is None else (rank >= ns) & (rank < ns + nq)
            s_key = q_key = rank
        else:  # time: rows are time-ordered within each unit already
            pos = np.arange(rows.shape[0]) - np.repeat(seg_start, lens)
            if cfg.n_support is None:  # the latest n_query rows are the query candidates
                is_s = pos < np.repeat(lens - cfg.n_query, lens)
            else:
                is_s = pos < cfg.n_support
            smax = np.full(T, np.iinfo(np.int64).min)
            np.maximum.at(smax, seg[is_s], ts[is_s])
            later = ~is_s & (ts > smax[seg])
            qrank = _segment_rank(later, seg, T)
            is_q = later & ((qrank < cfg.n_query) if cfg.n_query is not None else True)
            s_key = q_key = pos

        support = self._set(rows[is_s], seg[is_s], s_key[is_s], T)
        query = self._set(rows[is_q], seg[is_q], q_key[is_q], T)
        units = torch.from_numpy(pool.units[sel].copy())
        first = (
            rows[np.minimum(seg_start, max(rows.shape[0] - 1, 0))]
            if rows.shape[0]
            else np.zeros(T, dtype=np.int64)
        )
        domains = torch.from_numpy(self.table.domains[first].astype(np.int64))
        return EpisodeBatch(support, query, units, domains).to(self.device)

    # ------------------------------------------------------------------ helpers
    def _set(self, rows: np.ndarray, seg: np.ndarray, key: np.ndarray, T: int) -> EpisodeSet:
        t = self.table
        users, items, targets = t.users[rows], t.items[rows], t.ratings[rows].astype(np.float64)
        if self.config.relevance is not None:
            targets = (targets >= self.config.relevance - 1e-9).astype(np.float64)
        doms = t.domains[rows].astype(np.int64)
        rowid = rows.astype(np.int64)
        if self.config.negatives:
            nu, ni, nseg = self._negatives(rows, seg)
            users = np.concatenate([users, nu])
            items = np.concatenate([items, ni])
            doms = np.concatenate([doms, np.repeat(doms, self.config.negatives)[self._kept]])
            targets = np.concatenate([targets, np.zeros(nu.shape[0])])
            rowid = np.concatenate([rowid, np.full(nu.shape[0], -1, dtype=np.int64)])
            key = np.concatenate(
                [key, np.full(nu.shape[0], np.iinfo(np.int64).max // 2) + np.arange(nu.shape[0])]
            )
            seg = np.concatenate([seg, nseg])
        order = np.lexsort((key, seg))
        seg = seg[order]
        counts = np.bincount(seg, minlength=T)
        W = max(int(counts.max()) if counts.size else 0, 1)
        slot = np.arange(seg.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
        U = np.zeros((T, W), dtype=np.int64)
        It = np.zeros((T, W), dtype=np.int64)
        Y = np.zeros((T, W), dtype=np.float64)
        M = np.zeros((T, W), dtype=bool)
        R = np.full((T, W), -1, dtype=np.int64)
        U[seg, slot], It[seg, slot], Y[seg, slot], M[seg, slot] = (
            users[order],
            items[order],
            targets[order],
            True,
        )
        R[seg, slot] = rowid[order]
        logq = None
        if self.config.negatives and self.config.negatives_by == "popularity":
            L = np.zeros((T, W), dtype=np.float64)
            L[seg, slot] = self._logq[doms[order], items[order]]
            logq = torch.from_numpy(L).to(self.dtype)
        return EpisodeSet(
            torch.from_numpy(U),
            torch.from_numpy(It),
            torch.from_numpy(Y).to(self.dtype),
            torch.from_numpy(M),
            torch.from_numpy(R),
            logq,
        )

    def _prepare_negatives(self) -> None:
        t = self.table
        self._pos_keys = np.unique(t.users.astype(np.int64) * t.n_items + t.items)
        src = self.pool.rows if self.config.negatives_from == "pool" else slice(None)
        dom_items, rows_per = np.unique(
            np.stack([t.domains[src], t.items[src]], axis=1), axis=0, return_counts=True
        )  # (pairs, 2) sorted by domain, and each pair's rows
        self._dom_items = dom_items[:, 1]
        counts = np.bincount(dom_items[:, 0], minlength=t.n_domains)
        self._dom_len = counts
        self._dom_start = np.cumsum(counts) - counts
        self._kept = np.zeros(0, dtype=bool)
        if self.config.negatives_by == "popularity":
            # draw a pair with probability ∝ its rows: cumulative row counts within each domain
            self._cum = np.cumsum(rows_per).astype(np.float64)
            before = np.concatenate([[0.0], self._cum])[self._dom_start]
            total = np.bincount(dom_items[:, 0], weights=rows_per, minlength=t.n_domains)
            self._cum_before, self._dom_rows = before, total
            q = rows_per / total[dom_items[:, 0]]
            # log q(item) per (domain, item); an item the proposal never draws gets its domain's
            # smallest (it cannot be an entry of a meta-training set, whose items are the pool's)
            low = np.full(t.n_domains, 0.0)
            np.minimum.at(low, dom_items[:, 0], np.log(q))
            self._logq = np.repeat(low[:, None], t.n_items, axis=1)
            self._logq[dom_items[:, 0], dom_items[:, 1]] = np.log(q)

    def _negatives(
        self, rows: np.ndarray, seg: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t, k = self.table, self.config.negatives
        rows = np.repeat(rows, k)
        seg = np.repeat(seg, k)
        users, doms = t.users[rows], t.domains[rows]
        items = np.zeros(rows.shape[0], dtype=np.int64)
        todo = np.arange(rows.shape[0])
        for _ in range(20):  # rejection sampling; bounded, leftovers are dropped
            d = doms[todo]
            u = self.rng.random(todo.shape[0])
            if self.config.negatives_by == "popularity":
                at = self._cum_before[d] + u * self._dom_rows[d]
                pick = np.searchsorted(self._cum, at, side="right")
                pick = np.clip(pick, self._dom_start[d], self._dom_start[d] + self._dom_len[d] - 1)
            else:
                pick = self._dom_start[d] + (u * self._dom_len[d]).astype(np.int64)
            items[todo] = self._dom_items[pick]
            keys = users[todo].astype(np.int64) * t.n_items + items[todo]
            pos = np.searchsorted(self._pos_keys, keys)
            hit = (pos < self._pos_keys.shape[0]) & (
                self._pos_keys[np.minimum(pos, self._pos_keys.shape[0] - 1)] == keys
            )
            todo = todo[hit]
            if todo.shape[0] == 0:
                break
        ok = np.ones(rows.shape[0], dtype=bool)
        ok[todo] = False
        self._kept = ok  # which of the repeated rows got a negative (their domains, in _set)
        return users[ok], items[ok], seg[ok]


def pin_queries(
    table: InteractionTable, pool: TaskPool, n_query: int, *, order: str = "random", seed: int = 0
) -> TaskPool:
    """Fix each unit's query set once (``n_query`` random rows, or its latest rows in time
    order; at most all but one row of a unit), so every evaluation (any number of shots)
    scores the same query interactions."""
    if n_query < 1:
        raise ConfigError(f"n_query={n_query}: must be >= 1 to pin a query set")
    rng = np.random.default_rng(seed)
    lens = pool.lengths
    T = len(pool)
    seg = np.repeat(np.arange(T, dtype=np.int64), lens)
    seg_start = np.cumsum(lens) - lens
    n_pin = np.minimum(n_query, lens - 1)  # always leave at least one support candidate
    if order == "time":
        pos = np.arange(pool.rows.shape[0]) - np.repeat(seg_start, lens)
        flag = pos >= np.repeat(lens - n_pin, lens)
    else:
        key = rng.random(int(pool.rows.shape[0]))
        o = np.lexsort((key, seg))
        rank = np.empty_like(o)
        rank[o] = np.arange(o.shape[0]) - np.repeat(seg_start, lens)
        flag = rank < np.repeat(n_pin, lens)
    return TaskPool(pool.name, pool.unit, pool.units, pool.offsets, pool.rows, flag)


def _segment_rank(flag: np.ndarray, seg: np.ndarray, T: int) -> np.ndarray:
    """Rank of each flagged element among the flagged elements of its (contiguous) segment."""
    cs = np.cumsum(flag)
    counts = np.bincount(seg, minlength=T)
    starts = np.cumsum(counts) - counts
    before = np.where(counts > 0, cs[np.maximum(starts, 0)] - flag[np.maximum(starts, 0)], 0)
    return cs - before[seg] - 1
