"""The whole scenario (:class:`Scenario`, with the ``[bench]`` section :class:`BenchConfig`) and
its files: :func:`load_scenario` reads a ``.toml`` (or saved ``.json``) scenario,
:func:`save_config` writes the resolved one."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from metarec._errors import ConfigError
from metarec.config._checks import _check_at_least
from metarec.config.algorithm import AlgorithmSection, ModelConfig, TrainConfig
from metarec.config.data import DataConfig, resolve_data_paths
from metarec.config.federated import FederatedConfig
from metarec.config.objective import RANK_LOSSES
from metarec.config.protocol import MetricsConfig, ProtocolConfig
from metarec.config.schema import (
    coerce_tables,
    expand_vars,
    from_dict,
    merge,
    parse_overrides,
    read_config_file,
    to_dict,
)
from metarec.config.warmup import WarmupConfig

__all__ = [
    "BenchConfig",
    "Scenario",
    "as_scenario",
    "check_loss_fits",
    "load_scenario",
    "save_config",
    "scenario_from_dict",
]


@dataclass(frozen=True)
class BenchConfig:
    """The benchmark grid run by ``metarec bench``.

    Fields:
        algorithms: algorithm names to compare.
        seeds: seeds per (algorithm, shots) cell.
        shots: support sizes (``protocol.n_support``) to evaluate.
        quick_steps: outer steps per run in a quick run (``None`` = ``train.steps``).
    """

    algorithms: tuple[str, ...] = ("global", "finetune", "maml", "fomaml", "reptile")
    seeds: int = 3
    shots: tuple[int, ...] = (1, 3, 5, 10)
    quick_steps: int | None = None

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "seeds", "quick_steps")
        if any(s < 1 for s in self.shots):
            raise ConfigError(
                f"shots={list(self.shots)}: each support size must be >= 1; e.g. shots = [1, 5, 10]"
            )


@dataclass(frozen=True)
class Scenario:
    """One experiment: data, protocol, metrics, model, algorithm, training and benchmark.

    Every section may be given as its dataclass or as a plain table (``dict``) of the keys a
    scenario file has, checked the same way (unknown keys are an error with a close match),
    so a script needs no TOML file::

        Scenario(
            name="my-data",
            data={"source": "csv", "path": "ratings.csv"},
            protocol={"n_support": 5, "max_interactions": "none"},
            algorithm={"name": "maml"},
        )

    Fields:
        name: the scenario's name (a file's stem when the file sets none; ``"scenario"`` when
            built in Python without one).
        description: free text.
        data, protocol, metrics, model, algorithm, train, bench: the sections, each with
            documented defaults.
        crossdomain: settings of the cross-domain methods (``algorithm.name = "emcdr"``, ...):
            the fields of :class:`metarec.methods.crossdomain.CrossDomainConfig`, checked key by key when
            the method is built (before any data is read); unset keys keep their defaults.
        federated: the ``[federated]`` section (``metarec federated``).
        learners: settings of the cold-start meta-learners, one table per method
            (``[learners.tanp]``, ``--set learners.mamo.inner_lr=0.01``): the fields of the
            method's settings dataclass (:mod:`metarec.methods.learners`), checked when it is built.
        warmup: the ``[warmup]`` section: the item warm-up protocol
            (:class:`metarec.episodes.warmup.WarmupConfig`; ``metarec bench`` reports its
            phases); ``None``: not an item warm-up scenario.

    Example:
        >>> sc = Scenario(name="my-data", data={"source": "csv", "path": "ratings.csv"},
        ...               protocol={"n_support": 5, "max_interactions": "none"}, algorithm={"name": "maml"})
        >>> sc.protocol.n_support, sc.protocol.max_interactions, sc.algorithm.name, sc.train.steps
        (5, None, 'maml', 300)
        >>> Scenario(protocol={"n_support": 0})
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: protocol.n_support=0: each task needs at least one support
        interaction; set n_support >= 1
    """

    name: str = "scenario"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmSection = field(default_factory=AlgorithmSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    crossdomain: dict[str, Any] = field(default_factory=dict)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    learners: dict[str, Any] = field(default_factory=dict)
    warmup: WarmupConfig | None = None

    def __post_init__(self) -> None:
        coerce_tables(self)  # Scenario(data={...}, protocol={...}) from Python
        check_loss_fits(self.algorithm.loss, self.data, ranking=self.protocol.ranking)
        p = self.protocol
        if not p.ranking:
            return
        too_many = [k for k in self.bench.shots if k > p.support_pool]
        if too_many:
            raise ConfigError(
                f"bench.shots={list(self.bench.shots)}: {too_many[0]} shots exceed protocol.support_pool="
                f"{p.support_pool}, the support pool the ranking protocol pins per task; drop those shots or "
                f"raise support_pool (and min_interactions to support_pool + 1)"
            )
        if p.relevance is not None:
            d = self.data
            feedback = d.synthetic.feedback if d.source == "synthetic" else d.feedback
            if feedback == "implicit":
                raise ConfigError(
                    f"protocol.relevance={p.relevance}: implicit feedback has no ratings; every positive is "
                    "relevant; drop protocol.relevance"
                )
            scale = self.data.rating_scale
            if scale is not None and not scale[0] < p.relevance <= scale[-1]:
                raise ConfigError(
                    f"protocol.relevance={p.relevance}: outside the rating scale {list(scale)}; a query item is "
                    f"relevant when rated at least this; choose a value in ({scale[0]}, {scale[-1]}], e.g. 4.0"
                )


def check_loss_fits(loss: str | None, data: DataConfig, *, ranking: bool = False) -> None:
    """Refuse a loss that does not fit the data's feedback: ``bce`` / ``bpr`` / ``softmax`` (for
    0/1 clicks) on explicit ratings outside ``[0, 1]``, unless the scenario is a ranking scenario
    (``ranking``), where they train on the ratings' relevance labels
    (:mod:`metarec.config.objective`).

    Raises:
        ConfigError: naming ``algorithm.loss``, the feedback, the scale and the fix.
    """
    feedback = data.synthetic.feedback if data.source == "synthetic" else data.feedback
    scale = None if data.source == "synthetic" else data.rating_scale
    if loss not in RANK_LOSSES or feedback != "explicit" or ranking:
        return
    if scale is not None and 0.0 <= scale[0] and scale[-1] <= 1.0:
        return  # explicit ratings within [0, 1]: a probability target
    key = "data.synthetic.feedback" if data.source == "synthetic" else "data.feedback"
    shown = f", rating_scale={list(scale)}" if scale is not None else ""
    raise ConfigError(
        f"algorithm.loss={loss!r}: a loss for implicit feedback (0/1 clicks), but the data are explicit "
        f"ratings ({key}='explicit'{shown}); training on them would fit the ratings as if they were "
        f"clicks; use --set algorithm.loss=mse (or leave it unset), or declare clicks with --set {key}=implicit, "
        "or train to rank in a ranking scenario (protocol.ranking = true: ratings >= protocol.relevance become "
        "relevance labels)"
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def scenario_from_dict(d: Mapping[str, Any]) -> Scenario:
    """Build a :class:`Scenario` from a dict (a parsed TOML file or a saved JSON config)."""
    return from_dict(Scenario, d)


def load_scenario(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    data_root: str | os.PathLike[str] | None = None,
    **sections: Any,
) -> Scenario:
    """Read a scenario file (or take a dict), apply overrides, expand ``${...}`` and validate it.

    Args:
        source: a ``.toml`` scenario, a ``.json`` config written by :func:`save_config`, or the
            scenario as a dict of sections (the same keys as a file); ``None``: only
            ``sections``.
            Relative data paths in a file (``data.path``, ``data.files[].path``, the feature
            files' ``path``) are resolved against the file's folder; those given in
            ``sections``, ``overrides`` or a dict, against the current folder.
        overrides: ``["algorithm.inner_steps=5", ...]``, applied in order after the file.
        data_root: value of ``${METAREC_DATA}``; defaults to the ``METAREC_DATA`` environment
            variable, which is needed only when a value uses it. Other ``${NAME}`` come from
            the environment.
        **sections: sections as keywords (``data={...}``, ``protocol={...}``,
            ``name="..."``), merged key by key over ``source`` before ``overrides``.

    Example:
        >>> sc = load_scenario(data={"source": "synthetic"}, protocol={"n_support": 5},
        ...                    overrides=["train.steps=20"])
        >>> sc.name, sc.protocol.n_support, sc.train.steps
        ('scenario', 5, 20)
        >>> load_scenario(protocol={"n_suport": 5})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: scenario: unknown key 'protocol.n_suport' (did you mean 'n_support'?); ...

    Raises:
        ConfigError: the file is missing (the message lists the ``.toml`` files beside it) or
            unparsable, an override is malformed, or a key, type or value is invalid.
    """
    if source is None or isinstance(source, Mapping):
        raw = dict(source or {})
        where = "scenario"
        default_name = "scenario"
        folder = Path.cwd()
    else:
        path = Path(source)
        raw = read_config_file(path)
        where = str(path)
        default_name = path.stem
        folder = path.resolve().parent
    data = merge(merge(raw, sections), parse_overrides(overrides))
    data.setdefault("name", default_name)
    variables = dict(os.environ)
    if data_root is not None:
        variables["METAREC_DATA"] = os.fspath(data_root)
    try:
        sc = scenario_from_dict(expand_vars(data, variables))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    # relative data paths: a file's against its folder, the others against the current folder
    given: set[str] = set()
    for layer in (sections, parse_overrides(overrides)):
        sec = layer.get("data")
        given |= set(sec) if isinstance(sec, Mapping) else set()
    return replace(sc, data=resolve_data_paths(sc.data, folder, cwd_keys=given))


def as_scenario(scenario: Scenario | Mapping[str, Any]) -> Scenario:
    """``scenario`` itself, or the :class:`Scenario` a dict of sections describes
    (:func:`load_scenario`; ``${METAREC_DATA}`` expanded from the environment)."""
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, Mapping):
        return load_scenario(scenario)
    raise ConfigError(
        f"scenario={scenario!r}: expected a Scenario or a dict of sections; load a file with "
        "load_scenario('tasks/x.toml') or pass {'data': {...}, 'algorithm': {...}}"
    )


def save_config(scenario: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved ``scenario`` (any config dataclass) to ``path`` as indented JSON.

    The file loads back with :func:`load_scenario`; returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(scenario), indent=2) + "\n", encoding="utf-8")
    return path
