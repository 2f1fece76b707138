"""The built-in methods, registered by name: the engine's meta-learners and baselines,
``melu-ref``, ``popularity`` and every cross-domain method (``emcdr``, ``ptupcdr+adapt``, ...)."""

from __future__ import annotations

from metarec.algorithms import ALGORITHMS
from metarec.config import Scenario
from metarec.methods.base import register_method
from metarec.methods.crossdomain.method import (
    CrossDomainFitted,
    CrossDomainMethod,
    scenario_crossdomain_config,
)
from metarec.methods.crossdomain.methods import METHODS as CROSSDOMAIN_METHODS
from metarec.methods.engine.method import EngineFitted, EngineMethod, engine_scenario
from metarec.methods.popularity import PopularityFitted, make_popularity

__all__ = ["ENGINE_METHODS", "CROSSDOMAIN_NAMES", "BUILTIN_METHODS"]

ENGINE_METHODS = (*ALGORITHMS, "melu-ref")
"""Methods trained by the meta-learning outer loop (:func:`metarec.train.loop.train`)."""
CROSSDOMAIN_NAMES = tuple(m + s for m in CROSSDOMAIN_METHODS for s in ("", "+adapt"))
"""Every cross-domain method name."""
BUILTIN_METHODS = (*ENGINE_METHODS, "popularity", *CROSSDOMAIN_NAMES)


def _engine(name: str):
    def factory(scenario: Scenario) -> EngineMethod:
        return EngineMethod(name, engine_scenario(name, scenario))

    return factory


def _crossdomain(name: str):
    def factory(scenario: Scenario) -> CrossDomainMethod:
        return CrossDomainMethod(name, scenario_crossdomain_config(scenario), scenario)

    return factory


def _register() -> None:
    for name in ENGINE_METHODS:
        register_method(name, _engine(name), loader=EngineFitted.build, replace=True)
    register_method("popularity", make_popularity, loader=PopularityFitted.build, replace=True)
    for name in CROSSDOMAIN_NAMES:
        register_method(name, _crossdomain(name), loader=CrossDomainFitted.build, replace=True)


_register()
