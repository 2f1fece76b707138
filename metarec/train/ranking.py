"""The MAML family trained to rank (:mod:`metarec.config.objective`): its adaptation and its
meta-val score.

A run whose :class:`~metarec.algorithms.AlgorithmConfig` has a ranking objective
(``algo.ranking``) adapts to a support only after :func:`~metarec.episodes.relevance.rank_support`
(relevance labels, sampled negatives), as its meta-training tasks were built; :func:`adapt_engine`
is that adaptation for every caller (the loop's validation, :class:`~metarec.methods.engine.EngineFitted`).
Its predictions are scores that rank items, not ratings, so the loop selects its best step by
the ranking protocol's own criterion, ``ndcg@10_all`` over each meta-val task's catalogue
(:func:`evaluate_engine_ranking`), as the ranking baselines and ``elae`` are tuned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from metarec.algorithms import AlgorithmConfig, adapt_batch, predict_batch
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.ranking import state_catalogue
from metarec.episodes.relevance import NegativeCatalogue, rank_support
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import MetaSplits
from metarec.metrics.averaging import mean_over_tasks
from metarec.metrics.ranking_pool import CatalogueRanking
from metarec.metrics.select import RANK_SELECT_METRIC

__all__ = ["adapt_engine", "evaluate_engine_ranking", "RANK_METRIC"]

RANK_METRIC = RANK_SELECT_METRIC[0]
"""The meta-val criterion of a run trained to rank (higher is better)."""

_CHUNK = 512  # catalogue columns scored per call


def adapt_engine(
    algo: AlgorithmConfig,
    model: nn.Module,
    params: dict[str, torch.Tensor],
    support: EpisodeSet,
    steps: int | None,
    lr: float | None,
    *,
    state: dict[str, torch.Tensor] | None,
    catalogue: NegativeCatalogue | None,
) -> dict[str, torch.Tensor]:
    """:func:`~metarec.algorithms.adapt_batch` on ``support``, first made a ranking set when
    ``algo`` trains to rank (``catalogue``: where its negatives come from; needed then)."""
    objective = algo.ranking
    if objective is not None:
        assert catalogue is not None, "a run trained to rank adapts with its negative catalogue"
        support = rank_support(support, objective, catalogue)
    return adapt_batch(algo, model, params, support, steps, lr, state=state)


def _catalogue_scores(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    fast: dict[str, torch.Tensor],
    users: torch.Tensor,
    items: torch.Tensor,
) -> torch.Tensor:
    """``(T, C)`` scores of catalogue ``items (C,)`` for each adapted task of user ``users (T,)``."""
    parts = []
    with torch.no_grad():
        for s in range(0, items.shape[0], _CHUNK):
            it = items[s : s + _CHUNK].unsqueeze(0).expand(users.shape[0], -1)  # (T, c)
            parts.append(predict_batch(model, params, fast, users.unsqueeze(1).expand_as(it), it))
    return torch.cat(parts, 1) if parts else torch.zeros(users.shape[0], 0)


def evaluate_engine_ranking(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    algo: AlgorithmConfig,
    table: InteractionTable,
    splits: MetaSplits,
    pool_name: str,
    sampler_config: SamplerConfig,
    *,
    state: dict[str, torch.Tensor] | None = None,
    relevance: float | None = None,
    max_tasks: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
    catalogue: NegativeCatalogue | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Adapt to each task's support of pool ``pool_name`` (:func:`adapt_engine`) and rank the
    pool's catalogue (:func:`~metarec.episodes.ranking.state_catalogue`): ``{metric: mean over
    tasks}`` with the catalogue metrics (``ndcg@10_all``, ``recall@20_all``, ...; no sampled
    ``*_neg`` ones), the served lists' ``coverage@10``, ``overlap@10``, ``pop@10``,
    ``"n_tasks"`` and ``"flags"``."""
    pool = splits[pool_name]
    items = state_catalogue(splits, pool_name)
    counts = np.bincount(table.items[splits.pools[splits.train].rows], minlength=table.n_items)
    ev = CatalogueRanking(table, pool, items, counts[items], relevance=relevance, negatives=None)
    sampler = TaskSampler(table, pool, sampler_config, seed=seed, device=device)
    cat = (
        catalogue if catalogue is not None or algo.ranking is None else NegativeCatalogue.of(table)
    )
    n = len(pool) if max_tasks is None else min(max_tasks, len(pool))
    items_t = torch.from_numpy(items).to(device)
    per: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        pos = np.arange(start, min(start + batch_size, n))
        b = sampler.batch(pos)
        fast = adapt_engine(algo, model, params, b.support, steps, lr, state=state, catalogue=cat)
        users = torch.from_numpy(ev.users[pos]).to(device)
        scores = _catalogue_scores(model, params, fast, users, items_t).float().cpu()
        for name, v in ev.batch(pos, scores).items():
            per.setdefault(name, []).append(v.numpy())
    out: dict[str, Any] = {
        name: mean_over_tasks(np.concatenate(v).tolist()) for name, v in per.items()
    }
    for k, v in ev.finish().items():
        out[k] = mean_over_tasks(np.asarray(v).tolist()) if isinstance(v, np.ndarray) else v
    out["n_tasks"] = n
    return out
