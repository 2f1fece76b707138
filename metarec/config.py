"""Scenario configuration: typed, frozen dataclasses loaded from TOML.

A scenario (``tasks/*.toml``) is data, not code: one table per section, every key optional
except ``name`` (which defaults to the file's stem)::

    name = "movielens-user-cold-start"
    [data]
    source = "movielens-100k"
    path = "${METAREC_DATA}/ml-100k"
    [algorithm]
    name = "maml"
    inner_steps = 5

:func:`load_scenario` reads the file, applies ``--set a.b=value`` overrides, expands
``${METAREC_DATA}`` and builds a :class:`Scenario`, checking every key and type on the way: an
unknown key is an error with a close-match suggestion, a wrong type names the dotted key, the
value, the expected type and the fix. :func:`save_config` writes the resolved scenario as JSON
beside a result, and :func:`config_hash` names it.

>>> s = scenario_from_dict({"name": "demo", "algorithm": {"inner_steps": 3}})
>>> s.algorithm.inner_steps, s.protocol.n_support
(3, 10)
>>> from_dict(AlgorithmSection, {"inner_stpes": 3})
Traceback (most recent call last):
...
metarec._errors.ConfigError: unknown key 'inner_stpes' (did you mean 'inner_steps'?); valid keys: ...

The mechanism (:func:`from_dict`, :func:`to_dict`, :func:`parse_overrides`, :func:`merge`,
:func:`expand_vars`) is generic over any frozen dataclass with annotations among ``int``,
``float``, ``bool``, ``str``, ``X | None``, ``Literal[...]``, ``tuple[X, ...]``,
``dict[str, X]`` and nested dataclasses. In ``X | None`` fields the string ``"none"`` (or
``"null"``) means ``None``, since TOML has no null: ``--set protocol.n_query=none``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from metarec._errors import ConfigError, suggest
from metarec.limits import check_device, check_seed, check_steps

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

__all__ = [
    "AlgorithmSection",
    "BenchConfig",
    "DataConfig",
    "MetricsConfig",
    "ModelConfig",
    "ProtocolConfig",
    "Scenario",
    "SyntheticConfig",
    "TrainConfig",
    "config_hash",
    "expand_vars",
    "from_dict",
    "load_scenario",
    "merge",
    "parse_overrides",
    "save_config",
    "scenario_from_dict",
    "to_dict",
]

T = TypeVar("T")
_NONE_WORDS = ("none", "null")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --------------------------------------------------------------------------------------------
# Generic mechanism: dicts <-> frozen dataclasses
# --------------------------------------------------------------------------------------------


class _Mismatch(Exception):
    """A value that does not fit an annotation (turned into a ConfigError by the caller)."""


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, recursively, checking keys and types.

    ``where`` is the dotted key of ``data`` inside the whole config (``"algorithm"``), used in
    error messages. Ints are accepted for floats, lists for tuples, tables for nested
    dataclasses; nothing else is converted. Missing keys take the field's default.

    Raises:
        ConfigError: on an unknown key (with a close-match suggestion and the valid keys), a
            missing required key, a value of the wrong type, or a value its class rejects.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if not isinstance(data, Mapping):
        raise ConfigError(_table_message(where or cls.__name__, data))
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"unknown key {_join(where, key)!r}{suggest(key, fields)}; "
                f"valid keys: {', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key, _default(f))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                f"missing key {key!r}: expected {_describe(hints[name])}; "
                f"add it to the scenario file or pass --set {key}=..."
            )
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # Validation messages start with the field name ("n_support=0: ..."): prefix the section.
        raise ConfigError(f"{where}.{e}" if where else str(e)) from None


def to_dict(obj: Any) -> Any:
    """The inverse of :func:`from_dict`: dataclasses become dicts, tuples lists (JSON-ready).

    ``None`` stays ``None`` (``null`` in JSON); ``from_dict(type(x), to_dict(x)) == x``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(obj: Any) -> str:
    """First 12 hex digits of the sha256 of ``obj``'s canonical JSON (sorted keys, no spaces).

    Equal configs hash equal whatever their key order; any changed value changes the hash.
    """
    text = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _coerce(value: Any, tp: Any, key: str, default: Any = None) -> Any:
    try:
        return _convert(value, tp, key)
    except _Mismatch:
        raise ConfigError(_type_message(key, value, tp, default)) from None


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to annotation ``tp`` or raise :class:`_Mismatch`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)
        ):
            return None
        for option in args:
            if option is not type(None):
                try:
                    return _convert(value, option, key)
                except _Mismatch:
                    pass
        raise _Mismatch
    if origin is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return value
        raise _Mismatch
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, key)
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        elif len(args) == len(value):
            items = [
                _convert(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            raise _Mismatch
        return origin(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        key_type, value_type = args
        return {
            _convert(k, key_type, key): _convert(v, value_type, f"{key}.{k}")
            for k, v in value.items()
        }
    raise TypeError(f"{key}: unsupported annotation {tp!r} in a config dataclass")


def _strip_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _describe(tp: Any) -> str:
    """English for an annotation: ``int | None`` -> ``"an integer or none"``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "none"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in sorted(args, key=lambda a: a is type(None)))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {_PLURALS.get(args[0], 'values')}" if args else "a list"
    if origin is dict:
        return f"a table of {_PLURALS.get(args[1], 'values')}"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, repr(tp)
    )


def _example(tp: Any, default: Any) -> Any:
    """A valid value to show in a fix: the default where there is one."""
    if default is not None and not dataclasses.is_dataclass(default):
        return to_dict(default)
    tp = _strip_none(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return args[0]
    if origin in (tuple, list):
        return [_example(args[0], None)] * 2
    return {bool: True, int: 1, float: 0.1}.get(tp, "name")


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return repr(value)


def _cli_literal(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"[\w.@/:-]+", value):
        return value
    if isinstance(value, list):
        return "[" + ",".join(_cli_literal(v) for v in value) + "]"
    return _toml_literal(value)


def _table_message(key: str, value: Any) -> str:
    return (
        f"{key}={value!r}: expected a table; write it as [{key}] followed by key = value lines, "
        f"or pass --set {key}.KEY=VALUE"
    )


def _type_message(key: str, value: Any, tp: Any, default: Any) -> str:
    inner = _strip_none(tp)
    if isinstance(inner, type) and dataclasses.is_dataclass(inner):
        return _table_message(key, value)
    hint = ""
    if typing.get_origin(inner) is Literal and isinstance(value, str):
        hint = suggest(value, typing.get_args(inner))
        match = re.search(r"'(.*)'", hint)
        default = match.group(1) if match else default
    if typing.get_origin(inner) is dict:
        fix = (
            f'write it as [{key}] followed by name = "value" lines, or pass --set {key}.NAME=VALUE'
        )
    else:
        example = _example(tp, default)
        leaf = key.rsplit(".", 1)[-1]
        fix = (
            f"e.g. --set {key}={_cli_literal(example)}, "
            f"or {leaf} = {_toml_literal(example)} in the scenario file"
        )
    return f"{key}={value!r}: expected {_describe(tp)}{hint}; {fix}"


# --------------------------------------------------------------------------------------------
# Overrides, merging and ${VAR} expansion on plain dicts
# --------------------------------------------------------------------------------------------


def _toml_loads(text: str) -> dict[str, Any]:
    if tomllib is None:
        raise ModuleNotFoundError(
            "reading TOML on Python 3.10 needs the 'tomli' package; pip install tomli"
        )
    return tomllib.loads(text)


def _parse_value(text: str) -> Any:
    """A TOML value when ``text`` is one (``5``, ``0.01``, ``true``, ``"x"``, ``[1, 2]``), else
    the bare string; ``[a, b]`` with bare words becomes a list of strings."""
    text = text.strip()
    if not text:
        return ""
    try:
        value = _toml_loads(f"v = {text}")["v"]
    except ValueError:  # tomllib.TOMLDecodeError: not a TOML value, so a bare string
        if text.startswith("[") and text.endswith("]"):
            inner = text[1:-1].strip()
            return [_parse_value(part) for part in inner.split(",")] if inner else []
        return text
    if isinstance(value, (datetime.date, datetime.time)):  # dates and times stay as typed
        return text
    return value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["algorithm.inner_steps=5", "data.path=/x"]`` into a nested dict.

    Values are parsed as TOML values where possible (``5``, ``0.01``, ``true``, ``"x"``,
    ``[1,2]``) and are bare strings otherwise; later items win over earlier ones.

    >>> parse_overrides(["algorithm.inner_steps=5", "train.bf16=true", "model.name=melu"])
    {'algorithm': {'inner_steps': 5}, 'train': {'bf16': True}, 'model': {'name': 'melu'}}
    """
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(
                f"override {item!r}: expected KEY=VALUE with a dotted key; "
                f"pass it as --set algorithm.inner_steps=5"
            )
        node = out
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                prefix = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"override {item!r}: {prefix} was already set to a value by an earlier "
                    f"--set; set either {prefix} or its keys, not both"
                )
        value = _parse_value(text)
        last = parts[-1]
        both_tables = isinstance(node.get(last), dict) and isinstance(value, dict)
        node[last] = merge(node[last], value) if both_tables else value
    return out


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``: tables merge key by key, anything else
    is replaced. Neither argument is modified."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def expand_vars(d: Any, variables: Mapping[str, str], where: str = "") -> Any:
    """Replace ``${NAME}`` in every string value of ``d`` (recursively) by ``variables[NAME]``.

    A variable that is undefined or empty is an error only where a value uses it.

    >>> expand_vars({"data": {"path": "${METAREC_DATA}/ml-100k"}}, {"METAREC_DATA": "/d"})
    {'data': {'path': '/d/ml-100k'}}
    """
    if isinstance(d, Mapping):
        return {k: expand_vars(v, variables, _join(where, k)) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return type(d)(expand_vars(v, variables, f"{where}[{i}]") for i, v in enumerate(d))
    if not isinstance(d, str):
        return d

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if variables.get(name):
            return variables[name]
        fix = f"set the {name} environment variable"
        if name == "METAREC_DATA":
            fix = "set METAREC_DATA to the datasets folder or pass --data-root DIR"
        raise ConfigError(f"{where or 'value'}={d!r}: ${{{name}}} is not defined; {fix}")

    return _VAR.sub(replace, d)


# --------------------------------------------------------------------------------------------
# The scenario schema
# --------------------------------------------------------------------------------------------

_COLUMN_ROLES = ("user", "item", "rating", "domain", "timestamp")


def _check_at_least(obj: Any, low: float, *names: str, fix: str = "") -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < low:
            raise ConfigError(f"{name}={value!r}: must be >= {low}; set {name} >= {low}{fix}")


@dataclass(frozen=True)
class SyntheticConfig:
    """The generator behind ``data.source = "synthetic"``: domains of users and items whose
    ratings come from latent factors shifted per domain.

    Fields:
        n_domains: number of domains.
        n_users: users per domain.
        n_items: items per domain.
        n_factors: latent dimension of the true rating model.
        shift: scale of the per-domain shift of the latent factors (0 = identical domains).
        density: mean fraction of (user, item) pairs observed within a domain.
        density_spread: relative spread of density across users (0 = every user alike).
        feedback: ``"explicit"`` ratings or ``"implicit"`` positives.
        noise: standard deviation of the rating noise.
        n_user_features, n_item_features: number of categorical side features.
        seed: seed of the generator; the same seed gives the same data.
    """

    n_domains: int = 40
    n_users: int = 200
    n_items: int = 300
    n_factors: int = 8
    shift: float = 0.5
    density: float = 0.05
    density_spread: float = 0.5
    feedback: Literal["explicit", "implicit"] = "explicit"
    noise: float = 0.3
    n_user_features: int = 3
    n_item_features: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "n_domains", "n_users", "n_items", "n_factors")
        _check_at_least(
            self, 0, "shift", "density_spread", "noise", "n_user_features", "n_item_features"
        )
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(
                f"density={self.density!r}: the observed fraction of pairs must lie in (0, 1]; "
                f"e.g. density = 0.05"
            )


@dataclass(frozen=True)
class DataConfig:
    """Where interactions come from.

    Fields:
        source: ``"synthetic"``, ``"movielens-100k"``, ``"movielens-1m"``, ``"recbole"``
            (atomic files), ``"amazon"`` (cross-domain pairs) or ``"csv"``.
        path: file or folder to read; may use ``${METAREC_DATA}``. ``None`` for synthetic.
        name: RecBole dataset name (``source = "recbole"``).
        pair: Amazon domain pair, e.g. ``"sport_cloth"`` (``source = "amazon"``).
        feedback: ``"explicit"`` ratings or ``"implicit"`` positives.
        rating_scale: ``(low, high)`` of explicit ratings, or ``None`` (implicit).
        melu_extra: read MovieLens side features as MeLU does (genre, director, actors).
        columns: CSV column mapping from role (user, item, rating, domain, timestamp) to the
            column name in the file; roles not given keep their own name.
        synthetic: the generator's settings (``source = "synthetic"``).
        domain_by: derive domains from item features: ``"genre_group"`` puts each movie in
            one of four genre groups by its first genre (MovieLens cross-genre scenarios).
    """

    source: Literal["synthetic", "movielens-100k", "movielens-1m", "recbole", "amazon", "csv"] = (
        "synthetic"
    )
    path: str | None = None
    name: str | None = None
    pair: str | None = None
    feedback: Literal["explicit", "implicit"] = "explicit"
    rating_scale: tuple[float, ...] | None = (1.0, 5.0)
    melu_extra: bool = True
    columns: dict[str, str] = field(default_factory=dict)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    domain_by: Literal["genre_group"] | None = None

    def __post_init__(self) -> None:
        scale = self.rating_scale
        if scale is not None and (len(scale) != 2 or not scale[0] < scale[1]):
            raise ConfigError(
                f"rating_scale={list(scale)}: expected [low, high] with low < high; "
                f'e.g. rating_scale = [1.0, 5.0], or "none" for implicit feedback'
            )
        for role in self.columns:
            if role not in _COLUMN_ROLES:
                raise ConfigError(
                    f"columns={self.columns!r}: unknown column role {role!r}{suggest(role, _COLUMN_ROLES)}; "
                    f"roles are {', '.join(_COLUMN_ROLES)}"
                )


@dataclass(frozen=True)
class ProtocolConfig:
    """How interactions become few-shot tasks and disjoint meta-train/val/test pools.

    Fields:
        unit: what one task is: a ``"user"``, a ``"domain"`` or a ``"cohort"`` of users.
        cohort_by: user column that groups users into cohorts (``unit = "cohort"``).
        split: how task units are split into pools: ``"random"``, ``"time"``, ``"melu"``
            (existing/new users x existing/new items) or ``"cold_domain_users"`` (a ``beta``
            fraction of the target domain's users are held out cold).
        fractions: meta-train, validation and test fractions of task units (sum to 1).
        n_support: support interactions per task (the shots); ``None`` = all non-query
            interactions (MeLU's protocol).
        n_query: query interactions per task; ``None`` = all remaining.
        order: how a task's interactions are ordered before the support/query cut.
        min_interactions: task units with fewer interactions are dropped; for the
            ``"random"`` and ``"time"`` splits at least ``n_support + (n_query or 1)``.
        max_interactions: task units with more are dropped (``None`` = no limit).
        negatives: implicit feedback: sampled negatives per positive.
        new_item_year: ``"melu"`` split: items released from this year on are new.
        existing_user_fraction: ``"melu"`` split: fraction of users that are existing.
        beta: ``"cold_domain_users"`` split: cold fraction of the target domain's users.
        target_domain: the target domain (``None`` = the protocol picks).
        seed: seed of the split and the task sampler.
    """

    unit: Literal["user", "domain", "cohort"] = "user"
    cohort_by: str | None = None
    split: Literal["random", "time", "melu", "cold_domain_users"] = "random"
    fractions: tuple[float, ...] = (0.7, 0.1, 0.2)
    n_support: int | None = 10
    n_query: int | None = 10
    order: Literal["random", "time"] = "random"
    min_interactions: int = 20
    max_interactions: int | None = 100
    negatives: int = 0
    new_item_year: int = 1998
    existing_user_fraction: float = 0.8
    beta: float = 0.2
    target_domain: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = list(self.fractions)
        example = "e.g. fractions = [0.7, 0.1, 0.2]"
        if len(fractions) != 3:
            raise ConfigError(
                f"fractions={fractions}: expected 3 entries (meta-train, validation, test); "
                f"{example}"
            )
        if not all(0.0 <= f <= 1.0 for f in fractions):
            raise ConfigError(f"fractions={fractions}: each fraction must lie in [0, 1]; {example}")
        if abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(
                f"fractions={fractions}: the fractions must sum to 1 (they sum to "
                f"{sum(fractions):g}); {example}"
            )
        if self.n_support is not None and self.n_support < 1:
            raise ConfigError(
                f"n_support={self.n_support}: each task needs at least one support "
                f"interaction; set n_support >= 1"
            )
        if self.n_query is not None and self.n_query < 1:
            raise ConfigError(
                f"n_query={self.n_query}: each task needs at least one query interaction; "
                f'set n_query >= 1, or n_query = "none" for all remaining interactions'
            )
        need = (self.n_support or 1) + (self.n_query or 1)
        if self.split in ("random", "time") and self.min_interactions < need:
            parts = f"n_support + {'n_query' if self.n_query else '1'}"
            raise ConfigError(
                f"min_interactions={self.min_interactions}: a task unit needs {parts} = {need} "
                f"interactions to fill its support and query sets; set min_interactions >= "
                f"{need} or lower n_support/n_query"
            )
        if self.max_interactions is not None and self.max_interactions < self.min_interactions:
            raise ConfigError(
                f"max_interactions={self.max_interactions}: must be >= min_interactions="
                f'{self.min_interactions}; raise it or set max_interactions = "none"'
            )
        _check_at_least(self, 0, "negatives")
        if not 0.0 <= self.existing_user_fraction <= 1.0:
            raise ConfigError(
                f"existing_user_fraction={self.existing_user_fraction}: must lie in [0, 1]; "
                f"e.g. existing_user_fraction = 0.8"
            )
        if not 0.0 < self.beta < 1.0:
            raise ConfigError(
                f"beta={self.beta}: the cold fraction of target-domain users must lie strictly "
                f"between 0 and 1; e.g. beta = 0.2"
            )
        if self.unit == "cohort" and not self.cohort_by:
            raise ConfigError(
                f"unit='cohort' needs cohort_by, the user column that groups users into "
                f'cohorts (cohort_by={self.cohort_by!r}); set cohort_by = "age" or use '
                f'unit = "user"'
            )


@dataclass(frozen=True)
class MetricsConfig:
    """What is reported on query sets.

    Fields:
        names: metric names (``"mae"``, ``"rmse"``, ``"ndcg@10"``, ...), see ``metarec.metrics``.
        k: default cut-off for ranking metrics named without ``@k``.
    """

    names: tuple[str, ...] = ("mae", "rmse", "ndcg@10")
    k: int = 10

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "k")


@dataclass(frozen=True)
class ModelConfig:
    """The recommender being meta-learned.

    Fields:
        name: model name (``"melu"``, ...), see ``metarec.models``.
        embedding_dim: size of the user/item/feature embeddings.
        hidden: widths of the hidden layers of the rating MLP.
        adapt: names of the parameters adapted in the inner loop (``None`` = the model's own
            choice).
        dropout: dropout probability in the MLP.
    """

    name: str = "melu"
    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    adapt: tuple[str, ...] | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "embedding_dim")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"hidden={list(self.hidden)}: each layer width must be >= 1; e.g. hidden = [64, 64]"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout}: must lie in [0, 1); e.g. dropout = 0.1")


