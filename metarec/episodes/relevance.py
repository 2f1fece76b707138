"""Ranking objectives on ratings: a scenario's :class:`~metarec.config.objective.RankingObjective`,
the training sampler that produces its tasks, and a cold user's support as a set to rank from.

* :func:`ranking_objective`: the objective a scenario trains (``None`` unless it is a ranking
  scenario on explicit ratings with a click loss, :mod:`metarec.config.objective`);
* :func:`training_sampler`: the meta-train :class:`~metarec.episodes.sampler.SamplerConfig` of
  that objective (relevance labels, ``negatives`` per interaction drawn from the meta-train items
  by the objective's proposal);
* :func:`rank_support`: what adaptation does to a support first: its ratings become relevance
  labels and each task gets ``negatives`` per interaction drawn uniformly from the catalogue of its
  domain (:class:`NegativeCatalogue`), never an item of its own support. The draw is seeded by the
  task's user, so a user's adaptation does not depend on the other tasks of the batch and the same
  support always gives the same list.

Example:
    >>> from metarec.data.synthetic import make_synthetic
    >>> t = make_synthetic(n_domains=1, n_users=20, n_items=30, density=0.3, seed=0)
    >>> from metarec.config.objective import RankingObjective
    >>> s = EpisodeSet(torch.tensor([[3, 3]]), torch.tensor([[4, 7]]), torch.tensor([[5.0, 2.0]]),
    ...                torch.tensor([[True, True]]))
    >>> out = rank_support(s, RankingObjective("bpr", 4.0, negatives=2), NegativeCatalogue.of(t))
    >>> out.targets.tolist(), int(out.mask.sum())            # labels, then 2 x 2 negatives
    ([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]], 6)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from metarec.config.objective import RANK_LOSSES, RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.ranking import relevance_threshold
from metarec.episodes.sampler import SamplerConfig

__all__ = [
    "ranking_objective",
    "training_sampler",
    "NegativeCatalogue",
    "rank_support",
]


def ranking_objective(scenario: Any, table: InteractionTable) -> RankingObjective | None:
    """The :class:`RankingObjective` ``scenario`` trains on ``table``: a ranking scenario
    (``protocol.ranking``) on explicit ratings whose ``algorithm.loss`` is a click loss
    (``bce``, ``bpr``, ``softmax``), with the protocol's relevance threshold
    (:func:`~metarec.episodes.ranking.relevance_threshold`); ``None`` otherwise (the targets are
    trained as they are: ratings with ``mse``, clicks on implicit data)."""
    if scenario is None:
        return None
    loss, p = scenario.algorithm.loss, scenario.protocol
    if not p.ranking or table.feedback != "explicit" or loss not in RANK_LOSSES:
        return None
    return RankingObjective(loss, relevance_threshold(table, p.relevance))


def training_sampler(base: SamplerConfig, objective: RankingObjective | None) -> SamplerConfig:
    """The meta-train sampler: ``base`` drawing negatives from the pool's own items, and with an
    ``objective``, relevance labels and its negatives (:data:`~metarec.config.objective.PROPOSALS`)."""
    cfg = replace(base, negatives_from="pool")
    if objective is None:
        return cfg
    by: Literal["uniform", "popularity"] = (
        "popularity" if objective.proposal == "popularity" else "uniform"
    )
    return replace(
        cfg, relevance=objective.relevance, negatives=objective.negatives, negatives_by=by
    )


@dataclass(frozen=True)
class NegativeCatalogue:
    """The items negatives are drawn from at adaptation, by domain.

    Attributes:
        items: ``int64 (P,)``: every item with a row in the table, grouped by domain.
        start, size: ``int64 (D,)``: each domain's slice of ``items``.
        domain: ``int64 (n_items,)``: the domain of each item's rows (its first, for an item in
            several; 0 for an item with no row).
    """

    items: np.ndarray
    start: np.ndarray
    size: np.ndarray
    domain: np.ndarray

    @classmethod
    def of(cls, table: InteractionTable) -> NegativeCatalogue:
        pairs = np.unique(np.stack([table.domains, table.items], axis=1), axis=0)  # by domain
        size = np.bincount(pairs[:, 0], minlength=table.n_domains).astype(np.int64)
        domain = np.zeros(table.n_items, dtype=np.int64)
        first = np.unique(pairs[:, 1], return_index=True)[1]
        domain[pairs[first, 1]] = pairs[first, 0]
        return cls(pairs[:, 1].astype(np.int64), np.cumsum(size) - size, size, domain)


def rank_support(
    support: EpisodeSet,
    objective: RankingObjective,
    catalogue: NegativeCatalogue,
    *,
    seed: int = 0,
) -> EpisodeSet:
    """A support as the ranking objective trains on it (see the module docstring):
    ``(T, N) -> (T, N + negatives * N)``, the labelled entries first, then each task's
    ``negatives * n_t`` sampled ones (``n_t`` its real entries; a draw that keeps hitting the
    task's own support items is left out, so a task may get a few fewer); no ``logq`` (a uniform
    draw needs no correction).

    Args:
        support: the tasks' supports (ratings).
        objective: the threshold and the number of negatives.
        catalogue: the items to draw from, by domain (:meth:`NegativeCatalogue.of` of the table).
        seed: with each task's user, seeds its draw.
    """
    labels = (support.targets >= objective.relevance - 1e-9).to(support.targets.dtype)
    labels = torch.where(support.mask, labels, torch.zeros_like(labels))
    T, N = support.users.shape
    K = objective.negatives * N
    if K == 0 or T == 0:
        return EpisodeSet(support.users, support.items, labels, support.mask)
    users = support.users.cpu().numpy()
    items = support.items.cpu().numpy()
    mask = support.mask.cpu().numpy()
    neg = np.zeros((T, K), dtype=np.int64)
    ok = np.zeros((T, K), dtype=bool)
    who = np.zeros((T, K), dtype=np.int64)
    for t in range(T):
        real = np.flatnonzero(mask[t])
        if real.size == 0:
            continue
        own = items[t, real]
        d = int(catalogue.domain[own[0]])
        lo, n = int(catalogue.start[d]), int(catalogue.size[d])
        want = objective.negatives * real.size
        rng = np.random.default_rng([seed, 7919, int(users[t, real[0]])])
        pick = catalogue.items[lo + rng.integers(0, n, size=want)] if n else np.zeros(0, np.int64)
        for _ in range(8):  # redraw the hits on the support's own items; bounded
            hit = np.isin(pick, own)
            if not hit.any() or n == 0:
                break
            pick[hit] = catalogue.items[lo + rng.integers(0, n, size=int(hit.sum()))]
        keep = ~np.isin(pick, own)
        m = int(keep.sum())
        neg[t, :m], ok[t, :m], who[t, :m] = pick[keep], True, users[t, real[0]]
    dev = support.users.device
    neg_t, ok_t = torch.from_numpy(neg).to(dev), torch.from_numpy(ok).to(dev)
    return EpisodeSet(
        torch.cat([support.users, torch.from_numpy(who).to(dev)], 1),
        torch.cat([support.items, neg_t], 1),
        torch.cat([labels, torch.zeros(T, K, dtype=labels.dtype, device=dev)], 1),
        torch.cat([support.mask, ok_t], 1),
    )
