"""Score cold users' pinned query sets, optionally after few-shot adaptation of their vector.

Every cross-domain method ends in a :class:`ColdStartScorer`: a zero-shot target-domain
*user vector* for any user (from a bridge, a shared embedding, or the average user) and a
frozen scoring function of (user vector, items). Few-shot adaptation ("bridge+adapt") is then
the same for every method: ``steps`` gradient steps on the user vector alone, from its
zero-shot value ``v0``, on the task's support set,

``v <- v - lr * grad_v [ L_support(score(v, items), targets) + l2 * ||v - v0||^2 ]``

(the ``l2`` term is a Gaussian prior centred on the transferred vector: with 1-5 shots it keeps
the adapted user near what transfer said). :func:`evaluate_cold_pool` scores a pool exactly as
:func:`metarec.metrics.evaluate.evaluate_pool` does (same sampler, seed, batch size and therefore the
same query sets and sampled negatives; same metrics from
:func:`metarec.metrics.evaluate.per_task_metrics`; explicit predictions clipped to the rating scale) and
returns the same dictionary: it is :func:`metarec.metrics.evaluate.evaluate_fitted` over the
scorer's user vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.algorithms.losses import LOSSES
from metarec.config.objective import RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.pool import TaskPool
from metarec.episodes.relevance import NegativeCatalogue, rank_support
from metarec.episodes.sampler import SamplerConfig
from metarec.metrics.evaluate import evaluate_fitted

__all__ = [
    "ColdStartScorer",
    "AdaptConfig",
    "adapt_user_vectors",
    "evaluate_cold_pool",
    "UserVectors",
    "task_users",
    "zero_shot_then_adapt",
    "RankAdapt",
    "VectorTasks",
]


class ColdStartScorer(Protocol):
    """What a trained cross-domain method exposes for evaluation."""

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """Zero-shot target-domain vectors of ``users int64 (T,)``: ``(T, du)``."""
        ...

    def score(self, uvec: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predictions (ratings, or logits for implicit feedback) ``(T, N)`` of user vectors
        ``(T, du)`` for target-domain ``items int64 (T, N)``; differentiable in ``uvec``."""
        ...


@dataclass(frozen=True)
class AdaptConfig:
    """Few-shot adaptation of the user vector (see the module docstring).

    Args:
        steps: gradient steps on the support set (0: zero-shot).
        lr: step size.
        l2: weight of ``||v - v0||^2`` (the prior towards the transferred vector).
        loss: ``"mse"`` (explicit) or ``"bce"`` (implicit).
    """

    steps: int = 0
    lr: float = 0.1
    l2: float = 0.1
    loss: str = "mse"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"adapt steps={self.steps!r}: must be an int >= 0 (0 = zero-shot)")
        if not self.lr > 0 or self.l2 < 0:
            raise ConfigError(f"adapt lr={self.lr!r}, l2={self.l2!r}: need lr > 0 and l2 >= 0")
        if self.loss not in LOSSES:
            raise ConfigError(f"adapt loss={self.loss!r}: choose one of {tuple(LOSSES)}")


def adapt_user_vectors(
    scorer: ColdStartScorer, v0: torch.Tensor, support: EpisodeSet, cfg: AdaptConfig
) -> torch.Tensor:
    """``cfg.steps`` gradient steps on each task's user vector: ``(T, du) -> (T, du)`` (detached).

    The objective sums the tasks' masked support losses; task ``t``'s term depends on row
    ``t`` of the vectors only, so its gradient is exactly task ``t``'s own gradient.
    """
    v0 = v0.detach()
    v = v0
    loss = LOSSES[cfg.loss]
    for _ in range(cfg.steps):
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            per_task = loss(scorer.score(v, support.items), support.targets, support.mask)  # (T,)
            objective = per_task.sum() + cfg.l2 * (v - v0).square().sum()
            (g,) = torch.autograd.grad(objective, v)
        v = v - cfg.lr * g
    return v.detach()


def evaluate_cold_pool(
    scorer: ColdStartScorer,
    table: InteractionTable,
    pool: TaskPool,
    sampler_config: SamplerConfig,
    *,
    adapt: AdaptConfig | None = None,
    rank: RankAdapt | None = None,
    k: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    max_tasks: int | None = None,
    return_per_task: bool = False,
) -> dict[str, Any]:
    """Score every task of ``pool`` (units are ``user * n_domains + domain``) with a trained
    scorer: :func:`metarec.metrics.evaluate.evaluate_fitted` over the scorer's zero-shot user
    vectors, adapted on each support when ``adapt`` asks (the one evaluation loop).

    Args:
        scorer: the trained method.
        table, pool: the data and the (pinned-query) evaluation pool.
        sampler_config: the protocol's sampler settings (``n_support`` = the shots, the
            query size, the sampled negatives).
        adapt: few-shot adaptation on each support set (``None`` or ``steps=0``: zero-shot;
            the support is drawn anyway, so the query sets do not depend on this choice).
        rank: adapt on the support as relevance labels plus negatives (:class:`RankAdapt`).
        k: cut-off of the ranking metrics.
        seed, batch_size: the evaluation sampler's seed and batch size; the defaults are
            :func:`metarec.metrics.evaluate.evaluate_pool`'s, which makes the queries (and sampled
            negatives) identical to the meta-learning methods' for the same shots.
        max_tasks: score only the first tasks of the pool (validation).
        return_per_task: add ``"per_task": {metric: float64 (T,)}`` and ``"units"``.

    Returns:
        ``{metric: mean over tasks, "n_tasks", "adapt_ms_per_task", "flags"}`` (the keys of
        :func:`metarec.metrics.evaluate.evaluate_pool`), plus the per-task arrays when asked.
    """
    n = len(pool) if max_tasks is None else min(max_tasks, len(pool))
    out = evaluate_fitted(
        VectorTasks(scorer, table, adapt, rank=rank),
        table,
        pool,
        sampler_config,
        max_tasks=max_tasks,
        batch_size=batch_size,
        k=k,
        seed=seed,
        return_per_task=return_per_task,
        check_finite=False,  # a diverged candidate scores NaN on meta-val and is not kept
    )
    if return_per_task:
        out["units"] = pool.units[:n].copy()
    return out


