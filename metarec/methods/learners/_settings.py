"""A learner's settings: the outer loop's budget (:class:`TrainSettings`) and the method's own
dataclass, read from the scenario's ``[learners.<method>]`` table with the engine's defaults
(``[train]``, ``[algorithm]``, ``[protocol]``) underneath; every error names the ``--set`` key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from metarec._errors import ConfigError
from metarec.config import from_dict, to_dict
from metarec.episodes.sampler import SamplerConfig

__all__ = [
    "TrainSettings",
    "parse_settings",
    "scenario_section",
    "scenario_defaults",
    "defaults_and_sampler",
    "only_fields",
    "train_settings",
]

S = TypeVar("S")


@dataclass(frozen=True)
class TrainSettings:
    """The outer loop's budget (shared by every learner).

    Fields:
        steps: outer steps (meta-batches).
        lr: Adam learning rate of the meta-parameters.
        meta_batch: tasks per outer step.
        val_every: steps between meta-val evaluations (model selection keeps the best).
        val_tasks: meta-val tasks per evaluation.
        patience: stop after this many evaluations without improvement (``None``: never).
        grad_clip: clip the gradient norm (``None``: no clipping).
    """

    steps: int = 300
    lr: float = 1e-3
    meta_batch: int = 32
    val_every: int = 50
    val_tasks: int = 256
    patience: int | None = None
    grad_clip: float | None = 10.0

    def __post_init__(self) -> None:
        for name in ("steps",):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 0; e.g. {name}=300")
        for name in ("meta_batch", "val_every", "val_tasks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr}: the outer learning rate must be > 0; e.g. lr=0.001")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience={self.patience}: must be >= 1 or None (never stop early)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip={self.grad_clip}: must be > 0 or None (no clipping)")


def parse_settings(
    cls: type[S],
    method: str,
    settings: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    scenario: Any = None,
) -> S:
    """``cls`` (a frozen settings dataclass) from ``defaults``, overridden by the scenario's
    ``[learners.<method>]`` table (``--set learners.<method>.KEY=VALUE``), overridden by ``settings``.

    Raises:
        ConfigError: an unknown setting (with the close match and the valid ones), a value of
            the wrong type or one the dataclass rejects; the message names the key as
            ``learners.<method>.KEY`` (the ``--set`` key) when a scenario is given, else
            ``<method>.KEY``.
    """
    section = scenario_section(scenario, method)
    merged = {**dict(defaults or {}), **section, **dict(settings)}
    where = f"learners.{method}" if scenario is not None else method
    return from_dict(cls, merged, where=where)


def scenario_section(scenario: Any, method: str) -> dict[str, Any]:
    """The scenario's ``[learners.<method>]`` table (empty without one).

    Raises:
        ConfigError: ``learners.<method>`` is not a table.
    """
    learners = getattr(scenario, "learners", None) or {}
    section = learners.get(method, {})
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"learners.{method}={section!r}: expected a table of {method}'s settings, e.g. "
            f"--set learners.{method}.steps=300"
        )
    return dict(section)


def scenario_defaults(scenario: Any) -> dict[str, Any]:
    """Budget and sizes a scenario implies for :class:`TrainSettings` fields and ``dim``."""
    if scenario is None:
        return {}
    tr, al = scenario.train, scenario.algorithm
    out = {
        "steps": tr.steps,
        "lr": tr.outer_lr,
        "meta_batch": al.meta_batch,
        "val_every": tr.val_every,
        "val_tasks": tr.val_tasks,
        "patience": tr.patience,
        "grad_clip": tr.grad_clip,
        "dim": scenario.model.embedding_dim,
    }
    return out


def defaults_and_sampler(scenario: Any, cls: type) -> tuple[dict[str, Any], SamplerConfig]:
    """``(defaults, sampler)``: the fields of ``cls`` a scenario sets (see :func:`scenario_defaults`)
    and its protocol's task settings (the default :class:`SamplerConfig` without a scenario)."""
    if scenario is None:
        return {}, SamplerConfig()
    from metarec.episodes.build import sampler_config

    return only_fields(cls, scenario_defaults(scenario)), sampler_config(scenario.protocol)


def only_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are fields of the dataclass ``cls``."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def train_settings(settings: Any) -> TrainSettings:
    """The :class:`TrainSettings` fields of a method's settings dataclass."""
    return TrainSettings(**only_fields(TrainSettings, to_dict(settings)))
