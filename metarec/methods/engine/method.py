"""The gradient-based meta-learners (MAML family) and their same-model baselines as methods.

Names: every :data:`~metarec.algorithms.ALGORITHMS` entry (``maml``, ``fomaml``, ``reptile``,
``metasgd``, ``anil``, ``global``, ``finetune``) and ``melu-ref`` (the MeLU reference
configuration, :data:`metarec.bench.variants.VARIANTS`). :class:`EngineMethod` trains with the
one outer loop (:func:`metarec.train.loop.train`); :class:`EngineFitted` holds the model, the
meta-learned parameters and algorithm state and the :class:`AlgorithmConfig`; ``adapt`` is the
engine's :func:`~metarec.algorithms.adapt_batch` and ``score`` its
:func:`~metarec.algorithms.predict_batch`, so training, the benchmark and serving run the same
inner loop.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from metarec._errors import CheckpointError, ConfigError
from metarec.algorithms import (
    AlgorithmConfig,
    adapt_batch,
    adapt_patterns,
    init_algorithm_state,
    predict_batch,
)
from metarec.config import Scenario, merge, scenario_from_dict, to_dict
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.build import sampler_config
from metarec.episodes.relevance import NegativeCatalogue
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import MetaSplits
from metarec.methods.base import Adaptation, FitData
from metarec.methods.engine.run_files import RunParts, load_run_parts, read_engine_parts
from metarec.metrics.evaluate import select_eval_lr
from metarec.models import build_model
from metarec.models.base import split_params
from metarec.models.graph.training import restore_graph
from metarec.runs.guard import check_finite_weights
from metarec.runs.reader import OpenRun
from metarec.train.log import TrainingLog
from metarec.train.loggers import Logger
from metarec.train.loop import TrainResult, train
from metarec.train.ranking import RANK_METRIC, adapt_engine, evaluate_engine_ranking

__all__ = [
    "EngineMethod",
    "EngineFitted",
    "EngineAdapted",
    "MELU_REF",
    "engine_scenario",
    "load_engine",
    "read_engine_run",
    "train_engine_run",
]

MELU_REF: dict[str, Any] = {
    "model": {
        "name": "melu",
        "embedding_dim": 32,
        "hidden": [64, 64],
        "adapt": None,
        "dropout": 0.0,
    },
    "algorithm": {
        "name": "maml",
        "first_order": True,
        "inner_steps": 1,
        "inner_lr": 5e-6,
        "meta_batch": 32,
        "per_step_lr": False,
        "multi_step_loss": False,
        "eval_steps": 5,
        "eval_lr": None,
    },
    # the authors' schedule: 30 epochs of 32-task batches, no early stopping (1,816 ml1m-melu
    # meta-train users / 32 = 57 batches per epoch, so 1,700 steps); the same in --quick, since
    # at a 5e-5 outer rate a shorter budget leaves the model at its initial constant prediction
    "train": {"outer_lr": 5e-5, "steps": 1700, "patience": None},
}
"""``melu-ref``: the MeLU reference configuration as scenario overrides (see
:mod:`metarec.bench.variants` for its provenance)."""


def engine_scenario(name: str, scenario: Scenario) -> Scenario:
    """The scenario that trains engine method ``name``: ``melu-ref`` applies :data:`MELU_REF`;
    another name replaces ``algorithm.name`` (the rest of the scenario is kept)."""
    if name == "melu-ref":
        return scenario_from_dict(merge(to_dict(scenario), MELU_REF))
    if scenario.algorithm.name == name:
        return scenario
    return replace(scenario, algorithm=replace(scenario.algorithm, name=name))


@dataclass
class EngineAdapted:
    """Per-task fast weights ``{name: (T, *shape)}`` over the meta-learned slow weights.

    ``score_kind``: ``"rank"`` for a run trained to rank (its scores order items; they are not
    ratings), else ``"rating"``."""

    model: nn.Module
    params: dict[str, torch.Tensor]
    fast: dict[str, torch.Tensor]
    score_kind: str = "rating"

    @property
    def n_tasks(self) -> int:
        return int(next(iter(self.fast.values())).shape[0])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N), (T, N) -> (T, N)`` predictions (unclipped ratings, or logits)."""
        with torch.no_grad():
            if users.shape[0] == 1:  # one task (serving one user): the same forward, no vmap
                slow = {k: v for k, v in self.params.items() if k not in self.fast}
                one = {k: v[0] for k, v in self.fast.items()}
                return functional_call(self.model, (one, slow), (users[0], items[0]))[None]
            return predict_batch(self.model, self.params, self.fast, users, items)

    def select(self, rows: torch.Tensor) -> EngineAdapted:
        """The tasks ``rows`` (``int64 (R,)``)."""
        idx = rows.to(next(iter(self.fast.values())).device)
        fast = {k: v[idx] for k, v in self.fast.items()}
        return EngineAdapted(self.model, self.params, fast, self.score_kind)

    @classmethod
    def concat(cls, parts: list[EngineAdapted]) -> EngineAdapted:
        """The tasks of ``parts`` (over the same model), one after the other."""
        first = parts[0]
        fast = {k: torch.cat([p.fast[k] for p in parts]) for k in first.fast}
        return cls(first.model, first.params, fast, first.score_kind)


