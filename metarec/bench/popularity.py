"""The ``popularity`` baseline: no learning, no adaptation, one score per item from meta-train.

* explicit feedback: each item's mean meta-train rating shrunk towards the global mean,
  ``score_i = (sum_{r in R_i} r + m * mu) / (|R_i| + m)`` with ``R_i`` the item's meta-train
  ratings, ``mu`` the mean of all meta-train ratings and ``m =`` :data:`PRIOR_STRENGTH` pseudo
  ratings; an item never rated in meta-train (a cold item) gets ``mu``;
* implicit feedback: the item's number of meta-train interactions (ties, e.g. cold items at 0,
  are broken pessimistically by the ranking metrics and count half in AUC).

Every task's query is scored with the same item scores, whatever its support: the rows of a
popularity result are identical across shots. The output has the shape of
:func:`metarec.metrics.evaluate.evaluate_pool`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.methods.popularity import PRIOR_STRENGTH, item_scores
from metarec.metrics.evaluate import PoolScores, clip_to_scale, per_task_metrics

__all__ = ["PRIOR_STRENGTH", "item_scores", "evaluate_popularity"]


def evaluate_popularity(
    scores: np.ndarray,
    table: InteractionTable,
    pool: TaskPool,
    sampler_config: SamplerConfig,
    *,
    k: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    return_per_task: bool = False,
) -> dict[str, Any]:
    """Score every task's query of ``pool`` with the fixed ``scores`` (``(n_items,)``).

    Returns ``{metric: mean over tasks, "n_tasks", "flags", "adapt_ms_per_task": 0.0}`` (and
    ``"per_task"`` with ``return_per_task``), like :func:`metarec.metrics.evaluate.evaluate_pool`.
    """
    sampler = TaskSampler(table, pool, sampler_config, seed=seed, dtype=torch.float64)
    s = torch.as_tensor(scores, dtype=torch.float64)
    n = len(pool)
    acc = PoolScores()
    for start in range(0, n, batch_size):
        q = sampler.batch(np.arange(start, min(start + batch_size, n))).query
        p = clip_to_scale(s[q.items], table)  # (T, N)
        acc.add(per_task_metrics(p, q.targets, q.mask, table.feedback, k), p, q.targets, q.mask)
    return acc.result(n, k, per_task=return_per_task)
