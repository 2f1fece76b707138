"""The item warm-up protocol (MetaEmb, MWUF): items as tasks, warm-up phases a/b/c, AUC and logloss per phase.

After Pan et al. (SIGIR 2019) and Zhu et al. (SIGIR 2021). Ratings become click labels
(``rating >= threshold``). Items with at least ``3 * k + min_test`` interactions are
*eligible*; a seeded random ``new_fraction`` of them are *new* items (cut into meta-val and
meta-test items by ``val_fraction``), the rest and every other item are *old*. A base model and
the meta-learners train on the old items' interactions only (pool ``meta-train``, one task per
old item). Each new item's interactions, in time order, are cut into

* phase **a**: the first ``k``; **b**: the next ``k``; **c**: the next ``k``;
* the **test** set: the rest (at most ``max_test``), pinned as the query.

:func:`warmup_phases` yields the four evaluation steps of a pool: ``cold`` (empty support: the
item's embedding comes from its features alone), ``warm-a`` (support a), ``warm-b`` (a + b) and
``warm-c`` (a + b + c), each with the same test query. :func:`evaluate_warmup` adapts any
:class:`~metarec.methods.Fitted` to each phase's support and reports, on the pooled test
interactions of the pool,

* ``auc``: the pooled ROC AUC (ties count one half);
* ``logloss``: ``-mean(y log sigmoid(s) + (1 - y) log(1 - sigmoid(s)))``;

and the mean per-item AUC over items whose test set has both labels (``item_auc``).

An empty support set is a task with ``mask`` all False whose first slot holds the item index
(``items[t, 0]``): item-task methods read the task's item from there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError, DataError
from metarec.config import load_scenario
from metarec.config.warmup import WarmupConfig
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.pool import TaskPool, build_pool
from metarec.episodes.splits import MetaSplits

__all__ = [
    "WarmupConfig",
    "PHASES",
    "click_table",
    "item_warmup_split",
    "warmup_phases",
    "load_warmup_scenario",
]

PHASES = ("cold", "warm-a", "warm-b", "warm-c")


def click_table(table: InteractionTable, threshold: float = 4.0) -> InteractionTable:
    """``table`` with ratings turned into 0/1 click labels (``rating >= threshold``), implicit feedback.

    Raises:
        DataError: the labels are all 0 or all 1 (pick another ``threshold``).
    """
    if table.feedback == "implicit":
        y = table.ratings.astype(np.float32)
    else:
        y = (table.ratings >= threshold).astype(np.float32)
    if y.min() == y.max():
        raise DataError(
            f"threshold={threshold}: every interaction gets label {int(y[0])}; the warm-up protocol needs clicks and "
            "non-clicks; pick a threshold inside the rating scale (e.g. 4 on 1..5)"
        )
    return InteractionTable(
        table.users,
        table.items,
        y,
        table.domains,
        table.timestamps,
        table.user_ids,
        table.item_ids,
        table.domain_ids,
        feedback="implicit",
        rating_scale=None,
        user_features=table.user_features,
        item_features=table.item_features,
    )


def item_warmup_split(table: InteractionTable, cfg: WarmupConfig | None = None) -> MetaSplits:
    """Pools ``meta-train`` (old items), ``meta-val`` and ``meta-test`` (new items; query = the
    test rows, pinned) with item task units, time-ordered (see the module docstring)."""
    cfg = cfg or WarmupConfig()
    if table.item_features is None:
        raise ConfigError(
            "item warm-up: the table has no item features; cold item embeddings are generated from them; load item "
            "features (movielens-1m with melu_extra = true)"
        )
    counts = np.bincount(table.items, minlength=table.n_items)
    need = 3 * cfg.k + cfg.min_test
    eligible = np.nonzero(counts >= need)[0]
    eligible = eligible[eligible > 0]
    if eligible.shape[0] < 4:
        raise DataError(
            f"item warm-up: only {eligible.shape[0]} items have 3 * k + min_test = {need} interactions; lower k or "
            "min_test"
        )
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(eligible)
    n_new = max(2, int(round(cfg.new_fraction * perm.shape[0])))
    new = perm[:n_new]
    n_val = max(1, int(round(cfg.val_fraction * n_new)))
    val_items, test_items = new[:n_val], new[n_val:]
    is_new = np.isin(table.items, new)
    pools = {
        "meta-train": build_pool(
            table, np.nonzero(~is_new)[0], table.items, "meta-train", "item", min_interactions=2
        )
    }
    for name, items in (("meta-val", val_items), ("meta-test", test_items)):
        pool = build_pool(
            table,
            np.nonzero(np.isin(table.items, items))[0],
            table.items,
            name,
            "item",
            min_interactions=need,
        )
        pos = np.arange(pool.rows.shape[0]) - np.repeat(pool.offsets[:-1], pool.lengths)
        keep = pos < 3 * cfg.k + cfg.max_test
        flag = pos >= 3 * cfg.k
        pools[name] = _keep_rows(pool, keep, flag)
    return MetaSplits(
        table,
        pools,
        states=["meta-test"],
        disjoint_units=["meta-val", "meta-test"],
        cold_items={"meta-val": val_items, "meta-test": test_items},
        order="time",
    )


def _keep_rows(pool: TaskPool, keep: np.ndarray, flag: np.ndarray) -> TaskPool:
    seg = np.repeat(np.arange(len(pool)), pool.lengths)
    lens = np.bincount(seg[keep], minlength=len(pool))
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return TaskPool(pool.name, pool.unit, pool.units, offsets, pool.rows[keep], flag[keep])


def _set(
    table: InteractionTable, rows_per_task: list[np.ndarray], items: np.ndarray, dtype: torch.dtype
) -> EpisodeSet:
    T = len(rows_per_task)
    W = max(1, max(r.shape[0] for r in rows_per_task))
    U = np.zeros((T, W), dtype=np.int64)
    It = np.zeros((T, W), dtype=np.int64)
    Y = np.zeros((T, W), dtype=np.float64)
    Mk = np.zeros((T, W), dtype=bool)
    R = np.full((T, W), -1, dtype=np.int64)
    It[:, 0] = items  # an empty task still names its item (see the module docstring)
    for t, r in enumerate(rows_per_task):
        n = r.shape[0]
        U[t, :n], It[t, :n], Y[t, :n], Mk[t, :n], R[t, :n] = (
            table.users[r],
            table.items[r],
            table.ratings[r],
            True,
            r,
        )
    return EpisodeSet(
        torch.from_numpy(U),
        torch.from_numpy(It),
        torch.from_numpy(Y).to(dtype),
        torch.from_numpy(Mk),
        torch.from_numpy(R),
    )


def warmup_phases(
    table: InteractionTable, pool: TaskPool, k: int, *, dtype: torch.dtype = torch.float32
) -> list[tuple[str, EpisodeSet, EpisodeSet]]:
    """``[(phase, support, query)]`` for :data:`PHASES` over every item task of ``pool``
    (support: the first ``0, k, 2k, 3k`` rows in time order; query: the pinned test rows)."""
    if pool.query_flag is None:
        raise ConfigError(
            f"pool {pool.name!r}: has no pinned test rows; build it with item_warmup_split"
        )
    tasks = [pool.unit_rows(j) for j in range(len(pool))]
    flags = [pool.query_flag[pool.offsets[j] : pool.offsets[j + 1]] for j in range(len(pool))]
    items = pool.units
    query = _set(table, [r[f] for r, f in zip(tasks, flags, strict=True)], items, dtype)
    out = []
    for p, name in enumerate(PHASES):
        sup = [r[~f][: p * k] for r, f in zip(tasks, flags, strict=True)]
        out.append((name, _set(table, sup, items, dtype), query))
    return out


def load_warmup_scenario(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    data_root: str | os.PathLike[str] | None = None,
) -> tuple[Any, WarmupConfig]:
    """``(Scenario, WarmupConfig)`` of a scenario file with a ``[warmup]`` section.

    The ``[warmup]`` section (and ``--set warmup.<key>=...`` overrides) give the
    :class:`WarmupConfig` (also ``scenario.warmup``); the file is read by
    :func:`metarec.config.load_scenario`.

    Raises:
        ConfigError: the file is missing or invalid, or a key of either part is unknown.
    """
    sc = load_scenario(path, overrides, data_root=data_root)
    return sc, sc.warmup if sc.warmup is not None else WarmupConfig()
