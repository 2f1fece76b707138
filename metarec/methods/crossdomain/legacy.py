"""Deprecated (0.2; goes in 0.3): :func:`fit_and_evaluate`, the cross-domain family's second
entry point, now a wrapper over the method interface
(:class:`~metarec.methods.crossdomain.method.CrossDomainMethod` and
:func:`metarec.metrics.evaluate.evaluate_fitted`)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

from metarec._errors import ConfigError
from metarec.config import to_dict
from metarec.data.table import InteractionTable
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import MetaSplits
from metarec.methods.base import FitData
from metarec.methods.crossdomain.method import CrossDomainMethod
from metarec.methods.crossdomain.methods import FittedMethod, parse_method
from metarec.methods.crossdomain.settings import CrossDomainConfig, as_config
from metarec.metrics.evaluate import evaluate_fitted

__all__ = ["fit_and_evaluate"]


def fit_and_evaluate(
    method: str,
    table: InteractionTable,
    splits: MetaSplits,
    *,
    shots: int,
    seed: int = 0,
    config: CrossDomainConfig | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Deprecated (0.2; goes in 0.3): train ``method`` on meta-train, select on meta-val, score
    every test pool once, in one call. It is a wrapper over the method interface; write
    instead::

        fitted = CrossDomainMethod(method, config, sampler=scfg).fit(FitData(table, splits, seed=seed))
        a = fitted.adaptation(scfg)
        evaluate_fitted(fitted, table, splits.pools["meta-test"], scfg, steps=a.steps, lr=a.lr)

    See :func:`fit_method` for what training sees. Selection on meta-val: the final training
    stage keeps its best epoch by the zero-shot meta-val score (AUC, or MAE for explicit
    feedback) and ``+adapt`` methods pick the step size from ``config.adapt_lrs``.

    Args:
        method: one of :data:`METHODS`, optionally suffixed ``"+adapt"``.
        table, splits: a cross-domain cold-start split
            (:func:`~metarec.episodes.splits.cold_domain_users_split`).
        shots: support size ``k`` of each evaluation task (the sampler's ``n_support``).
        seed: seeds every initialisation, shuffle and sampled negative of training.
        config: :class:`~metarec.methods.crossdomain.settings.CrossDomainConfig` or a mapping of its
            fields; use :func:`~metarec.methods.crossdomain.settings.config_from_scenario` to evaluate on
            the scenario's query sets.

    Returns:
        ``{"method", "shots", "seed", "target_domain", "metric", "val": {...},
        "adapt": {"steps", "lr", "l2"} | None, "states": {pool: result}, "seconds": {"fit",
        "select", "test", "total"}, "config": {...}, "log": {...}}`` where each ``result`` has
        :func:`metarec.metrics.evaluate.evaluate_pool`'s keys (metric means, ``n_tasks``, ``flags``,
        ``adapt_ms_per_task``) plus ``"per_task": {metric: float64 (T,)}`` and ``"units"``
        (pool units, to pair tasks across methods).

    Raises:
        ConfigError: unknown method, shots < 1, or splits that are not cross-domain.
    """
    warnings.warn(
        "fit_and_evaluate is deprecated (it goes in 0.3): fit CrossDomainMethod(name, config, "
        "sampler=...) through the method interface and score with metarec.evaluate_fitted",
        DeprecationWarning,
        stacklevel=2,
    )
    t_start = time.perf_counter()
    parse_method(method)
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ConfigError(
            f"shots={shots!r}: each task needs at least one support interaction; pass shots >= 1"
        )
    cfg = as_config(config)
    scfg = SamplerConfig(
        n_support=shots, n_query=cfg.n_query, order=cfg.order, negatives=cfg.negatives
    )
    fitted = CrossDomainMethod(method, cfg, sampler=scfg).fit(FitData(table, splits, seed=seed))
    fm: FittedMethod = fitted.info["fitted_method"]
    t_select = time.perf_counter()
    chosen, val = fm.select_adapt(scfg)  # chosen on meta-val by fit (for these shots)
    a = fitted.adaptation(scfg)
    states = {}
    for name in splits.states:
        pool = splits.pools[name]
        if not len(pool):
            continue
        ev = evaluate_fitted(
            fitted,
            table,
            pool,
            scfg,
            steps=a.steps,
            lr=a.lr,
            k=cfg.k,
            seed=cfg.eval_seed,
            batch_size=cfg.eval_batch_size,
            return_per_task=True,
            check_finite=False,
        )
        ev["units"] = pool.units[: ev["n_tasks"]].copy()
        states[name] = ev
    t_end = time.perf_counter()
    return {
        "method": method,
        "shots": shots,
        "seed": seed,
        "target_domain": fm.view.target_name,
        "metric": fm.metric,
        "val": {k: v for k, v in val.items() if k != "flags"},
        "adapt": None
        if chosen is None
        else {"steps": chosen.steps, "lr": chosen.lr, "l2": chosen.l2},
        "states": states,
        "seconds": {
            "fit": fm.fit_seconds,
            "select": t_select - t_start - fm.fit_seconds,
            "test": t_end - t_select,
            "total": t_end - t_start,
        },
        "config": to_dict(cfg),
        "log": fm.log,
    }
