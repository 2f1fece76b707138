"""The built-in methods, registered by name: the engine's meta-learners and baselines,
``melu-ref``, ``popularity`` and every cross-domain method (``emcdr``, ``ptupcdr+adapt``, ...)."""

from __future__ import annotations

from metarec.algorithms import ALGORITHMS
from metarec.config import Scenario
from metarec.methods.base import MethodTags, register_method
from metarec.methods.crossdomain.method import (
    CrossDomainFitted,
    CrossDomainMethod,
    scenario_crossdomain_config,
)
from metarec.methods.crossdomain.methods import METHODS as CROSSDOMAIN_METHODS
from metarec.methods.engine.method import (
    EngineFitted,
    EngineMethod,
    engine_scenario,
    read_engine_run,
    train_engine_run,
)
from metarec.methods.popularity import PopularityFitted, make_popularity

__all__ = [
    "ENGINE_METHODS",
    "CROSSDOMAIN_NAMES",
    "BUILTIN_METHODS",
    "ENGINE_TAGS",
    "CROSSDOMAIN_TAGS",
]

ENGINE_METHODS = (*ALGORITHMS, "melu-ref")
"""The MAML family's method names (deprecated as a switch: generic code reads
:func:`~metarec.methods.method_info`'s tags; kept for one release)."""
CROSSDOMAIN_NAMES = tuple(m + s for m in CROSSDOMAIN_METHODS for s in ("", "+adapt"))
"""Every cross-domain method name (deprecated as a switch, as :data:`ENGINE_METHODS`)."""
BUILTIN_METHODS = (*ENGINE_METHODS, "popularity", *CROSSDOMAIN_NAMES)

ENGINE_TAGS = MethodTags(units=("user", "domain"), inner_loop=True, family="engine")
"""The MAML family: any feedback, user or domain tasks, steps / lr meaningful."""
CROSSDOMAIN_TAGS = MethodTags(source_history=True, inner_loop=True, family="crossdomain")
"""Cross-domain methods: a cold target user's source-domain history; user-vector steps."""


def _engine(name: str):
    def factory(scenario: Scenario, **settings) -> EngineMethod:
        return EngineMethod(name, engine_scenario(name, scenario), **settings)

    return factory


def _engine_trainer(name: str):
    def trainer(scenario: Scenario, out, **kw):
        return train_engine_run(scenario, out, name=name, **kw)

    return trainer


def _crossdomain(name: str):
    def factory(scenario: Scenario) -> CrossDomainMethod:
        return CrossDomainMethod(name, scenario_crossdomain_config(scenario), scenario)

    return factory


def _register() -> None:
    for name in ENGINE_METHODS:
        register_method(
            name,
            _engine(name),
            loader=EngineFitted.build,
            tags=ENGINE_TAGS,
            reader=read_engine_run,
            trainer=_engine_trainer(name),
            replace=True,
        )
    register_method(
        "popularity",
        make_popularity,
        loader=PopularityFitted.build,
        tags=MethodTags(family="baseline"),
        replace=True,
    )
    for name in CROSSDOMAIN_NAMES:
        register_method(
            name,
            _crossdomain(name),
            loader=CrossDomainFitted.build,
            tags=CROSSDOMAIN_TAGS,
            replace=True,
        )


_register()
