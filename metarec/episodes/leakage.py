"""Leakage checks: properties every split and every sampled task must have.

Each check returns ``"passed"`` or ``"failed"`` (with the evidence in ``details``):

* ``query_not_in_support``: no interaction (table row) of a task's query is in its support;
* ``eval_rows_not_in_train``: no interaction of a meta-val/meta-test pool is in meta-train
  (except the support rows of a predefined split's warm units, which train by design; their
  query rows never do);
* ``eval_units_not_in_train``: units of user-cold style pools never appear in meta-train;
* ``support_before_query``: in time-ordered mode no support timestamp is later than (or equal
  to) a query timestamp of the same task;
* ``cold_items_not_in_train``: items of item-cold states never appear in meta-train.
"""

from __future__ import annotations

import numpy as np

from metarec._errors import DataError
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import MetaSplits

__all__ = ["run_leakage_checks", "task_overlap"]


def _rows(part: EpisodeSet, name: str) -> np.ndarray:
    """The table rows ``int64 (T, N)`` of ``batch.<name>``; refuses a set built without them."""
    if part.rows is None:
        raise DataError(
            f"batch.{name}.rows is None: the leakage checks compare interaction-table rows; pass a batch "
            "from TaskSampler (it records the row of each entry), or build the EpisodeSet with rows=..."
        )
    return part.rows.cpu().numpy()


def task_overlap(batch: EpisodeBatch) -> int:
    """Number of (task, table row) pairs present in both a task's support and its query."""
    s, q = _rows(batch.support, "support"), _rows(batch.query, "query")
    T = s.shape[0]
    base = max(int(s.max(initial=0)), int(q.max(initial=0))) + 2
    sk = (np.arange(T)[:, None] * base + s)[s >= 0]
    qk = (np.arange(T)[:, None] * base + q)[q >= 0]
    return int(np.intersect1d(sk, qk).shape[0])


def _time_violations(batch: EpisodeBatch, ts: np.ndarray) -> int:
    s, q = _rows(batch.support, "support"), _rows(batch.query, "query")
    smax = np.where(s >= 0, ts[np.maximum(s, 0)], np.iinfo(np.int64).min).max(axis=1)
    qmin = np.where(q >= 0, ts[np.maximum(q, 0)], np.iinfo(np.int64).max).min(axis=1)
    return int((smax >= qmin).sum())


def _checked_rows(splits: MetaSplits, name: str, train_rows: np.ndarray) -> np.ndarray:
    """``bool`` per row of pool ``name``: a row that must not be, and is, in meta-train. Support
    rows of warm units (``splits.warm_units``) come from meta-train by design and are skipped."""
    pool = splits.pools[name]
    bad = np.isin(pool.rows, train_rows)
    warm = splits.warm_units.get(name)
    if warm is not None and warm.shape[0] and pool.query_flag is not None:
        in_warm = np.repeat(np.isin(pool.units, warm), pool.lengths)
        bad &= ~(in_warm & ~pool.query_flag)
    return bad


def run_leakage_checks(
    splits: MetaSplits, sampler_config: SamplerConfig, *, train_batches: int = 4, seed: int = 0
) -> tuple[dict[str, str], dict[str, str]]:
    """Run every applicable check; returns ``(results, details)`` keyed by check name."""
    t = splits.table
    train = splits.pools[splits.train]
    train_rows = np.unique(train.rows)
    results: dict[str, str] = {}
    details: dict[str, str] = {}

    overlap, order_bad, n_tasks = 0, 0, 0
    eval_names = [n for n in splits.pools if n != splits.train]
    for name, pool in splits.pools.items():
        if len(pool) == 0:
            continue
        sampler = TaskSampler(t, pool, sampler_config, seed=seed)
        batches = (
            [sampler.sample(64) for _ in range(train_batches)]
            if name == splits.train
            else sampler.iterate(512)
        )
        for b in batches:
            overlap += task_overlap(b)
            n_tasks += b.n_tasks
            if splits.order == "time" and t.timestamps is not None:
                order_bad += _time_violations(b, t.timestamps)
    results["query_not_in_support"] = "passed" if overlap == 0 else "failed"
    details["query_not_in_support"] = f"{overlap} shared interactions over {n_tasks} tasks"
    if splits.order == "time":
        results["support_before_query"] = "passed" if order_bad == 0 else "failed"
        details["support_before_query"] = (
            f"{order_bad} tasks with a support timestamp >= a query timestamp"
        )

    leaked = sum(int(_checked_rows(splits, n, train_rows).sum()) for n in eval_names)
    results["eval_rows_not_in_train"] = "passed" if leaked == 0 else "failed"
    n_warm = sum(int(u.shape[0]) for u in splits.warm_units.values())
    warm_note = (
        f" (support rows of {n_warm} warm units, trained by the dataset's split, allowed)"
        if n_warm
        else ""
    )
    details["eval_rows_not_in_train"] = (
        f"{leaked} evaluation interactions found in meta-train{warm_note}"
    )

    if splits.disjoint_units:
        shared = 0
        for n in splits.disjoint_units:
            if n in splits.pools:
                units = splits.pools[n].units
                units = units[~np.isin(units, splits.warm_units.get(n, ()))]
                shared += int(np.isin(units, train.units).sum())
        results["eval_units_not_in_train"] = "passed" if shared == 0 else "failed"
        details["eval_units_not_in_train"] = (
            f"{shared} units of {splits.disjoint_units} found in meta-train"
            + (f" ({n_warm} warm units of the dataset's split not counted)" if n_warm else "")
        )
    if splits.cold_items:
        train_items = np.unique(t.items[train_rows])
        bad = sum(int(np.isin(items, train_items).sum()) for items in splits.cold_items.values())
        results["cold_items_not_in_train"] = "passed" if bad == 0 else "failed"
        details["cold_items_not_in_train"] = f"{bad} cold items found in meta-train"
    return results, details