@dataclass(frozen=True)
class RankAdapt:
    """A method trained to rank ratings adapts on its support as it trained: the ratings become
    relevance labels and each task gets sampled negatives
    (:func:`metarec.episodes.relevance.rank_support`) before the ``"bce"`` steps."""

    objective: RankingObjective
    catalogue: NegativeCatalogue

    @classmethod
    def of(cls, objective: RankingObjective, table: InteractionTable) -> RankAdapt:
        return cls(objective, NegativeCatalogue.of(table))

    def to_json(self) -> dict[str, Any]:
        """The objective and the catalogue's (domain, item) pairs (a saved run keeps no table
        rows, so its adaptation draws negatives from these)."""
        c = self.catalogue
        doms = np.repeat(np.arange(c.size.shape[0]), c.size)
        return {
            "objective": self.objective.to_json(),
            "domains": doms.tolist(),
            "items": c.items.tolist(),
            "n_items": int(c.domain.shape[0]),
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> RankAdapt:
        doms = np.asarray(saved["domains"], dtype=np.int64)
        items = np.asarray(saved["items"], dtype=np.int64)
        n_domains = int(doms.max()) + 1 if doms.size else 1
        size = np.bincount(doms, minlength=n_domains).astype(np.int64)
        domain = np.zeros(int(saved["n_items"]), dtype=np.int64)
        first = np.unique(items, return_index=True)[1]
        domain[items[first]] = doms[first]
        catalogue = NegativeCatalogue(items, np.cumsum(size) - size, size, domain)
        return cls(RankingObjective(**saved["objective"]), catalogue)


@dataclass
class UserVectors:
    """``T`` tasks' user vectors ``(T, du)`` over a frozen scorer: the adapted state of every
    cross-domain method. ``score_kind``: ``"rank"`` for a method selected to rank (a ranking
    scenario: its scores order items and are not ratings, so they get no error metric and are
    never clipped), else ``"rating"``."""

    scorer: Any
    vectors: torch.Tensor  # (T, du)
    score_kind: str = "rating"

    @property
    def n_tasks(self) -> int:
        return int(self.vectors.shape[0])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` target-domain items -> ``(T, N)`` scores of each task's user vector."""
        with torch.no_grad():
            return self.scorer.score(self.vectors.to(items.device), items)

    def select(self, rows: torch.Tensor) -> UserVectors:
        return UserVectors(self.scorer, self.vectors[rows.to(self.vectors.device)], self.score_kind)

    @classmethod
    def concat(cls, parts: list[UserVectors]) -> UserVectors:
        return cls(parts[0].scorer, torch.cat([p.vectors for p in parts]), parts[0].score_kind)


def task_users(support: EpisodeSet) -> torch.Tensor:
    """The user of each task ``(T,)``: tasks hold one user (padding is index 0)."""
    return support.users.max(dim=1).values


def zero_shot_then_adapt(
    scorer: ColdStartScorer,
    support: EpisodeSet,
    adapt: AdaptConfig | None,
    *,
    rank: RankAdapt | None = None,
    score_kind: str = "rating",
) -> UserVectors:
    """The tasks' users' zero-shot vectors, then ``adapt``'s steps on each support (with
    ``rank``: the support as relevance labels plus sampled negatives, :class:`RankAdapt`)."""
    with torch.no_grad():
        v = scorer.user_vectors(task_users(support))  # (T, du)
    if adapt is not None and adapt.steps:
        if rank is not None:
            support = rank_support(support, rank.objective, rank.catalogue)
        v = adapt_user_vectors(scorer, v, support, adapt)
    return UserVectors(scorer, v, score_kind)


class VectorTasks:
    """A scorer and a fixed adaptation behind ``adapt`` (what :func:`evaluate_fitted` and
    :func:`metarec.methods.catalogue.evaluate_ranking` score)."""

    def __init__(
        self,
        scorer: ColdStartScorer,
        table: InteractionTable,
        adapt: AdaptConfig | None,
        *,
        rank: RankAdapt | None = None,
        score_kind: str = "rating",
    ):
        self.scorer, self.table, self.cfg = scorer, table, adapt
        self.rank, self.score_kind = rank, score_kind

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> UserVectors:
        return zero_shot_then_adapt(
            self.scorer, support, self.cfg, rank=self.rank, score_kind=self.score_kind
        )
