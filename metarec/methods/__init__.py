"""The method interface shared by every method (see :mod:`metarec.methods.base`), the built-in
methods registered by name, and run directories of any method (:mod:`metarec.methods.run_dir`).

The registry is complete on first use (:func:`~metarec.methods.registry.ensure_registered`,
called by :func:`build_method`, :func:`build_fitted`, :func:`method_names` and
:func:`register_method`): the built-in methods and the cold-start learners of
:mod:`metarec.methods.learners` register themselves then, whatever was imported before."""

from metarec.methods.base import (
    Adaptation,
    Adapted,
    FitData,
    Fitted,
    FittedLoader,
    Method,
    MethodFactory,
    MethodInfo,
    MethodTags,
    RunReader,
    RunTrainer,
    adaptation_for,
    build_fitted,
    build_method,
    fitted_place,
    method_info,
    method_names,
    register_method,
    training_log_of,
    unregister_method,
)
from metarec.methods.builtin import BUILTIN_METHODS, CROSSDOMAIN_NAMES, ENGINE_METHODS
from metarec.methods.crossdomain.method import CrossDomainFitted, CrossDomainMethod
from metarec.methods.engine.method import EngineFitted, EngineMethod
from metarec.methods.popularity import PopularityFitted, PopularityMethod
from metarec.methods.registry import ensure_registered
from metarec.methods.run_dir import load_fitted, read_run, save_fitted, train_method

__all__ = [
    "Adaptation",
    "Adapted",
    "FitData",
    "Fitted",
    "FittedLoader",
    "Method",
    "MethodFactory",
    "MethodInfo",
    "MethodTags",
    "RunReader",
    "RunTrainer",
    "adaptation_for",
    "fitted_place",
    "training_log_of",
    "build_fitted",
    "build_method",
    "method_info",
    "method_names",
    "register_method",
    "unregister_method",
    "ensure_registered",
    "BUILTIN_METHODS",
    "CROSSDOMAIN_NAMES",
    "ENGINE_METHODS",
    "CrossDomainFitted",
    "CrossDomainMethod",
    "EngineFitted",
    "EngineMethod",
    "PopularityFitted",
    "PopularityMethod",
    "load_fitted",
    "read_run",
    "save_fitted",
    "train_method",
]
