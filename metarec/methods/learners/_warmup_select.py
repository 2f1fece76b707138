"""Model selection of the item warm-up learners (``warmup-base``, ``metaemb``, ``mwuf``): the
warm-up rate and the checkpoint are chosen on the meta-val items' warm-up phases (logloss over
cold, warm-a/b/c), which need a meta-val pool with pinned test rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from metarec._errors import ConfigError
from metarec.methods.base import FitData

__all__ = ["select_warm_lr", "warmup_val_score"]


def select_warm_lr(fitted: Any, data: FitData) -> dict[str, Any]:
    """Pick ``warm_lr`` from ``settings.warm_lrs`` on the meta-val items' warm-up phases
    (lowest mean logloss over warm-a/b/c); needs a meta-val pool with pinned test rows."""
    from metarec.metrics.warmup import evaluate_warmup

    model, s = fitted.learner, fitted.settings
    pool = data.splits.pools[data.splits.val]
    k = fitted.k
    if pool.query_flag is None or not s.warm_lrs or k is None:
        return {}
    tried = {}
    for lr in s.warm_lrs:
        res = evaluate_warmup(fitted, data.table, pool, k, lr=lr)
        tried[lr] = float(np.mean([res[p]["logloss"] for p in ("warm-a", "warm-b", "warm-c")]))
    best = min(tried, key=lambda lr: tried[lr] if np.isfinite(tried[lr]) else np.inf)
    model.warm_lr.fill_(best)
    return {"warm_lr": best, "val_logloss": tried}


def warmup_val_score(fitted: Any, data: FitData) -> float:
    """Model selection of the warm-up learners: minus the mean logloss of the meta-val items over
    the phases cold, warm-a/b/c at the current ``warm_lr`` (per-item AUC over users, the
    generic criterion, barely depends on the item's embedding); needs pinned test rows."""
    from metarec.episodes.warmup import PHASES
    from metarec.metrics.warmup import evaluate_warmup

    pool = data.splits.pools[data.splits.val]
    if pool.query_flag is None or fitted.k is None:
        raise ConfigError(
            f"splits: the meta-val pool {data.splits.val!r} has no pinned test rows; the warm-up "
            "learners are selected on the warm-up phases: build the splits with "
            "metarec.episodes.warmup.item_warmup_split"
        )
    res = evaluate_warmup(fitted, data.table, pool, fitted.k)
    return -float(np.mean([res[p]["logloss"] for p in PHASES]))
