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
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data and tasks
    "InteractionTable": "metarec.data.table",
    "Columns": "metarec.data.table",
    "FeatureSpec": "metarec.data.features",
    "FeatureFile": "metarec.config.features",
    "IdEncoder": "metarec.data.encoding",
    "TaskSampler": "metarec.episodes.sampler",
    "SamplerConfig": "metarec.episodes.sampler",
    "EpisodeSet": "metarec.episodes.batch",
    "EpisodeBatch": "metarec.episodes.batch",
    "MetaSplits": "metarec.episodes.splits",
    "TaskDataset": "metarec.interop.torch_data",
    "load_table": "metarec.episodes.build",
    "build_splits": "metarec.episodes.build",
    "sampler_config": "metarec.episodes.build",
    # models
    "RecModel": "metarec.models.base",
    "build_model": "metarec.models.factory",
    "split_params": "metarec.models.base",
    # the engine
    "AlgorithmConfig": "metarec.config.algorithm",
    "init_algorithm_state": "metarec.algorithms.state",
    "meta_loss_and_grads": "metarec.algorithms.meta",
    "adapt_batch": "metarec.algorithms.meta",
    "predict_batch": "metarec.algorithms.meta",
    "adapt_patterns": "metarec.algorithms.meta",
    "train": "metarec.train.loop",
    "TrainResult": "metarec.train.loop",
    "evaluate_pool": "metarec.metrics.evaluate",
    "evaluate_fitted": "metarec.metrics.evaluate",
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
    "method_info": "metarec.methods.base",
    "MethodTags": "metarec.methods.base",
    "train_method": "metarec.methods.run_dir",
    "load_fitted": "metarec.methods.run_dir",
    "save_fitted": "metarec.methods.run_dir",
    # serving
    "load_run": "metarec.recommend.load",
    "load_adapted": "metarec.recommend.load",
    "open_recommender": "metarec.recommend.load",
    "read_support": "metarec.recommend.load",
    "RunModel": "metarec.recommend.run_model",
    "Recommender": "metarec.recommend.recommender",
    "MetaModel": "metarec.recommend.load",
    "MethodModel": "metarec.recommend.load",
    "AdaptedRecommender": "metarec.recommend.recommender",
    "MethodRecommender": "metarec.recommend.recommender",
    "convert_run": "metarec.methods.engine.run_files",
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
    "FeatureFile",
    "FeatureSpec",
    "FitData",
    "Fitted",
    "IdEncoder",
    "InteractionTable",
    "MetaModel",
    "MetaSplits",
    "MetarecError",
    "Method",
    "MethodModel",
    "MethodTags",
    "MethodRecommender",
    "RecModel",
    "Recommender",
    "RunModel",
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
    "method_info",
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
    "method_info",
    "MethodTags",
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
    if name == "train":  # the stage package, callable as the outer loop (metarec/train/__init__.py)
        return importlib.import_module("metarec.train")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


# ---------------------------------------------------------------------------------------------
# Moved modules (0.2): the old import paths keep working for one release, with one
# DeprecationWarning each. A path maps to its new module; a moved package maps by prefix
# (``metarec.learners.r2d2`` -> ``metarec.methods.learners.r2d2``).
_MOVED: dict[str, str] = {
    "metarec.adapt": "metarec.recommend.load",
    "metarec.algorithms.config": "metarec.algorithms.state",
    "metarec.averaging": "metarec.metrics.averaging",
    "metarec.checkpoint": "metarec.runs.checkpoint",
    "metarec.checksums": "metarec._io.checksums",
    "metarec.crossdomain": "metarec.methods.crossdomain",
    "metarec.crossdomain.config": "metarec.methods.crossdomain.settings",
    "metarec.crossdomain.synthetic": "metarec.data.synthetic_crossdomain",
    "metarec.degenerate": "metarec.metrics.degenerate",
    "metarec.demo": "metarec.cli.demo",
    "metarec.distributed": "metarec.train.distributed",
    "metarec.evaluate": "metarec.metrics.evaluate",
    "metarec.federated.config": "metarec.config.federated",
    "metarec.fingerprint": "metarec.runs.fingerprint",
    "metarec.graph": "metarec.models.graph",
    "metarec.graph.crossdomain": "metarec.methods.crossdomain.graph",
    "metarec.graph.models": "metarec.models.graph.lightgcn",
    "metarec.guard": "metarec.runs.guard",
    "metarec.learners": "metarec.methods.learners",
    "metarec.learners.synthetic": "metarec.data.synthetic_personal",
    "metarec.limits": "metarec.config.limits",
    "metarec.loggers": "metarec.train.loggers",
    "metarec.method_model": "metarec.recommend.method_model",
    "metarec.methods.runs": "metarec.methods.run_dir",
    "metarec.ranking": "metarec.metrics.topk",
    "metarec.recommender": "metarec.recommend.recommender",
    "metarec.run_model": "metarec.recommend.run_model",
    "metarec.rundir": "metarec.train.session",
    "metarec.runlock": "metarec._io.lock",
    "metarec.schema": "metarec.config.schema",
    "metarec.serve.engine": "metarec.serve.answers",
    "metarec.support": "metarec.recommend.support",
    "metarec.train_files": "metarec.train.files",
    "metarec.train_setup": "metarec.train.setup",
}


