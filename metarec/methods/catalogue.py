"""Scoring a whole catalogue for a batch of adapted tasks: the path shared by the benchmark,
the methods' meta-val tuning and (through the same function) ``recommend`` and serving.

An :class:`~metarec.methods.base.Adapted` scores ``(T, N)`` (user, item) index pairs. Ranking a
catalogue of ``C`` items asks for every pair, ``(T, C)``. Two paths:

* **fast path**: an adapted method that also has ``score_catalogue(items (C,)) -> (T, C)``
  (:class:`CatalogueScoring`) computes it directly, e.g. one ``(T, D) @ (D, C)`` matmul for a
  factor model, or one gather-sum of item-item rows for EASE / ItemKNN;
* **fallback**: ``score(users, items)`` with the task's user expanded against ``chunk``
  catalogue columns at a time (bounded memory: ``T x chunk`` pairs per call).

:func:`score_catalogue` picks the path; :func:`evaluate_ranking` ranks a pool's tasks with the
ranking protocol's metrics (:class:`metarec.metrics.ranking_pool.CatalogueRanking`), which is how
the ranking baselines tune on meta-val.

Example:
    >>> import torch
    >>> class Dot:                                  # an adapted factor model, fast path only
    ...     n_tasks = 2
    ...     U, V = torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ...     def score(self, users, items):
    ...         return (self.U.unsqueeze(1) * self.V[items]).sum(-1)
    ...     def score_catalogue(self, items):
    ...         return self.U @ self.V[items].T
    >>> score_catalogue(Dot(), torch.tensor([0, 2])).tolist()
    [[1.0, 1.0], [0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.ranking import state_catalogue
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import MetaSplits
from metarec.metrics.per_task import mean_over_tasks
from metarec.metrics.ranking_pool import CatalogueRanking

__all__ = [
    "CatalogueScoring",
    "catalogue_scorer_of",
    "score_catalogue",
    "train_counts",
    "evaluate_ranking",
    "CHUNK",
]

CHUNK = 512
"""Catalogue columns per ``score`` call on the fallback path."""


@runtime_checkable
class CatalogueScoring(Protocol):
    """An adapted method with the catalogue fast path."""

    @property
    def n_tasks(self) -> int: ...

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...

    def score_catalogue(self, items: torch.Tensor) -> torch.Tensor:
        """``items (C,)`` -> ``(T, C)`` scores, equal to ``score`` on every (task, item) pair."""
        ...


def catalogue_scorer_of(obj: Any) -> Any:
    """The object holding the fast path: ``obj`` itself, or the adapted method a bound
    ``Adapted.score`` belongs to (how the benchmark passes scorers); ``None`` without one."""
    for cand in (obj, getattr(obj, "__self__", None)):
        if cand is not None and callable(getattr(cand, "score_catalogue", None)):
            return cand
    return None


def score_catalogue(
    adapted: Any,
    items: torch.Tensor,
    users: torch.Tensor | None = None,
    *,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """``(T, C)`` scores of catalogue ``items (C,)`` for every adapted task.

    Args:
        adapted: an adapted method (or its bound ``score``); the fast path is used when it
            has ``score_catalogue``.
        items: ``int64 (C,)`` item indices.
        users: ``int64 (T,)`` each task's user (the fallback path needs them).
        chunk: catalogue columns per ``score`` call on the fallback path.

    Raises:
        ConfigError: the fallback path without ``users``, or a fast path returning the wrong shape.
    """
    items = torch.as_tensor(items, dtype=torch.long)
    fast = catalogue_scorer_of(adapted)
    with torch.no_grad():
        if fast is not None:
            out = fast.score_catalogue(items)
            n = getattr(fast, "n_tasks", out.shape[0])
            if out.dim() != 2 or out.shape != (n, items.shape[0]):
                raise ConfigError(
                    f"{type(fast).__name__}.score_catalogue returned shape {tuple(out.shape)}; expected "
                    f"(n_tasks, C) = ({n}, {items.shape[0]})"
                )
            return out
        score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
            adapted if not hasattr(adapted, "score") else adapted.score
        )
        if users is None:
            raise ConfigError(
                f"{type(adapted).__name__} has no score_catalogue fast path; pass users (T,), each task's "
                "user, to score the catalogue through score()"
            )
        users = torch.as_tensor(users, dtype=torch.long)
        T, C = users.shape[0], items.shape[0]
        parts = []
        for s in range(0, C, chunk):
            it = items[s : s + chunk].unsqueeze(0).expand(T, -1)  # (T, c)
            u = users.unsqueeze(1).expand_as(it)
            parts.append(score(u, it).detach())
        return torch.cat(parts, dim=1) if parts else torch.zeros(T, 0)


def train_counts(table: InteractionTable, splits: MetaSplits) -> np.ndarray:
    """Meta-train interaction count of every item index: ``int64 (n_items,)``."""
    rows = splits.pools[splits.train].rows
    return np.bincount(table.items[rows], minlength=table.n_items)


def evaluate_ranking(
    fitted: Any,
    table: InteractionTable,
    splits: MetaSplits,
    pool_name: str,
    sampler_config: SamplerConfig,
    *,
    relevance: float | None = None,
    negatives: int | None = None,
    max_tasks: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Adapt ``fitted`` to each task's support of pool ``pool_name`` and rank the pool's catalogue
    (:func:`metarec.episodes.ranking.state_catalogue`): ``{metric: mean over tasks}`` with the
    catalogue metrics (``ndcg@10_all``, ...), the beyond-accuracy ones, ``"n_tasks"`` and
    ``"flags"``. Used on meta-val (the ranking baselines' tuning); the pool needs pinned queries.
    """
    pool = splits[pool_name]
    items = state_catalogue(splits, pool_name)
    counts = train_counts(table, splits)[items]
    ev = CatalogueRanking(
        table, pool, items, counts, relevance=relevance, negatives=negatives, seed=seed
    )
    sampler = TaskSampler(table, pool, sampler_config, seed=seed)
    n = len(pool) if max_tasks is None else min(max_tasks, len(pool))
    items_t = torch.from_numpy(items)
    per: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        pos = np.arange(start, min(start + batch_size, n))
        b = sampler.batch(pos)
        adapted = fitted.adapt(b.support)
        s = score_catalogue(adapted, items_t, torch.from_numpy(ev.users[pos]))
        for name, v in ev.batch(pos, s).items():
            per.setdefault(name, []).append(v.numpy())
    fin = ev.finish()
    out: dict[str, Any] = {
        name: mean_over_tasks(np.concatenate(v).tolist()) for name, v in per.items()
    }
    out.update(
        {
            k: (mean_over_tasks(np.asarray(v).tolist()) if isinstance(v, np.ndarray) else v)
            for k, v in fin.items()
        }
    )
    out["n_tasks"] = n
    return out
