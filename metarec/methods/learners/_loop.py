"""The shared episodic training loop and the :class:`~metarec.methods.Fitted` wrapper of every learner.

A *learner* is an ``nn.Module`` with three methods:

* ``meta_loss(batch: EpisodeBatch) -> ()``: the training loss of a meta-batch (adapt on each
  task's support, score its query);
* ``adapt(support: EpisodeSet, steps, lr) -> context``: what scoring a task needs (fast weights,
  a task embedding...), one entry per task;
* ``score(context, users (T, N), items (T, N)) -> (T, N)``;

and optionally ``after_step(batch)`` (memory writes, run without gradients after each
optimiser step). :func:`fit_learner` trains one with the one outer loop
(:func:`metarec.train.outer.outer_loop`: Adam and gradient clipping in the step, model selection
on meta-val every ``val_every`` steps, patience); :class:`LearnerFitted` and
:class:`LearnerAdapted` expose a trained learner through the method interface, with its
:class:`~metarec.train.log.TrainingLog`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import torch
from torch import nn

from metarec.config.objective import RankingObjective
from metarec.episodes.relevance import training_sampler
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.methods.base import FitData
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.learners._learner_fitted import (
    Build,
    LearnerAdapted,
    LearnerFitted,
    Objective,
    _api,
    learner_loader,
)
from metarec.methods.learners._settings import (
    TrainSettings,
    defaults_and_sampler,
    parse_settings,
    scenario_section,
    train_settings,
)
from metarec.metrics.evaluate import evaluate_fitted
from metarec.metrics.select import RANK_SELECT_METRIC, SELECT_METRIC
from metarec.models.base import seeded
from metarec.train.log import TrainingLog
from metarec.train.outer import LoopState, Step, Validation, outer_loop

__all__ = [
    "TrainSettings",
    "LearnerFitted",
    "LearnerAdapted",
    "LearnerMethod",
    "fit_learner",
    "evaluate_fitted",
    "parse_settings",
    "scenario_section",
    "learner_loader",
    "SELECT_METRIC",
    "defaults_and_sampler",
    "rank_score",
    "RANK_METRIC",
]

S = TypeVar("S")


class LearnerMethod:
    """A :class:`~metarec.methods.Method` whose :meth:`fit` builds a learner and runs :func:`fit_learner`.

    Args:
        name: the method name.
        build: ``build(data, settings) -> learner``.
        settings: the method's settings dataclass (with a ``train`` :class:`TrainSettings` view).
        sampler: the meta-train / meta-val task settings.
        pretrain: optional ``pretrain(learner, data, settings)`` run before the episodic loop
            (``learner`` is what ``build`` returned).
        select: optional ``select(fitted, data) -> log`` run after it (a meta-val choice of an
            adaptation setting, stored in the learner's buffers).
        episodes: optional ``episodes(data) -> data``: the meta-train tasks of the episodic loop.
        validate: optional ``validate(fitted, data) -> score`` (higher is better), the model
            selection criterion of :func:`fit_learner` on meta-val.
        val_metric: the name of ``validate``'s score in the training log.
        objective: optional ``objective(table)``: the ranking objective the learner trains on
            the data (:func:`metarec.episodes.relevance.ranking_objective`; ``None`` from it:
            the learner's own objective). With one, meta-training tasks carry relevance labels
            and sampled negatives, the fitted learner ranks from a support turned into such a
            set, and (without ``validate``) meta-val selects on ``ndcg@10_all`` over the
            catalogue (:func:`metarec.methods.catalogue.evaluate_ranking`).
    """

    def __init__(
        self,
        name: str,
        build: Build,
        settings: Any,
        sampler: SamplerConfig,
        pretrain: Callable[[Any, FitData, Any], dict[str, Any]] | None = None,
        select: Callable[[Any, FitData], dict[str, Any]] | None = None,
        episodes: Callable[[FitData], FitData] | None = None,
        validate: Callable[[Any, FitData], float] | None = None,
        val_metric: str = "score",
        objective: Objective | None = None,
    ) -> None:
        self.name, self._build, self.settings, self.sampler = name, build, settings, sampler
        self._pretrain, self._select, self._episodes = pretrain, select, episodes
        self._validate, self._val_metric = validate, val_metric
        self._objective = objective

    def fit(self, data: FitData) -> LearnerFitted:
        t0 = time.perf_counter()
        with seeded(data.seed):  # modules and dropout draw from a fork of torch's RNG
            learner = self._build(data, self.settings).to(data.device)
            log: dict[str, Any] = {}
            if self._pretrain is not None:
                log["pretrain"] = self._pretrain(learner, data, self.settings)
            episodes = data if self._episodes is None else self._episodes(data)
            check = self._validate
            val = None if check is None else (lambda f: check(f, data))
            objective = None if self._objective is None else self._objective(data.table)
            ts = train_settings(self.settings)
            log.update(
                fit_learner(
                    learner,
                    episodes,
                    ts,
                    self.sampler,
                    val,
                    progress=data.progress,
                    desc=self.name,
                    val_metric=self._val_metric,
                    objective=objective,
                )
            )
            fitted = LearnerFitted(self.name, data.table, learner, self.settings, log)
            fitted.k = self.sampler.n_support
            fitted.ranking = objective
            if self._select is not None:
                log["selected"] = self._select(fitted, data)
        log["fit_seconds"] = round(time.perf_counter() - t0, 2)
        fitted.training_log = replace(log.pop("training_log"), seconds=log["fit_seconds"])
        return fitted


def fit_learner(
    learner: nn.Module,
    data: FitData,
    ts: TrainSettings,
    scfg: SamplerConfig,
    validate: Callable[[LearnerFitted], float] | None = None,
    *,
    progress: bool = False,
    desc: str = "learner",
    val_metric: str = "score",
    objective: RankingObjective | None = None,
) -> dict[str, Any]:
    """Train ``learner`` on meta-train tasks; keep the weights (and buffers) with the best
    meta-val score (MAE for explicit, AUC for implicit feedback), checked every ``val_every``
    steps and at the end. ``validate(fitted) -> score`` (higher is better) replaces that score
    (a protocol's own meta-val criterion, e.g. the item warm-up phases' logloss); it is also
    checked before the first step, so training that does not help keeps the initial weights;
    the training log names it ``val_metric``. ``objective``: meta-train on its relevance labels
    and negatives (:func:`metarec.episodes.relevance.training_sampler`); the fitted learner
    ``validate`` sees adapts as it will be adapted (:attr:`LearnerFitted.ranking`), and without
    ``validate`` meta-val selects on ``ndcg@10_all`` (:func:`rank_score`).

    Returns:
        ``{"steps", "best_step", "best_val", "history": [{"step", "loss", "val"}...],
        "training_log": TrainingLog}``.
    """
    t0 = time.perf_counter()
    table, splits = data.table, data.splits
    dtype = next(iter(learner.parameters())).dtype
    sampler = TaskSampler(
        table,
        splits.pools[splits.train],
        training_sampler(scfg, objective),
        seed=data.seed,
        device=data.device,
        dtype=dtype,
    )
    params = [p for p in learner.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=ts.lr) if params else None
    metric, sign = SELECT_METRIC[table.feedback]
    if objective is not None and validate is None:  # scores that rank: the protocol's criterion
        validate, val_metric = (lambda f: rank_score(f, data, scfg, ts)), RANK_METRIC
    name = metric if validate is None else val_metric
    fitted = LearnerFitted("learner", table, learner, None, {})
    fitted.k = scfg.n_support
    fitted.ranking = objective
    snapshot = copy.deepcopy(learner.state_dict())
    st = LoopState()
    if validate is not None:  # the initial weights compete too
        learner.eval()
        st.best_score = validate(fitted)
        st.rows.append({"step": 0, "val": {name: st.best_score}})

    def step(i: int) -> Step:
        learner.train()
        batch = sampler.sample(ts.meta_batch)
        loss = _api(learner).meta_loss(batch)
        finite = bool(torch.isfinite(loss))
        if opt is not None and finite:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if ts.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, ts.grad_clip)
            opt.step()
            after = getattr(learner, "after_step", None)  # optional part of a learner
            if after is not None:
                with torch.no_grad():
                    after(batch)
        return Step(float(loss.detach()), batch.n_tasks, skipped=not finite)

    def check() -> Validation:
        learner.eval()
        if validate is not None:
            v = validate(fitted)
            return Validation(v if math.isfinite(v) else -math.inf, {name: v})
        v = _val_metric(fitted, data, scfg, ts, metric)
        return Validation(sign * v if math.isfinite(v) else -math.inf, {name: v})

    def keep_best(at: int) -> None:
        nonlocal snapshot
        snapshot = copy.deepcopy(learner.state_dict())

    st = outer_loop(
        step,
        steps=ts.steps,
        val_every=ts.val_every,
        validate=check,
        keep_best=keep_best,
        patience=ts.patience,
        state=st,
        progress=progress,
        desc=desc,
    )
    best = st.best_score
    if ts.steps == 0 and validate is None:  # still report the untrained meta-val score
        v = _val_metric(fitted, data, scfg, ts, metric)
        best, st.best_val = sign * v, {name: v}
    learner.load_state_dict(snapshot)
    learner.eval()
    history = [
        {"step": r["step"], **({"loss": r["loss"]} if "loss" in r else {}), "val": r["val"][name]}
        if "val" in r
        else {"step": r["step"], "loss": r["loss"]}
        for r in st.rows
    ]
    log = TrainingLog(
        steps=st.step,
        best_step=st.best_step,
        stopped_early=st.stopped_early,
        seconds=time.perf_counter() - t0,
        budget=ts.steps,
        skipped_steps=st.skipped,
        tasks=st.tasks,
        metric=name,
        best_val=dict(st.best_val),
        rows=tuple(r for r in st.rows if r["step"] > 0),
    )
    return {
        "steps": st.step,
        "best_step": st.best_step,
        "best_val": (best if validate is not None else sign * best)
        if math.isfinite(best)
        else None,
        "history": history,
        "training_log": log,
    }


RANK_METRIC = RANK_SELECT_METRIC[0]
"""The meta-val criterion of a learner trained to rank (higher is better)."""


def rank_score(fitted: Any, data: FitData, scfg: SamplerConfig, ts: TrainSettings) -> float:
    """``ndcg@10_all`` of ``fitted`` over the meta-val tasks' catalogues (at most
    ``ts.val_tasks``; the relevance threshold of ``fitted.ranking``)."""
    objective = getattr(fitted, "ranking", None)
    val = evaluate_ranking(
        fitted,
        data.table,
        data.splits,
        data.splits.val,
        scfg,
        relevance=None if objective is None else objective.relevance,
        negatives=None,
        max_tasks=ts.val_tasks,
        seed=data.seed,
    )
    return float(val[RANK_METRIC])


def _val_metric(
    fitted: LearnerFitted, data: FitData, scfg: SamplerConfig, ts: TrainSettings, metric: str
) -> float:
    val = evaluate_fitted(
        fitted,
        data.table,
        data.splits.pools[data.splits.val],
        scfg,
        max_tasks=ts.val_tasks,
        seed=data.seed,
        check_finite=False,  # a diverged candidate scores NaN and is not kept
    )
    return float(val[metric])
