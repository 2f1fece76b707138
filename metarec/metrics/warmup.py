"""Scores of the item warm-up protocol (:mod:`metarec.episodes.warmup`): any
:class:`~metarec.methods.Fitted` adapted to each phase's support, AUC and logloss on the pooled
test interactions (see :func:`evaluate_warmup`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool
from metarec.episodes.warmup import warmup_phases
from metarec.metrics import per_task as M

__all__ = ["evaluate_warmup"]


def evaluate_warmup(
    fitted: Any,
    table: InteractionTable,
    pool: TaskPool,
    k: int,
    *,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """``{phase: {"auc", "logloss", "item_auc", "n_items", "n_test"}}`` (see the module docstring)."""
    out: dict[str, dict[str, float]] = {}
    for name, sup, qry in warmup_phases(table, pool, k):
        scores, ys, ms = [], [], []
        for s in range(0, sup.n_tasks, batch_size):
            idx = slice(s, s + batch_size)
            q = qry.select(idx)
            scores.append(
                fitted.adapt(sup.select(idx), steps=steps, lr=lr)
                .score(q.users, q.items)
                .detach()
                .double()
            )
            ys.append(q.targets.double())
            ms.append(q.mask)
        width = max(x.shape[1] for x in scores)
        sc, y, m = _pad(scores, width, 0.0), _pad(ys, width, 0.0), _pad(ms, width, False)
        flat_s, flat_y = sc[m].unsqueeze(0), y[m].unsqueeze(0)
        auc = float(M.auc(flat_s, flat_y, torch.ones_like(flat_y, dtype=torch.bool))[0])
        logloss = float(F.binary_cross_entropy_with_logits(sc[m], y[m]))
        item_auc = M.mean_over_tasks(M.auc(sc, y, m))
        out[name] = {
            "auc": auc,
            "logloss": logloss,
            "item_auc": item_auc,
            "n_items": int(sup.n_tasks),
            "n_test": int(m.sum()),
        }
    return out


def _pad(xs: list[torch.Tensor], width: int, value: float | bool) -> torch.Tensor:
    return torch.cat([F.pad(x, (0, width - x.shape[1]), value=value) for x in xs])
