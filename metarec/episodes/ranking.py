"""The catalogue ranking protocol: pinned support pools, state catalogues, relevant items.

With ``protocol.ranking = true`` (:class:`~metarec.config.ProtocolConfig`), every evaluation
pool of a split (meta-val and each test state) is re-cut by :func:`ranking_splits`:

* **support pool**: each task unit's interactions are cut once into a support pool of
  ``support_pool`` interactions (a seeded random draw, or the earliest ones in time order) and a
  query of **all its other interactions**; ``k`` shots are the first ``k`` rows of the pool
  (:attr:`~metarec.episodes.pool.TaskPool.support_rank`), so the query is the same for every
  ``k``, every method and every sampler seed, and the supports are nested across ``k``. A unit
  whose query the dataset's own split fixes (a warm unit of a ``predefined`` split) keeps that
  query; its support pool is drawn from its other rows.
* **catalogue** (:func:`state_catalogue`): every item of the state's kind, derived from the
  split, not from the test pool's rows: in the MeLU states the existing-item catalogue (warm,
  user-cold, meta-val) or the new-item catalogue (item-cold, user-item-cold); otherwise every
  item of the domain(s) the state's tasks belong to.
* **candidates and relevance** (:func:`ranking_targets`): a task's candidates are the
  catalogue minus the items of its support pool (the support of every ``k``: a withheld pool
  row is neither support nor scored, so the candidates do not change with ``k`` either); its
  relevant items are its query items rated at least the relevance threshold
  (:func:`relevance_threshold`; implicit feedback: every positive). Query items rated below the
  threshold stay candidates and count as non-relevant.

Example:
    >>> from metarec.data.synthetic import make_synthetic
    >>> from metarec.episodes.splits import random_split
    >>> t = make_synthetic(n_domains=1, n_users=60, n_items=80, density=0.4, seed=0)
    >>> s = ranking_splits(random_split(t, min_interactions=21, seed=0), support_pool=20, seed=0)
    >>> pool = s.pools["meta-test"]
    >>> int((~pool.query_flag).sum()) == 20 * len(pool)   # 20 support rows per task
    True
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from metarec._errors import ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool
from metarec.episodes.splits import MetaSplits

__all__ = [
    "pin_support_pool",
    "ranking_splits",
    "state_catalogue",
    "relevance_threshold",
    "RankingTargets",
    "ranking_targets",
]


def pin_support_pool(
    table: InteractionTable,
    pool: TaskPool,
    support_pool: int,
    *,
    order: str = "random",
    seed: int = 0,
    keep_query: np.ndarray | None = None,
) -> TaskPool:
    """``pool`` with each unit cut into a pinned support pool and a query (see the module docstring).

    Args:
        support_pool: rows per unit in the support pool (at most all but one row of a unit).
        order: ``"random"`` (a seeded random pool, in a random order) or ``"time"`` (the earliest
            rows, oldest first).
        seed: seeds the random draw.
        keep_query: ``bool (U,)``: units whose existing ``query_flag`` is kept (their pool is
            drawn from their other rows; in time order the most recent first).

    Returns:
        A :class:`TaskPool` with ``query_flag`` and ``support_rank`` set.
    """
    if support_pool < 1:
        raise ConfigError(f"support_pool={support_pool}: must be >= 1")
    lens = pool.lengths
    U = len(pool)
    nnz = int(pool.rows.shape[0])
    seg = np.repeat(np.arange(U, dtype=np.int64), lens)
    seg_start = np.cumsum(lens) - lens
    pos = np.arange(nnz, dtype=np.int64) - np.repeat(seg_start, lens)  # time order within a unit
    keep = np.zeros(U, dtype=bool) if keep_query is None else np.asarray(keep_query, dtype=bool)
    if keep.any() and pool.query_flag is None:
        raise ConfigError(f"pool {pool.name!r}: keep_query needs a pool with pinned queries")
    fixed_q = (
        pool.query_flag & keep[seg] if pool.query_flag is not None else np.zeros(nnz, dtype=bool)
    )
    rng = np.random.default_rng(seed)
    if order == "time":  # oldest first; a kept query: the most recent of the other rows first
        key = np.where(keep[seg], -pos, pos).astype(np.float64)
    else:
        key = rng.random(nnz)
    o = np.lexsort((key, fixed_q, seg))  # per unit: support candidates first, by key
    rank = np.empty(nnz, dtype=np.int64)
    rank[o] = np.arange(nnz, dtype=np.int64) - np.repeat(seg_start, lens)
    n_cand = np.bincount(seg, weights=~fixed_q, minlength=U).astype(np.int64)
    n_pool = np.where(keep, np.minimum(support_pool, n_cand), np.minimum(support_pool, lens - 1))
    in_pool = rank < n_pool[seg]
    query = np.where(keep[seg], fixed_q, ~in_pool)
    support_rank = np.where(query, -1, rank)
    return replace(pool, query_flag=query, support_rank=support_rank)


def ranking_splits(
    splits: MetaSplits, *, support_pool: int = 20, order: str | None = None, seed: int = 0
) -> MetaSplits:
    """``splits`` with every evaluation pool (all but meta-train) re-cut by :func:`pin_support_pool`
    (the units of ``splits.warm_units`` keep their query). ``order``: ``None`` follows the split."""
    order = order or splits.order
    pools = dict(splits.pools)
    for name, pool in splits.pools.items():
        if name == splits.train or len(pool) == 0:
            continue
        warm = splits.warm_units.get(name)
        keep = np.isin(pool.units, warm) if warm is not None and len(warm) else None
        pools[name] = pin_support_pool(
            splits.table, pool, support_pool, order=order, seed=seed + 3, keep_query=keep
        )
    return replace(splits, pools=pools)


def state_catalogue(splits: MetaSplits, name: str) -> np.ndarray:
    """Sorted item indices of the catalogue ranked for evaluation pool ``name`` (see the module
    docstring): the split's cold items for a cold-item state, the other items of the state's
    domain(s) for the other states of a split with cold items, else every item of the state's
    domain(s). Only items with at least one interaction in the table count.

    Raises:
        ConfigError: ``name`` is not a pool of the split.
    """
    table = splits.table
    pool = splits[name]
    if name in splits.cold_items:
        return np.unique(splits.cold_items[name])
    doms = np.unique(table.domains[pool.rows]) if len(pool) else np.arange(table.n_domains)
    items = np.unique(table.items[np.isin(table.domains, doms)])
    if splits.cold_items:
        cold = np.unique(np.concatenate(list(splits.cold_items.values())))
        items = items[~np.isin(items, cold)]
    return items


def relevance_threshold(table: InteractionTable, relevance: float | None = None) -> float:
    """The rating at and above which a query item is relevant: ``relevance``, else
    ``low + 0.75 * (high - low)`` of the table's rating scale (4 on 1..5); implicit feedback: 1
    (every positive).

    Raises:
        ConfigError: ``relevance`` with implicit feedback, or outside the rating scale.
    """
    if table.feedback == "implicit":
        if relevance is not None:
            raise ConfigError(
                f"relevance={relevance}: implicit feedback has no ratings; every positive is relevant; "
                "drop protocol.relevance"
            )
        return 1.0
    lo, hi = table.rating_scale if table.rating_scale is not None else (1.0, 5.0)
    if relevance is None:
        return float(lo + 0.75 * (hi - lo))
    if not lo < relevance <= hi:
        raise ConfigError(
            f"relevance={relevance}: outside the rating scale [{lo}, {hi}]; choose a threshold in "
            f"({lo}, {hi}], e.g. 4.0"
        )
    return float(relevance)


@dataclass(frozen=True)
class RankingTargets:
    """Per task unit of a pool: the items left out of its candidates and its relevant items.

    Attributes:
        units: ``int64 (U,)``: the pool's units, in pool order.
        excluded_offsets, excluded: CSR (``(U + 1,)``, ``(nnz,)``): each unit's support-pool items
            (every non-query row: the support of every ``k``, and rows withheld at smaller ``k``).
        relevant_offsets, relevant: CSR: each unit's relevant query items (rated at least the
            threshold; implicit: positives), never an excluded item; sorted, unique.
        threshold: the relevance threshold used.
    """

    units: np.ndarray
    excluded_offsets: np.ndarray
    excluded: np.ndarray
    relevant_offsets: np.ndarray
    relevant: np.ndarray
    threshold: float

    def excluded_of(self, j: int) -> np.ndarray:
        return self.excluded[self.excluded_offsets[j] : self.excluded_offsets[j + 1]]

    def relevant_of(self, j: int) -> np.ndarray:
        return self.relevant[self.relevant_offsets[j] : self.relevant_offsets[j + 1]]


def ranking_targets(
    table: InteractionTable, pool: TaskPool, relevance: float | None = None
) -> RankingTargets:
    """The :class:`RankingTargets` of a pool with pinned queries (any number of shots: the
    query does not depend on them).

    Raises:
        ConfigError: the pool has no pinned queries.
    """
    if pool.query_flag is None:
        raise ConfigError(
            f"pool {pool.name!r}: ranking needs pinned query sets (an evaluation pool of a split)"
        )
    thr = relevance_threshold(table, relevance)
    lens = pool.lengths
    U = len(pool)
    seg = np.repeat(np.arange(U, dtype=np.int64), lens)
    items = table.items[pool.rows].astype(np.int64)
    ratings = table.ratings[pool.rows].astype(np.float64)
    q = pool.query_flag
    ex_seg, ex_items = _unique_pairs(seg[~q], items[~q], table.n_items)
    rel = q & (ratings >= thr - 1e-9)
    r_seg, r_items = _unique_pairs(seg[rel], items[rel], table.n_items)
    keys_ex = ex_seg * table.n_items + ex_items
    drop = np.isin(r_seg * table.n_items + r_items, keys_ex)
    r_seg, r_items = r_seg[~drop], r_items[~drop]
    return RankingTargets(
        pool.units.copy(),
        _offsets(ex_seg, U),
        ex_items,
        _offsets(r_seg, U),
        r_items,
        thr,
    )


def _unique_pairs(
    seg: np.ndarray, items: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    keys = np.unique(seg * n_items + items)  # sorted by (unit, item)
    return keys // n_items, keys % n_items


def _offsets(seg: np.ndarray, U: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(seg, minlength=U))]).astype(np.int64)
