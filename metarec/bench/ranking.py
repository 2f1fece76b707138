"""The benchmark's side of the catalogue ranking protocol (``protocol.ranking = true``).

:class:`RankingSpec` is what :func:`metarec.bench.evaluation.score_pool` needs to rank a pool's
catalogue (:mod:`metarec.episodes.ranking` for the protocol, :mod:`metarec.metrics.catalogue`
for the metric formulas): the seed's splits (each state's catalogue, meta-train popularity),
the relevance threshold and the sampled negatives. :func:`rank_batch` scores one batch of
adapted tasks over the catalogue through the shared scorer
(:func:`metarec.methods.catalogue.score_catalogue`: the method's fast path when it has one).

The ranking scenarios' metrics replace the single-positive ``*_all`` / ``*_neg`` of the rating
scenarios (:mod:`metarec.bench.evaluation`), whose definitions are unchanged for every scenario
without ``protocol.ranking``, so results recorded before keep their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metarec.config import Scenario
from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool
from metarec.episodes.ranking import state_catalogue
from metarec.episodes.splits import MetaSplits
from metarec.methods.catalogue import catalogue_scorer_of, score_catalogue, train_counts
from metarec.metrics.ranking_pool import CatalogueRanking
from metarec.metrics.select import RANK_SELECT_METRIC

__all__ = ["RankingSpec", "ranking_spec", "rank_batch", "primary_metric", "ERROR_METRICS"]

ERROR_METRICS = ("mae", "rmse")
"""Within-query error metrics left out for methods whose scores are not ratings."""


@dataclass
class RankingSpec:
    """How a benchmark run ranks catalogues (one per seed's splits).

    Attributes:
        splits: the seed's splits (catalogues and meta-train popularity come from them).
        relevance: ``protocol.relevance`` (``None``: the rating scale's default).
        negatives: sampled negatives per relevant item (``protocol.ranking_negatives``).
        seed: seeds the sampled negatives (the benchmark seed).
    """

    splits: MetaSplits
    relevance: float | None = None
    negatives: int = 100
    seed: int = 0
    _counts: np.ndarray | None = field(default=None, repr=False)

    def evaluator(self, table: InteractionTable, pool: TaskPool) -> CatalogueRanking:
        """A fresh :class:`CatalogueRanking` of ``pool`` (a pool of :attr:`splits`)."""
        if self._counts is None:
            self._counts = train_counts(table, self.splits)
        items = state_catalogue(self.splits, pool.name)
        return CatalogueRanking(
            table,
            pool,
            items,
            self._counts[items],
            relevance=self.relevance,
            negatives=self.negatives,
            seed=self.seed,
        )


def ranking_spec(scenario: Scenario, splits: MetaSplits, seed: int) -> RankingSpec | None:
    """The :class:`RankingSpec` of a ranking scenario (``None`` for a rating scenario)."""
    p = scenario.protocol
    if not p.ranking:
        return None
    return RankingSpec(splits, p.relevance, p.ranking_negatives, seed)


def rank_batch(
    ev: CatalogueRanking, positions: np.ndarray, scorer: Any, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Per-task ranking metrics of the batch of pool ``positions`` scored by ``scorer`` (an
    adapted method or its bound ``score``) over ``ev``'s catalogue."""
    items = torch.from_numpy(ev.items).to(device)
    users = torch.from_numpy(ev.users[positions]).to(device)
    scores = score_catalogue(scorer, items, users)
    return ev.batch(positions, scores.detach().float().cpu())


def scores_rank_only(scorer: Any) -> bool:
    """Whether the scorer's method says its scores rank items but are not ratings."""
    owner = catalogue_scorer_of(scorer) or getattr(scorer, "__self__", scorer)
    return getattr(owner, "score_kind", "rating") == "rank"


def primary_metric(scenario: Scenario, feedback: str) -> str:
    """The benchmark's primary metric: ``ndcg@10_all`` in a ranking scenario, else ``mae``
    (explicit) / ``auc`` (implicit)."""
    if scenario.protocol.ranking:
        return RANK_SELECT_METRIC[0]
    return {"explicit": "mae", "implicit": "auc"}[feedback]