@dataclass(frozen=True)
class AlgorithmSection:
    """The meta-learning algorithm (section ``[algorithm]``).

    Fields:
        name: algorithm name (``"maml"``, ``"fomaml"``, ``"reptile"``, ``"metasgd"``,
            ``"anil"``, ``"global"``, ``"finetune"``), see ``metarec.algorithms``.
        inner_steps: gradient steps on the support set per task during meta-training.
        inner_lr: inner-loop learning rate (initial value when ``per_step_lr``).
        first_order: drop second-order terms of the meta-gradient.
        meta_batch: tasks per outer step.
        chunk_size: tasks per ``vmap`` call, to bound memory (``None`` = the whole batch).
        per_step_lr: learn one inner learning rate per step and parameter (MAML++).
        multi_step_loss: average the query loss over every inner step (MAML++).
        eval_steps: inner steps at evaluation (``None`` = ``inner_steps``).
        eval_lr: inner learning rate at evaluation (``None`` = ``inner_lr``).
    """

    name: str = "maml"
    inner_steps: int = 5
    inner_lr: float = 0.01
    first_order: bool = False
    meta_batch: int = 32
    chunk_size: int | None = None
    per_step_lr: bool = False
    multi_step_loss: bool = False
    eval_steps: int | None = None
    eval_lr: float | None = None

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "inner_steps", "eval_steps")
        _check_at_least(self, 1, "meta_batch", "chunk_size")
        for name in ("inner_steps", "eval_steps"):  # bound (metarec.guard.MAX_STEPS)
            if getattr(self, name) is not None:
                check_steps(getattr(self, name), f"algorithm.{name}")


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop's budget and bookkeeping.

    Fields:
        steps: outer (meta) steps.
        outer_lr: learning rate of the outer optimizer.
        val_every: steps between validations.
        val_tasks: validation tasks per validation.
        patience: stop after this many validations without improvement (``None`` = never).
        grad_clip: clip the meta-gradient norm (``None`` = no clipping).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        bf16: autocast the forward pass to bfloat16 on CUDA.
        checkpoint_every: steps between checkpoints.
        seed: seed of initialisation and task sampling.
        progress: show a progress bar.
    """

    steps: int = 300
    outer_lr: float = 1e-3
    val_every: int = 50
    val_tasks: int = 256
    patience: int | None = None
    grad_clip: float | None = 10.0
    device: str = "auto"
    bf16: bool = False
    checkpoint_every: int = 50
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "steps")
        _check_at_least(self, 1, "val_every", "val_tasks", "patience", "checkpoint_every")
        check_seed(self.seed)  # metarec.guard
        check_device(self.device)
        if self.outer_lr <= 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            name = "outer_lr" if self.outer_lr <= 0 else "grad_clip"
            raise ConfigError(
                f"{name}={getattr(self, name)}: must be > 0; e.g. outer_lr = 0.001, grad_clip = 10.0"
            )


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

    Fields:
        name: the scenario's name (a file's stem when the file sets none).
        description: free text.
        data, protocol, metrics, model, algorithm, train, bench: the sections, each with
            documented defaults.
    """

    name: str
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmSection = field(default_factory=AlgorithmSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def scenario_from_dict(d: Mapping[str, Any]) -> Scenario:
    """Build a :class:`Scenario` from a dict (a parsed TOML file or a saved JSON config)."""
    return from_dict(Scenario, d)


def load_scenario(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    data_root: str | os.PathLike[str] | None = None,
) -> Scenario:
    """Read a scenario file, apply ``--set`` overrides, expand ``${...}`` and validate it.

    Args:
        path: a ``.toml`` scenario, or a ``.json`` config written by :func:`save_config`.
        overrides: ``["algorithm.inner_steps=5", ...]``, applied in order after the file.
        data_root: value of ``${METAREC_DATA}``; defaults to the ``METAREC_DATA`` environment
            variable, which is needed only when a value uses it. Other ``${NAME}`` come from
            the environment.

    Raises:
        ConfigError: the file is missing (the message lists the ``.toml`` files beside it) or
            unparsable, an override is malformed, or a key, type or value is invalid.
    """
    path = Path(path)
    raw = _read(path)
    data = merge(raw, parse_overrides(overrides))
    data.setdefault("name", path.stem)
    variables = dict(os.environ)
    if data_root is not None:
        variables["METAREC_DATA"] = os.fspath(data_root)
    try:
        return scenario_from_dict(expand_vars(data, variables))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_config(scenario: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved ``scenario`` (any config dataclass) to ``path`` as indented JSON.

    The file loads back with :func:`load_scenario`; returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(scenario), indent=2) + "\n", encoding="utf-8")
    return path


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        folder = path.parent
        found = sorted(p.name for p in folder.glob("*.toml")) if folder.is_dir() else []
        what = "is a folder, not a scenario file" if path.is_dir() else "does not exist"
        if found:
            listing = f"scenarios in {folder}: {', '.join(found)}"
        elif folder.is_dir():
            listing = f"{folder} holds no .toml files"
        else:
            listing = f"folder {folder} does not exist either"
        raise ConfigError(
            f"scenario file {str(path)!r} {what}{suggest(path.name, found)}; {listing}"
        )
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = _toml_loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # TOMLDecodeError, JSONDecodeError
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError(f"{path}: invalid {kind}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of sections at the top, got {data!r}")
    return data
