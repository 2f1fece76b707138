"""A trained cross-domain method (:class:`FittedMethod`): scores any pool under any sampler
settings, with the ``+adapt`` step size chosen on meta-val once per support size."""

from __future__ import annotations

from typing import Any

from metarec.config.objective import RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import MetaSplits
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.crossdomain.data import CrossDomainView
from metarec.methods.crossdomain.evaluate import (
    AdaptConfig,
    ColdStartScorer,
    RankAdapt,
    VectorTasks,
    evaluate_cold_pool,
)
from metarec.methods.crossdomain.names import parse_method
from metarec.methods.crossdomain.settings import CrossDomainConfig
from metarec.metrics.select import RANK_SELECT_METRIC, SELECT_METRIC

__all__ = ["FittedMethod", "ranking_val"]


def ranking_val(
    scorer: ColdStartScorer,
    table: InteractionTable,
    splits: MetaSplits,
    scfg: SamplerConfig,
    cfg: CrossDomainConfig,
    relevance: float | None,
    adapt: AdaptConfig | None = None,
    rank: RankAdapt | None = None,
) -> dict[str, Any]:
    """Catalogue ranking of at most ``cfg.val_tasks`` meta-val tasks after ``adapt`` (``None``:
    zero-shot): what a cross-domain method in a ranking scenario is selected on, its epochs
    (:func:`~metarec.methods.crossdomain.methods.fit_method`) and its ``+adapt`` step size alike."""
    tasks = VectorTasks(scorer, table, adapt, rank=rank, score_kind="rank")
    return evaluate_ranking(
        tasks,
        table,
        splits,
        splits.val,
        scfg,
        relevance=relevance,
        max_tasks=cfg.val_tasks,
        batch_size=cfg.eval_batch_size,
        seed=cfg.eval_seed,
    )


class FittedMethod:
    """A trained cross-domain method, ready to score any pool under any sampler settings.

    Built by :func:`fit_method`. :meth:`evaluate` scores a pool; for ``"+adapt"`` methods the
    adaptation step size is chosen on meta-val (:meth:`select_adapt`) once per sampler setting
    (so per shots value) and reused for every test pool.

    Attributes:
        method, base, adapt: the method name, its base name and whether it adapts.
        scorer: the trained :class:`~metarec.methods.crossdomain.evaluate.ColdStartScorer`.
        view: the training view; config: the resolved settings; log: training logs.
        fit_seconds: wall-clock time of training (meta-val selection included).
        ranking: selected in a ranking scenario (meta-val ``ndcg@10_all`` over each task's
            catalogue; ``score_kind = "rank"``); relevance: the protocol's threshold (``None``:
            the scale's default); objective: explicit ratings trained to rank (labels and
            sampled negatives, also at adaptation), else ``None``.
    """

    def __init__(
        self,
        method: str,
        table: InteractionTable,
        splits: MetaSplits,
        view: CrossDomainView,
        scorer: ColdStartScorer,
        config: CrossDomainConfig,
        log: dict,
        fit_seconds: float,
        *,
        ranking: bool = False,
        relevance: float | None = None,
        objective: RankingObjective | None = None,
    ) -> None:
        self.method = method
        self.base, self.adapt = parse_method(method)
        self.table, self.splits, self.view, self.scorer = table, splits, view, scorer
        self.config, self.log, self.fit_seconds = config, log, fit_seconds
        self.ranking, self.relevance, self.objective = ranking, relevance, objective
        self.metric, self.sign = RANK_SELECT_METRIC if ranking else SELECT_METRIC[table.feedback]
        self.score_kind = "rank" if ranking else "rating"
        self.rank_adapt = None if objective is None else RankAdapt.of(objective, table)
        self._chosen: dict[SamplerConfig, tuple[AdaptConfig | None, dict[str, Any]]] = {}

    def evaluate(
        self,
        pool: TaskPool,
        sampler_config: SamplerConfig,
        *,
        max_tasks: int | None = None,
        return_per_task: bool = False,
    ) -> dict[str, Any]:
        """Score ``pool`` (zero-shot, or after the adaptation chosen for ``sampler_config``);
        :func:`~metarec.methods.crossdomain.evaluate.evaluate_cold_pool`'s dictionary."""
        chosen, _ = self.select_adapt(sampler_config)
        return self._score(
            pool, sampler_config, chosen, max_tasks=max_tasks, return_per_task=return_per_task
        )

    def select_adapt(
        self, sampler_config: SamplerConfig
    ) -> tuple[AdaptConfig | None, dict[str, Any]]:
        """``(adaptation, meta-val result)``: for ``"+adapt"`` methods the step size of
        ``config.adapt_lrs`` with the best meta-val score (ties: zero-shot, then the first)."""
        if sampler_config in self._chosen:
            return self._chosen[sampler_config]
        cfg = self.config
        chosen: AdaptConfig | None = None
        val = self._val(sampler_config, None)
        if self.adapt:
            loss = self.adapt_loss
            tried = {}
            for lr in cfg.adapt_lrs:
                a = AdaptConfig(cfg.adapt_steps, lr, cfg.adapt_l2, loss)
                res = self._val(sampler_config, a)
                tried[lr] = res[self.metric]
                if chosen is None or self.sign * res[self.metric] > self.sign * val[self.metric]:
                    chosen, val = a, res
            self.log.setdefault("adapt_lrs", {})[str(sampler_config.n_support)] = tried
        self._chosen[sampler_config] = (chosen, val)
        return chosen, val

    @property
    def adapt_loss(self) -> str:
        """The support loss of ``+adapt``: ``"mse"`` on ratings trained as ratings, else ``"bce"``."""
        return "mse" if self.view.train_feedback == "explicit" else "bce"

    def _val(self, scfg: SamplerConfig, adapt: AdaptConfig | None) -> dict[str, Any]:
        """Meta-val scores (at most ``config.val_tasks`` tasks) after ``adapt``: the catalogue
        ranking metrics in a ranking scenario, the pinned query sets' otherwise."""
        cfg = self.config
        if not self.ranking:
            return self._score(
                self.splits.pools[self.splits.val], scfg, adapt, max_tasks=cfg.val_tasks
            )
        return ranking_val(
            self.scorer, self.table, self.splits, scfg, cfg, self.relevance, adapt, self.rank_adapt
        )

    def _score(
        self,
        pool: TaskPool,
        scfg: SamplerConfig,
        adapt: AdaptConfig | None,
        *,
        max_tasks: int | None = None,
        return_per_task: bool = False,
    ) -> dict[str, Any]:
        cfg = self.config
        return evaluate_cold_pool(
            self.scorer,
            self.table,
            pool,
            scfg,
            adapt=adapt,
            rank=self.rank_adapt,
            k=cfg.k,
            seed=cfg.eval_seed,
            batch_size=cfg.eval_batch_size,
            max_tasks=max_tasks,
            return_per_task=return_per_task,
        )