def _moved_target(name: str) -> str | None:
    """The new module of an old import path, or ``None``."""
    if name in _MOVED:
        return _MOVED[name]
    head, _, tail = name.rpartition(".")
    while head:
        if head in _MOVED:
            return _MOVED[head] + "." + name[len(head) + 1 :]
        head, _, _ = head.rpartition(".")
    return None


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an old import path as its new module (the same module object), warning once.

    It sits first on ``sys.meta_path``, so a submodule of a moved package is never loaded a second
    time under its old name; the new module's own ``__spec__``/``__loader__`` are kept.
    """

    _saved: dict[int, tuple[Any, ...]] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        new = _moved_target(fullname)
        if new is None:
            return None
        found = importlib.util.find_spec(new)
        if found is None:
            return None
        is_pkg = found.submodule_search_locations is not None
        return importlib.util.spec_from_loader(fullname, self, is_package=is_pkg)

    def create_module(self, spec: Any) -> Any:
        import warnings

        new = _moved_target(spec.name)
        assert new is not None
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old path goes in 0.3)",
            DeprecationWarning,
            stacklevel=3,
        )
        module = importlib.import_module(new)
        self._saved[id(module)] = (module.__spec__, module.__loader__, module.__package__)
        return module

    def exec_module(self, module: Any) -> None:
        spec, loader, package = self._saved.pop(id(module))
        module.__spec__, module.__loader__, module.__package__ = spec, loader, package


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedFinder())

if TYPE_CHECKING:  # the same names for type checkers and IDEs
    from metarec._errors import CheckpointError, ConfigError, DataError, MetarecError
    from metarec.algorithms.meta import (
        adapt_batch,
        adapt_patterns,
        meta_loss_and_grads,
        predict_batch,
    )
    from metarec.algorithms.state import init_algorithm_state
    from metarec.bench.run import run_bench
    from metarec.config import Scenario, load_scenario
    from metarec.config.algorithm import AlgorithmConfig
    from metarec.config.features import FeatureFile
    from metarec.data.encoding import IdEncoder
    from metarec.data.features import FeatureSpec
    from metarec.data.load import load_table
    from metarec.data.table import Columns, InteractionTable
    from metarec.episodes.batch import EpisodeBatch, EpisodeSet
    from metarec.episodes.build import build_splits, sampler_config
    from metarec.episodes.sampler import SamplerConfig, TaskSampler
    from metarec.episodes.splits import MetaSplits
    from metarec.interop.torch_data import TaskDataset
    from metarec.methods.base import (
        Adapted,
        FitData,
        Fitted,
        Method,
        MethodTags,
        build_method,
        method_info,
        method_names,
        register_method,
    )
    from metarec.methods.engine.run_files import convert_run
    from metarec.methods.run_dir import load_fitted, save_fitted, train_method
    from metarec.metrics.evaluate import evaluate_fitted, evaluate_pool
    from metarec.models.base import RecModel, split_params
    from metarec.models.factory import build_model
    from metarec.recommend.load import (
        MetaModel,
        MethodModel,
        load_adapted,
        load_run,
        open_recommender,
        read_support,
    )
    from metarec.recommend.recommender import AdaptedRecommender, MethodRecommender, Recommender
    from metarec.recommend.run_model import RunModel
    from metarec.train.loop import TrainResult, train
