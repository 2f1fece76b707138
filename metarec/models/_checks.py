"""Validation of model config fields (messages name the argument, the value, the rule, the fix)."""

from __future__ import annotations

from typing import Any

from metarec._errors import ConfigError

__all__ = ["check_sizes", "check_dim", "check_dropout"]


def check_sizes(sizes: Any, arg: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    """``sizes`` as a tuple of layer widths >= 1 (a list from TOML is accepted)."""
    ok = isinstance(sizes, (tuple, list)) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    )
    if not ok or (not sizes and not allow_empty):
        rule = "a tuple of ints >= 1" + ("" if allow_empty else ", at least one")
        raise ConfigError(f"{arg}={sizes!r}: layer widths must be {rule}; pass e.g. {arg}=(64, 64)")
    return tuple(sizes)


def check_dim(dim: Any, arg: str) -> None:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"{arg}={dim!r}: must be an int >= 1; pass e.g. {arg}=32")


def check_dropout(p: Any) -> None:
    if not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
        raise ConfigError(f"dropout={p!r}: must be in [0, 1); pass dropout=0.0 to disable it")
