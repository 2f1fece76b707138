"""From a scenario's ``[protocol]`` section to meta-splits and sampler settings.

:func:`build_splits` applies the split the protocol names, :func:`sampler_config` gives the
sampler settings, and :func:`inspect_scenario` builds a scenario's tasks and reports their sizes
and the leakage checks (``metarec tasks inspect``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from metarec.config import ProtocolConfig, Scenario
from metarec.data.load import load_table
from metarec.data.table import InteractionTable
from metarec.episodes.filters import (
    check_selection_pool,
    filter_report,
    log_report,
    recording_drops,
)
from metarec.episodes.leakage import run_leakage_checks
from metarec.episodes.predefined import predefined_split
from metarec.episodes.ranking import ranking_splits, ranking_targets, state_catalogue
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import (
    MetaSplits,
    cold_domain_users_split,
    melu_split,
    melu_time_split,
    random_split,
    time_split,
)

__all__ = ["build_splits", "sampler_config", "inspect_scenario"]


# Per ``protocol.split``: the split function and the ``[protocol]`` fields it takes beside
# ``n_query``, ``min_interactions``, ``max_interactions`` and ``seed`` (each under its own name).
_SPLITS: dict[str, tuple[Callable[..., MetaSplits], tuple[str, ...]]] = {
    "melu": (melu_split, ("existing_user_fraction", "new_item_year", "val_fraction")),
    # MAMO's time-based user split of the MeLU states
    "melu-time": (melu_time_split, ("existing_user_fraction", "new_item_year", "val_fraction")),
    "cold_domain_users": (cold_domain_users_split, ("target_domain", "beta", "val_fraction")),
    "predefined": (predefined_split, ("unit", "target_domain", "val_fraction", "order")),
    "time": (time_split, ("unit", "fractions", "cohort_by")),
    "random": (random_split, ("unit", "fractions", "order", "cohort_by")),
}


def build_splits(table: InteractionTable, p: ProtocolConfig) -> MetaSplits:
    """Apply a ``[protocol]`` section: meta-train / meta-val / test pools (with
    ``protocol.ranking``, the evaluation pools re-cut by
    :func:`metarec.episodes.ranking.ranking_splits`).

    What the split leaves out of every pool is accounted for, each share under the key that
    controls it (:attr:`MetaSplits.filters`, :mod:`metarec.episodes.filters`), and logged to the
    ``metarec.filters`` logger (the command line prints it); a validation pool of fewer than
    :data:`~metarec.episodes.filters.MIN_SELECTION_TASKS` tasks is warned about.

    Example:
        >>> import metarec as mr
        >>> sc = mr.Scenario(
        ...     data={"source": "synthetic", "synthetic": {"n_domains": 2, "n_users": 100, "n_items": 40}},
        ...     protocol={"fractions": [0.6, 0.2, 0.2], "n_support": 5, "n_query": 5, "min_interactions": 10})
        >>> table = mr.load_table(sc.data)
        >>> splits = build_splits(table, sc.protocol)
        >>> {name: len(pool) for name, pool in splits.pools.items()}
        {'meta-train': 120, 'meta-val': 40, 'meta-test': 40}
        >>> splits.filters.users  # (kept by some pool, in the table)
        (200, 200)
    """
    split, fields = _SPLITS.get(p.split, _SPLITS["random"])
    with recording_drops() as recorded:
        splits = split(
            table,
            n_query=p.n_query or 10,
            min_interactions=p.min_interactions,
            max_interactions=p.max_interactions,
            seed=p.seed,
            **{name: getattr(p, name) for name in fields},
        )
    if p.ranking:
        splits = ranking_splits(splits, support_pool=p.support_pool, seed=p.seed)
    splits.filters = filter_report(table, splits, p, recorded)
    log_report(splits.filters)
    check_selection_pool(splits, p)
    return splits


def sampler_config(p: ProtocolConfig, *, n_support: int | None = -1) -> SamplerConfig:
    """The sampler settings of a protocol (``n_support`` overrides the shots).

    Example:
        >>> import metarec as mr
        >>> p = mr.Scenario(protocol={"n_support": 5, "n_query": 10}).protocol
        >>> sampler_config(p)
        SamplerConfig(n_support=5, n_query=10, order='random', negatives=0,
                      negatives_from='catalogue', negatives_by='uniform', relevance=None)
        >>> sampler_config(p, n_support=1).n_support   # the 1-shot evaluation of the same protocol
        1
    """
    ns = p.n_support if n_support == -1 else n_support
    return SamplerConfig(
        n_support=ns,
        n_query=p.n_query,
        order=p.order if p.split != "time" else "time",
        negatives=p.negatives,
    )


def _dist(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"min": 0, "max": 0, "mean": 0.0}
    return {"min": int(x.min()), "max": int(x.max()), "mean": round(float(x.mean()), 2)}


def inspect_scenario(scenario: Scenario, *, seed: int = 0) -> dict[str, Any]:
    """Build the scenario's tasks; report per split the number of task units, the support and
    query size distributions, the leakage checks and the time taken (ranking scenarios: also each
    evaluation pool's catalogue size and relevant items per task)."""
    t0 = time.perf_counter()
    table = load_table(scenario.data)
    t_load = time.perf_counter() - t0
    splits = build_splits(table, scenario.protocol)
    cfg = sampler_config(scenario.protocol)
    out: dict[str, Any] = {
        "scenario": scenario.name,
        "data": table.summary(),
        "filters": splits.filters.to_json(),
        "splits": {},
    }
    for name, pool in splits.pools.items():
        if len(pool) == 0:
            out["splits"][name] = {
                "tasks": 0,
                "support": _dist(np.zeros(0)),
                "query": _dist(np.zeros(0)),
            }
            continue
        sampler = TaskSampler(table, pool, cfg, seed=seed)
        batches = (
            sampler.iterate(1024)
            if name != splits.train
            else [sampler.sample(min(1024, len(pool)))]
        )
        sup = np.concatenate([b.support.sizes().numpy() for b in batches])
        qry = np.concatenate([b.query.sizes().numpy() for b in batches])
        out["splits"][name] = {"tasks": len(pool), "support": _dist(sup), "query": _dist(qry)}
        if scenario.protocol.ranking and name != splits.train:
            tg = ranking_targets(table, pool, scenario.protocol.relevance)
            out["splits"][name]["catalogue"] = int(state_catalogue(splits, name).shape[0])
            out["splits"][name]["relevant"] = _dist(np.diff(tg.relevant_offsets))
    checks, details = run_leakage_checks(splits, cfg, seed=seed)
    out["leakage_checks"] = checks
    out["leakage_details"] = details
    out["states"] = splits.states
    out["seconds"] = {"load": round(t_load, 3), "total": round(time.perf_counter() - t0, 3)}
    return out
