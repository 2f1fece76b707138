"""The configuration engine: typed, frozen dataclasses <-> plain dicts, ``--set`` overrides,
``${VAR}`` expansion and config files (TOML or JSON).

The mechanism (:func:`from_dict`, :func:`to_dict`, :func:`parse_overrides`, :func:`merge`,
:func:`expand_vars`, :func:`read_config_file`) is generic over any frozen dataclass with
annotations among ``int``, ``float``, ``bool``, ``str``, ``X | None``, ``Literal[...]``,
``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses. In ``X | None`` fields the string
``"none"`` (or ``"null"``) means ``None``, since TOML has no null: ``--set protocol.n_query=none``.
Unknown keys are an error with a close-match suggestion; a wrong type names the dotted key, the
value, the expected type and the fix. The scenario schema that uses it is :mod:`metarec.config`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from metarec._errors import ConfigError, suggest
from metarec._io.paths import special_file

tomllib: Any
if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None

__all__ = [
    "from_dict",
    "to_dict",
    "config_hash",
    "parse_overrides",
    "merge",
    "expand_vars",
    "read_config_file",
    "cli_literal",
    "coerce_tables",
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
        # Validation messages start with the field name ("n_support=0: ..."): prefix the section,
        # unless the message already names the full key ("train.seed=-1: ...").
        msg = str(e)
        raise ConfigError(
            f"{where}.{msg}" if where and not msg.startswith(f"{where}.") else msg
        ) from None


def coerce_tables(obj: Any, where: str = "") -> None:
    """Convert, in place, the plain values a frozen dataclass was built with in Python: a table
    (``dict``) given for a dataclass field, or a list given for a ``tuple`` field, becomes what
    :func:`from_dict` would have made of it, checked the same way.

    Called first in ``__post_init__``, it lets ``Scenario(name="x", data={"source": "csv"})``
    mean what the same keys mean in a scenario file; values already of the field's type are
    left as they are.

    Raises:
        ConfigError: as :func:`from_dict` (an unknown key with a close-match suggestion, a wrong
            type naming the dotted key).
    """
    hints = _hints(type(obj))  # type: ignore[arg-type]
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, (Mapping, list)) and f.name in hints:
            tp = hints[f.name]
            if typing.get_origin(_strip_none(tp)) is dict and isinstance(value, dict):
                continue  # already a table of the right shape; its values are checked by the class
            object.__setattr__(obj, f.name, _coerce(value, tp, _join(where, f.name), _default(f)))


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


def cli_literal(value: Any) -> str:
    """``value`` as it would be typed after ``--set key=`` (strings bare when safe)."""
    return _cli_literal(value)


def read_config_file(path: Path) -> dict[str, Any]:
    kind = special_file(path)
    if kind is not None and not path.is_dir():
        raise ConfigError(
            f"scenario file {str(path)!r}: is {kind}, not a regular file; pass a .toml scenario file"
        )
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
