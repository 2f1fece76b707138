"""The method interface shared by every method (see :mod:`metarec.methods.base`), the built-in
methods registered by name, and run directories of any method (:mod:`metarec.methods.runs`)."""

from metarec.methods.base import (
    Adapted,
    FitData,
    Fitted,
    FittedLoader,
    Method,
    MethodFactory,
    build_fitted,
    build_method,
    method_names,
    register_method,
)
from metarec.methods.builtin import BUILTIN_METHODS, CROSSDOMAIN_NAMES, ENGINE_METHODS
from metarec.methods.crossdomain import CrossDomainFitted, CrossDomainMethod
from metarec.methods.engine import EngineFitted, EngineMethod
from metarec.methods.popularity import PopularityFitted, PopularityMethod
from metarec.methods.runs import load_fitted, save_fitted, train_method

__all__ = [
    "Adapted",
    "FitData",
    "Fitted",
    "FittedLoader",
    "Method",
    "MethodFactory",
    "build_fitted",
    "build_method",
    "method_names",
    "register_method",
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
    "save_fitted",
    "train_method",
]

# The cold-start meta-learners register themselves on import (last: they build on the above).
import metarec.learners  # noqa: E402,F401
