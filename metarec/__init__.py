"""metarec: few-shot domain adaptation for recommender systems by meta-learning.

The short-import style::

    import metarec as mr

    sc = mr.load_scenario("tasks/synthetic-cold-start.toml", ["train.steps=100"])
    mr.train_method(sc, "runs/maml")                         # any method: sc.algorithm.name
    rec = mr.load_run("runs/maml").adapt([("new-user", 17, 5.0)])
    rec.recommend("new-user", k=10)

The engine (pure functions over parameter dicts): ``mr.AlgorithmConfig``,
``mr.meta_loss_and_grads``, ``mr.adapt_batch``, ``mr.predict_batch``; data and tasks:
``mr.InteractionTable``, ``mr.Columns``, ``mr.TaskSampler``, ``mr.SamplerConfig``,
``mr.TaskDataset``; methods: ``mr.FitData``, ``mr.build_method``, ``mr.register_method``.
Names are imported on first use, so ``import metarec`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data and tasks
    "InteractionTable": "metarec.data.table",
    "Columns": "metarec.data.table",
    "IdEncoder": "metarec.data.encoding",
    "TaskSampler": "metarec.episodes.sampler",
    "SamplerConfig": "metarec.episodes.sampler",
    "EpisodeSet": "metarec.episodes.batch",
    "EpisodeBatch": "metarec.episodes.batch",
    "MetaSplits": "metarec.episodes.splits",
    "TaskDataset": "metarec.interop.torch_data",
    "load_table": "metarec.scenario",
    "build_splits": "metarec.scenario",
    "sampler_config": "metarec.scenario",
    # models
    "RecModel": "metarec.models.base",
    "build_model": "metarec.models.factory",
    "split_params": "metarec.models.base",
    # the engine
    "AlgorithmConfig": "metarec.algorithms.config",
    "init_algorithm_state": "metarec.algorithms.config",
    "meta_loss_and_grads": "metarec.algorithms.meta",
    "adapt_batch": "metarec.algorithms.meta",
    "predict_batch": "metarec.algorithms.meta",
    "adapt_patterns": "metarec.algorithms.meta",
    "train": "metarec.train",
    "TrainResult": "metarec.train",
    "evaluate_pool": "metarec.evaluate",
    "evaluate_fitted": "metarec.evaluate",
    # configuration
    "Scenario": "metarec.config",
    "load_scenario": "metarec.config",
    # methods
    "FitData": "metarec.methods.base",
    "Method": "metarec.methods.base",
    "Fitted": "metarec.methods.base",
    "Adapted": "metarec.methods.base",
    "build_method": "metarec.methods.base",
    "register_method": "metarec.methods.base",
    "method_names": "metarec.methods.base",
    "train_method": "metarec.methods.runs",
    "load_fitted": "metarec.methods.runs",
    "save_fitted": "metarec.methods.runs",
    # serving
    "load_run": "metarec.adapt",
    "load_adapted": "metarec.adapt",
    "open_recommender": "metarec.adapt",
    "read_support": "metarec.adapt",
    "MetaModel": "metarec.adapt",
    "MethodModel": "metarec.adapt",
    "AdaptedRecommender": "metarec.recommender",
    "MethodRecommender": "metarec.recommender",
    "convert_run": "metarec.runs",
    # benchmark
    "run_bench": "metarec.bench.run",
    # errors
    "MetarecError": "metarec._errors",
    "ConfigError": "metarec._errors",
    "DataError": "metarec._errors",
    "CheckpointError": "metarec._errors",
}

__all__ = [
    "Adapted",
    "AdaptedRecommender",
    "AlgorithmConfig",
    "CheckpointError",
    "Columns",
    "ConfigError",
    "DataError",
    "EpisodeBatch",
    "EpisodeSet",
    "FitData",
    "Fitted",
    "IdEncoder",
    "InteractionTable",
    "MetaModel",
    "MetaSplits",
    "MetarecError",
    "Method",
    "MethodModel",
    "MethodRecommender",
    "RecModel",
    "SamplerConfig",
    "Scenario",
    "TaskDataset",
    "TaskSampler",
    "TrainResult",
    "adapt_batch",
    "adapt_patterns",
    "build_method",
    "build_model",
    "build_splits",
    "convert_run",
    "evaluate_fitted",
    "evaluate_pool",
    "init_algorithm_state",
    "load_adapted",
    "load_fitted",
    "load_run",
    "load_scenario",
    "load_table",
    "meta_loss_and_grads",
    "method_names",
    "open_recommender",
    "predict_batch",
    "read_support",
    "register_method",
    "run_bench",
    "sampler_config",
    "save_fitted",
    "split_params",
    "train",
    "train_method",
]

# methods register themselves on import of metarec.methods (build_method, register_method)
_NEEDS_REGISTRY = {
    "build_method",
    "register_method",
    "method_names",
    "Method",
    "Fitted",
    "Adapted",
    "FitData",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metarec' has no attribute {name!r}")
    if name in _NEEDS_REGISTRY:
        importlib.import_module("metarec.methods")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # the same names for type checkers and IDEs
    from metarec._errors import CheckpointError, ConfigError, DataError, MetarecError
    from metarec.adapt import (
        MetaModel,
        MethodModel,
        load_adapted,
        load_run,
        open_recommender,
        read_support,
    )
    from metarec.algorithms.config import AlgorithmConfig, init_algorithm_state
    from metarec.algorithms.meta import (
        adapt_batch,
        adapt_patterns,
        meta_loss_and_grads,
        predict_batch,
    )
    from metarec.bench.run import run_bench
    from metarec.config import Scenario, load_scenario
    from metarec.data.encoding import IdEncoder
    from metarec.data.table import Columns, InteractionTable
    from metarec.episodes.batch import EpisodeBatch, EpisodeSet
    from metarec.episodes.sampler import SamplerConfig, TaskSampler
    from metarec.episodes.splits import MetaSplits
    from metarec.evaluate import evaluate_fitted, evaluate_pool
    from metarec.interop.torch_data import TaskDataset
    from metarec.methods.base import (
        Adapted,
        FitData,
        Fitted,
        Method,
        build_method,
        method_names,
        register_method,
    )
    from metarec.methods.runs import load_fitted, save_fitted, train_method
    from metarec.models.base import RecModel, split_params
    from metarec.models.factory import build_model
    from metarec.recommender import AdaptedRecommender, MethodRecommender
    from metarec.runs import convert_run
    from metarec.scenario import build_splits, load_table, sampler_config
    from metarec.train import TrainResult, train