@dataclass
class EngineFitted:
    """A meta-trained model: ``model`` (eval mode), ``params``, ``state`` (learned rates),
    ``algo``, ``table`` and the default adaptation budget ``steps`` / ``lr``.

    ``model_config`` (``{"name", "kwargs", "adapt"}``) rebuilds the model with
    :func:`metarec.models.build_model`.
    """

    name: str
    table: InteractionTable
    model: nn.Module
    params: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    algo: AlgorithmConfig
    model_config: dict[str, Any]
    steps: int | None = None
    lr: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    training_log: TrainingLog = field(default_factory=TrainingLog)

    _negatives: NegativeCatalogue | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.steps is None:  # the algorithm's own default (``global``: 0)
            self.steps = self.algo.default_steps

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> EngineAdapted:
        """Fast weights for each task (row) of ``support`` by the engine's inner loop (a run
        trained to rank first turns the support into a ranking set:
        :func:`metarec.train.ranking.adapt_engine`)."""
        n = self.steps if steps is None else steps
        rate = self.lr if lr is None else lr
        if self.algo.ranking is None:
            fast = adapt_batch(
                self.algo, self.model, self.params, support, n, rate, state=self.state
            )
            return EngineAdapted(self.model, self.params, fast)
        if self._negatives is None:
            self._negatives = NegativeCatalogue.of(self.table)
        fast = adapt_engine(
            self.algo,
            self.model,
            self.params,
            support,
            n,
            rate,
            state=self.state,
            catalogue=self._negatives,
        )
        return EngineAdapted(self.model, self.params, fast, "rank")

    def adaptation(self, sampler: SamplerConfig) -> Adaptation:
        """The evaluation budget (every shots alike): ``steps`` inner steps at ``lr`` (the run's
        ``eval_steps`` / ``eval_lr``, the rate chosen on meta-val, or the learned rates)."""
        if self.steps == 0:
            label: float | str | None = None
        elif self.algo.meta_learned_lrs:
            label = "learned"
        else:
            label = self.lr if self.lr is not None else self.algo.inner_lr
        report: dict[str, Any] = {"eval_steps": self.steps, "eval_lr": label}
        if self.info.get("eval_lr_meta_val"):
            report["eval_lr_meta_val"] = {
                str(k): v for k, v in self.info["eval_lr_meta_val"].items()
            }
        return Adaptation(self.steps, self.lr, report)

    def adapted_state(self, adapted: Any) -> dict[str, Any] | None:
        """``{"fast": {name: (T + 1, *shape)}}``: the tasks' fast weights and, last, the
        meta-learned initialisation (the adapted directory's format); ``None`` for an object
        that is not this family's."""
        if not isinstance(adapted, EngineAdapted):
            return None
        init = self._init_fast()
        return {
            "fast": {
                k: torch.cat([v.detach(), init[k].detach().unsqueeze(0)]).cpu()
                for k, v in adapted.fast.items()
            }
        }

    def restore_adapted(self, state: Mapping[str, Any], where: str) -> EngineAdapted | None:
        """The fast weights of :meth:`adapted_state` back (shapes and finiteness checked).

        Raises:
            CheckpointError: a fast weight is missing, has the wrong shape or is not finite.
        """
        if "fast" not in state:
            return None
        fast = dict(state["fast"])
        for k, v in self._init_fast().items():
            got = fast.get(k)
            if got is None or tuple(got.shape[1:]) != tuple(v.shape):
                shape = None if got is None else tuple(got.shape)
                raise CheckpointError(
                    f"{where!r}: fast weight {k!r} has shape {shape}, the model needs (tasks, *{tuple(v.shape)}); "
                    "the adapted weights do not belong to this run; re-run 'metarec adapt'"
                )
        check_finite_weights(fast, where)  # hook (metarec.runs.guard)
        dev = next(iter(self.params.values())).device
        kind = "rating" if self.algo.ranking is None else "rank"
        return EngineAdapted(
            self.model, self.params, {k: v[:-1].to(dev) for k, v in fast.items()}, kind
        )

    def _init_fast(self) -> dict[str, torch.Tensor]:
        fast, _ = split_params(self.model, adapt_patterns(self.algo, self.model), self.params)
        return fast

    def config(self) -> dict[str, Any]:
        algo = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.algo.__dict__.items()}
        return {"model": self.model_config, "algorithm": algo, "steps": self.steps, "lr": self.lr}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``model.<name>`` (parameters and buffers, e.g. ``known_users``) and ``state.<name>``."""
        out = {f"model.{k}": v.detach() for k, v in self.model.state_dict().items()}
        for k, p in self.params.items():
            out[f"model.{k}"] = p.detach()
        out.update({f"state.{k}": v.detach() for k, v in self.state.items()})
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        model_sd = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        restore_graph(self.model, model_sd, "state_dict")  # hook (metarec.models.graph)
        own = self.model.state_dict()
        for k, v in own.items():
            got = model_sd.get(k)
            if got is None or tuple(got.shape) != tuple(v.shape):
                shape = None if got is None else tuple(got.shape)
                raise CheckpointError(
                    f"state_dict: model tensor {k!r} has shape {shape}, the model needs {tuple(v.shape)}; "
                    "the weights belong to another model configuration; re-train or restore the manifest"
                )
        extra = [k for k in model_sd if k not in own]
        if extra:
            raise CheckpointError(
                f"state_dict: {extra[0]!r} is not a tensor of the model; the weights belong to another model"
            )
        self.model.load_state_dict(model_sd)
        for k, v in self.state.items():
            got = state.get(f"state.{k}")
            if got is None or tuple(got.shape) != tuple(v.shape):
                raise CheckpointError(
                    f"state_dict: algorithm state {k!r} is missing or has the wrong shape; "
                    "the weights do not match the algorithm in the manifest; re-train"
                )
            self.state[k] = got.to(v.device, v.dtype)
        self.params = dict(self.model.named_parameters())

    @classmethod
    def build(cls, name: str, config: Mapping[str, Any], table: InteractionTable) -> EngineFitted:
        """An untrained shell of ``config`` (as :meth:`config` wrote it); fill it with
        :meth:`load_state_dict`."""
        m, a = dict(config["model"]), dict(config["algorithm"])
        kwargs = dict(m.get("kwargs") or {})
        if isinstance(kwargs.get("hidden"), list):
            kwargs["hidden"] = tuple(kwargs["hidden"])
        patterns = m.get("adapt")
        model = build_model(m["name"], table, adapt=tuple(patterns) if patterns else None, **kwargs)
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in a.items()}
        algo = AlgorithmConfig(**kw)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        params: dict[str, torch.Tensor] = dict(model.named_parameters())
        fast, _ = split_params(model, adapt_patterns(algo, model), params)
        state = {k: v.detach() for k, v in init_algorithm_state(algo, fast).items()}
        return cls(
            name, table, model, params, state, algo, m, config.get("steps"), config.get("lr")
        )


class EngineMethod:
    """Settings of one engine method: the resolved scenario (its ``[model]``, ``[algorithm]`` and
    ``[train]`` sections). :meth:`fit` runs the outer loop into ``data.out`` (a temporary folder
    when ``None``) and returns the meta-val-selected weights.

    Args:
        name: the method name; scenario: the resolved scenario.
        eval_lrs: when the scenario sets no ``algorithm.eval_lr`` (and the rates are not
            learned), choose the evaluation rate among these on meta-val after training (the
            benchmark's ``finetune``).
    """

    def __init__(
        self, name: str, scenario: Scenario, *, eval_lrs: Sequence[float] | None = None
    ) -> None:
        self.name, self.scenario = name, scenario
        self.eval_lrs = None if eval_lrs is None else tuple(float(x) for x in eval_lrs)

    def fit(self, data: FitData) -> EngineFitted:
        sc = self.scenario
        sc = replace(
            sc,
            train=replace(sc.train, seed=data.seed, progress=data.progress and sc.train.progress),
        )
        if data.out is None:
            with tempfile.TemporaryDirectory() as tmp:
                res = train(
                    sc, Path(tmp) / "run", table=data.table, splits=data.splits, evaluate_test=False
                )
                fitted = load_engine(Path(tmp) / "run", name=self.name, device=data.device)
        else:
            res = train(
                sc,
                data.out,
                table=data.table,
                splits=data.splits,
                evaluate_test=False,
                method=self.name,  # the manifest names the method, written under the run's lock
            )
            fitted = load_engine(data.out, name=self.name, device=data.device)
        fitted.info["train_result"] = res
        if res.training_log is not None:
            fitted.training_log = res.training_log
        choose = self.eval_lrs and sc.algorithm.eval_lr is None and not fitted.algo.meta_learned_lrs
        if choose and fitted.algo.ranking is not None:
            fitted.lr, fitted.info["eval_lr_meta_val"] = _select_rank_lr(
                fitted, data, sc, self.eval_lrs
            )
        elif choose and self.eval_lrs is not None:
            fitted.lr, fitted.info["eval_lr_meta_val"] = select_eval_lr(
                fitted.model,
                fitted.params,
                fitted.algo,
                data.table,
                data.splits.pools[data.splits.val],
                sampler_config(sc.protocol),
                lrs=self.eval_lrs,
                steps=sc.algorithm.eval_steps,
                max_tasks=sc.train.val_tasks,
                k=sc.metrics.k,
            )
        return fitted


def _select_rank_lr(
    fitted: EngineFitted, data: FitData, sc: Scenario, lrs: Sequence[float] | None
) -> tuple[float, dict[float, float]]:
    """The evaluation rate of a run trained to rank: the best of ``lrs`` on meta-val
    ``ndcg@10_all`` (ties: the first)."""
    scores: dict[float, float] = {}
    for lr in lrs or ():
        val = evaluate_engine_ranking(
            fitted.model,
            fitted.params,
            fitted.algo,
            data.table,
            data.splits,
            data.splits.val,
            sampler_config(sc.protocol),
            state=fitted.state,
            relevance=sc.protocol.relevance,
            max_tasks=sc.train.val_tasks,
            steps=sc.algorithm.eval_steps,
            lr=lr,
        )
        scores[lr] = float(val[RANK_METRIC])
    best = max(scores, key=lambda k: scores[k] if scores[k] == scores[k] else -1.0)
    return best, scores


def load_engine(
    run_dir: str | Path,
    *,
    name: str | None = None,
    which: str = "best",
    device: str | torch.device = "cpu",
) -> EngineFitted:
    """The :class:`EngineFitted` of a run directory written by :func:`metarec.train.loop.train`."""
    parts = load_run_parts(run_dir, which=which, device=device)
    if parts.algo is None or parts.model is None:
        raise ConfigError(
            f"run_dir={str(run_dir)!r}: not a meta-learning run; load it with metarec.load_fitted"
        )
    fitted = _from_parts(parts)
    if name is not None:
        fitted.name = name
    return fitted


def read_engine_run(
    opened: OpenRun, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[EngineFitted, int]:
    """The family's :data:`~metarec.methods.base.RunReader`: its own run format (``params`` /
    ``buffers`` / ``state`` checkpoints, the model and algorithm in the manifest) as
    ``(fitted, checkpoint step)``."""
    parts = read_engine_parts(opened, which=which, device=device)
    if parts.algo is None or parts.model is None:
        raise CheckpointError(
            f"{str(opened.run_dir / 'manifest.json')!r}: method {parts.method_name!r} is a meta-learning method "
            "but the run has no model section; the manifest is damaged; restore it or re-train"
        )
    return _from_parts(parts), parts.step


def _from_parts(parts: RunParts) -> EngineFitted:
    assert parts.model is not None and parts.algo is not None
    fitted = EngineFitted(
        parts.method_name,
        parts.table,
        parts.model,
        parts.params,
        parts.state,
        parts.algo,
        parts.model_config,
        parts.steps,
        parts.lr,
        {"step": parts.step},
    )
    fitted.training_log = TrainingLog.read(parts.run_dir)
    return fitted


def train_engine_run(
    scenario: Scenario,
    out: str | Path,
    *,
    name: str,
    resume: bool = False,
    overwrite: bool = False,
    table: InteractionTable | None = None,
    splits: MetaSplits | None = None,
    evaluate_test: bool = True,
    loggers: Sequence[Logger] = (),
) -> TrainResult:
    """The family's :data:`~metarec.methods.base.RunTrainer`: method ``name`` meta-trained by
    the outer loop straight into run directory ``out`` (resumable; ``metrics.jsonl``,
    checkpoints, test metrics; ``loggers`` get every row as it is written)."""
    return train(
        engine_scenario(name, scenario),
        out,
        resume=resume,
        overwrite=overwrite,
        table=table,
        splits=splits,
        evaluate_test=evaluate_test,
        loggers=loggers,
        method=name,  # melu-ref: the manifest names the method, written under the run's lock
    )
