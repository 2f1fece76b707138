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
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar, cast

import torch
from torch import nn

from metarec._errors import CheckpointError, ConfigError
from metarec.config import from_dict, to_dict
from metarec.config.objective import RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.episodes.relevance import NegativeCatalogue, rank_support, training_sampler
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.methods.adapted import cat_tasks, index_tasks
from metarec.methods.base import FitData
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.learners._settings import (
    TrainSettings,
    defaults_and_sampler,
    parse_settings,
    scenario_section,
    train_settings,
)
from metarec.metrics.evaluate import evaluate_fitted
from metarec.metrics.select import SELECT_METRIC
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


class _LearnerAPI(Protocol):
    """The three methods of a learner (see the module docstring), for the type checker: the
    learner itself is held as an ``nn.Module``, whose attribute types do not include them."""

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor: ...

    def adapt(self, support: EpisodeSet, steps: int | None, lr: float | None) -> Any: ...

    def score(self, context: Any, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...


def _api(learner: nn.Module) -> _LearnerAPI:
    return cast(_LearnerAPI, learner)


class LearnerAdapted:
    """A learner adapted to ``T`` tasks: ``score(users (T, N), items (T, N)) -> (T, N)``.

    ``score_kind``: ``"rank"`` for a learner trained to rank (its scores order items; they are
    not ratings), else ``"rating"``."""

    def __init__(
        self, learner: nn.Module, context: Any, n_tasks: int, score_kind: str = "rating"
    ) -> None:
        self._learner, self._context, self._n = learner, context, n_tasks
        self.score_kind = score_kind

    @property
    def n_tasks(self) -> int:
        return self._n

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if users.shape != items.shape or users.dim() != 2 or users.shape[0] != self._n:
            raise ConfigError(
                f"score(users {tuple(users.shape)}, items {tuple(items.shape)}): expected two (T, N) tensors with "
                f"T={self._n} (one row per adapted task)"
            )
        with torch.no_grad():
            return _api(self._learner).score(self._context, users, items)

    def select(self, rows: torch.Tensor) -> LearnerAdapted:
        """The tasks ``rows``: every tensor of the context with a task axis, indexed."""
        return LearnerAdapted(
            self._learner,
            index_tasks(self._context, rows, self._n),
            int(rows.shape[0]),
            self.score_kind,
        )

    @classmethod
    def concat(cls, parts: list[LearnerAdapted]) -> LearnerAdapted:
        """The tasks of ``parts`` (one learner), one after the other."""
        sizes = [p._n for p in parts]
        ctx = cat_tasks([p._context for p in parts], sizes)
        return cls(parts[0]._learner, ctx, sum(sizes), parts[0].score_kind)


class LearnerFitted:
    """A trained learner behind the :class:`~metarec.methods.Fitted` protocol.

    Attributes:
        name: the method name; table: the interaction table; learner: the module.
        settings: the resolved settings dataclass; log: what training did, as a dict (best
            step, history, pretraining, selections); training_log: the episodic loop's
            :class:`~metarec.train.log.TrainingLog`.
        ranking: the :class:`~metarec.config.objective.RankingObjective` of a learner trained to
            rank on ratings (``adapt`` then turns a support into a ranking set first,
            :func:`~metarec.episodes.relevance.rank_support`); ``None`` otherwise.
    """

    def __init__(
        self,
        name: str,
        table: InteractionTable,
        learner: nn.Module,
        settings: Any,
        log: dict[str, Any],
    ) -> None:
        self.name, self.table, self.learner, self.settings, self.log = (
            name,
            table,
            learner,
            settings,
            log,
        )
        self.k: int | None = None  # the scenario's shots (n_support), for protocols that need it
        self.training_log = TrainingLog()
        self.ranking: RankingObjective | None = None
        self._negatives: NegativeCatalogue | None = None

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> LearnerAdapted:
        if support.users.dim() != 2:
            raise ConfigError(
                f"support.users has shape {tuple(support.users.shape)}: adapt takes a batch of tasks, (T, N) tensors; "
                "for one task use support.select(slice(0, 1)) or unsqueeze(0)"
            )
        if steps is not None and steps < 0:
            raise ConfigError(f"steps={steps}: must be >= 0")
        dev = next(iter(self.learner.parameters())).device
        dtype = next(iter(self.learner.parameters())).dtype
        self.learner.eval()
        kind = "rating"
        if self.ranking is not None:
            if self._negatives is None:
                self._negatives = NegativeCatalogue.of(self.table)
            support, kind = rank_support(support, self.ranking, self._negatives), "rank"
        ctx = _api(self.learner).adapt(support.to(dev, dtype), steps, lr)
        return LearnerAdapted(self.learner, ctx, support.n_tasks, kind)

    def config(self) -> dict[str, Any]:
        """``{"method", "settings", "k", "shape"}``: the resolved settings, the scenario's shots
        and the learner's own sizes (``learner.shape()``, for modules whose architecture depends
        on more than the settings and the table); with the table, they rebuild the learner's
        modules (:func:`learner_loader`), and :meth:`load_state_dict` fills them."""
        shape = getattr(self.learner, "shape", None)
        out = {
            "method": self.name,
            "settings": to_dict(self.settings),
            "k": self.k,
            "shape": shape() if callable(shape) else {},
        }
        if self.ranking is not None:
            out["ranking"] = self.ranking.to_json()
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.learner.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        own = self.learner.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise CheckpointError(
                f"{self.name}: state_dict keys differ: missing {missing[:5]}, unexpected {extra[:5]}; load a state "
                f"saved by the same method and settings"
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise CheckpointError(
                    f"{self.name}: state_dict[{k!r}] has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}; the "
                    "settings (dim, hidden, table) differ from the saved run's"
                )
        self.learner.load_state_dict(dict(state))


Build = Callable[[FitData, Any], nn.Module]
Shell = Callable[[InteractionTable, Any, Mapping[str, Any]], nn.Module]
"""``shell(table, settings, shape) -> learner``: an untrained learner of the saved architecture
(``shape`` holds ``"ranking"``, the saved :class:`~metarec.config.objective.RankingObjective`'s
fields, for a learner trained to rank)."""
Objective = Callable[[InteractionTable], "RankingObjective | None"]
"""``objective(table)``: the ranking objective a learner trains on ``table`` (``None``: its own)."""


def learner_loader(cls: type, shell: Shell) -> Callable[..., LearnerFitted]:
    """A :data:`~metarec.methods.FittedLoader` for learners whose settings dataclass is ``cls``:
    ``loader(name, config, table)`` rebuilds the settings from ``config["settings"]`` and the
    modules with ``shell(table, settings, config["shape"])`` (untrained; ``load_state_dict``
    restores every tensor: weights, buffers, memories).

    Raises:
        CheckpointError: the saved settings do not rebuild (a damaged manifest or one from
            another metarec version).
    """

    def load(name: str, config: Mapping[str, Any], table: InteractionTable) -> LearnerFitted:
        try:
            settings: Any = from_dict(cls, dict(config["settings"]), where=f"learners.{name}")
        except (ConfigError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"manifest.json: the saved settings of {name!r} do not rebuild ({e}); the run is damaged or "
                "from another metarec version; re-train it"
            ) from None
        ranking = _saved_objective(config.get("ranking"), name)
        shape = dict(config.get("shape") or {})
        if ranking is not None:
            shape["ranking"] = ranking
        # the shell's random initialisation is overwritten by load_state_dict: keep the global RNG
        with torch.random.fork_rng(devices=[]):
            learner = shell(table, settings, shape)
        learner.eval()
        fitted = LearnerFitted(name, table, learner, settings, {})
        fitted.ranking = ranking
        k = config.get("k")
        fitted.k = None if k is None else int(k)
        return fitted

    return load


def _saved_objective(raw: Any, name: str) -> RankingObjective | None:
    if raw is None:
        return None
    try:
        return RankingObjective(**dict(raw))
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"manifest.json: the saved ranking objective of {name!r} does not rebuild ({e}); the run is damaged "
            "or from another metarec version; re-train it"
        ) from None


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


RANK_METRIC = "ndcg@10_all"
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
