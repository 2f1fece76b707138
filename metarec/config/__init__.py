"""Scenario configuration: the schema of ``tasks/*.toml`` (typed, frozen dataclasses).

A scenario is data, not code: one table per section, every key optional except ``name``
(which defaults to the file's stem)::

    name = "movielens-user-cold-start"
    [data]
    source = "movielens-100k"
    path = "${METAREC_DATA}/ml-100k"
    [algorithm]
    name = "maml"
    inner_steps = 5

:func:`load_scenario` reads the file, applies ``--set a.b=value`` overrides, expands
``${METAREC_DATA}`` and builds a :class:`Scenario`, checking every key, type and value on the
way (the engine is :mod:`metarec.config.schema`): an unknown key is an error with a close-match
suggestion; a wrong type or a bad value names the dotted key, the value, the rule and the
``--set`` fix. :func:`save_config` writes the resolved scenario as JSON beside a result, and
:func:`config_hash` names it.

One module per part of the schema: :mod:`~metarec.config.data` (``[data]``),
:mod:`~metarec.config.protocol` (``[protocol]``, ``[metrics]``), :mod:`~metarec.config.algorithm`
(``[model]``, ``[algorithm]``, ``[train]``) and :mod:`~metarec.config.scenario` (``[bench]``, the
whole :class:`Scenario`, its files); every public name is importable from ``metarec.config``.

The ``[algorithm]`` section has the engine's options (declared once, shared with
:class:`~metarec.algorithms.AlgorithmConfig`) plus the evaluation budget:
:meth:`AlgorithmSection.engine_config` produces the engine's config, and every value
an engine algorithm would reject is rejected at load time.

>>> s = scenario_from_dict({"name": "demo", "algorithm": {"inner_steps": 3}})
>>> s.algorithm.inner_steps, s.protocol.n_support
(3, 10)
>>> from_dict(AlgorithmSection, {"inner_stpes": 3})
Traceback (most recent call last):
...
metarec._errors.ConfigError: unknown key 'inner_stpes' (did you mean 'inner_steps'?); valid keys: ...
"""

from __future__ import annotations

from metarec.config.algorithm import AlgorithmSection, ModelConfig, TrainConfig
from metarec.config.data import DataConfig, DataFile, SyntheticConfig, resolve_data_paths
from metarec.config.features import FeatureFile
from metarec.config.protocol import METRIC_NAMES, MetricsConfig, ProtocolConfig
from metarec.config.scenario import (
    BenchConfig,
    Scenario,
    as_scenario,
    load_scenario,
    save_config,
    scenario_from_dict,
)
from metarec.config.schema import (
    config_hash,
    expand_vars,
    from_dict,
    merge,
    parse_overrides,
    to_dict,
)

__all__ = [
    "AlgorithmSection",
    "BenchConfig",
    "DataConfig",
    "DataFile",
    "FeatureFile",
    "METRIC_NAMES",
    "MetricsConfig",
    "ModelConfig",
    "ProtocolConfig",
    "Scenario",
    "SyntheticConfig",
    "TrainConfig",
    "as_scenario",
    "config_hash",
    "expand_vars",
    "from_dict",
    "load_scenario",
    "merge",
    "parse_overrides",
    "resolve_data_paths",
    "save_config",
    "scenario_from_dict",
    "to_dict",
]
