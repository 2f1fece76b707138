"""Value checks shared by the scenario sections of :mod:`metarec.config`."""

from __future__ import annotations

from typing import Any

from metarec._errors import ConfigError

__all__: list[str] = []


def _check_at_least(obj: Any, low: float, *names: str, fix: str = "") -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < low:
            raise ConfigError(f"{name}={value!r}: must be >= {low}; set {name} >= {low}{fix}")
