"""Bounds on user-given numbers that are checked before anything runs (no torch needed).

:data:`MAX_STEPS` bounds every inner (adaptation) step count: a scenario's
``algorithm.inner_steps`` / ``eval_steps``, ``--steps`` of ``adapt`` and ``recommend``, and a
run folder's saved values, so that no option, scenario or hostile run folder can make
``recommend`` run for hours. ``train.seed`` must be what numpy and torch both accept, and
``train.device`` a device metarec runs on.
"""

from __future__ import annotations

import re
from typing import Any

from metarec._errors import CheckpointError, ConfigError, py

__all__ = [
    "MAX_STEPS",
    "MAX_SEED",
    "check_steps",
    "check_seed",
    "check_device",
    "check_train_steps",
]

MAX_STEPS = 10_000
"""Most inner (adaptation) steps any run, option or scenario may ask for."""
MAX_SEED = 2**32 - 1
"""Largest ``train.seed`` (numpy's seed range)."""
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_steps(value: Any, name: str = "steps", *, where: str | None = None) -> int:
    """``value`` as an int in ``0..MAX_STEPS``.

    Raises:
        ConfigError: not an int, negative, or above :data:`MAX_STEPS` (``where``: the file it came
            from, then a :class:`CheckpointError`).
    """
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STEPS
    if ok:
        return int(value)
    rule = f"must be an int in 0..{MAX_STEPS:,} (more inner steps would run for hours)"
    if where is not None:
        raise CheckpointError(
            f"{where!r}: {name}={py(value)!r}: {rule}; the run folder is damaged or not "
            "trustworthy; restore the file from a copy, or re-train"
        )
    fix = f"--set {name}=10" if "." in name else f"{name}=10 (--{name} 10 on the command line)"
    raise ConfigError(f"{name}={py(value)!r}: {rule}; pass e.g. {fix}")


def check_device(name: Any) -> None:
    """Raise unless ``name`` is ``"auto"``, ``"cpu"``, ``"mps"``, ``"cuda"`` or ``"cuda:N"``."""
    if not (isinstance(name, str) and _DEVICE.match(name)):
        raise ConfigError(
            f"train.device={name!r}: not a device metarec runs on; choose 'auto' (CUDA when available), "
            "'cpu', 'cuda' or 'cuda:N', e.g. --set train.device=cpu"
        )


def check_seed(value: Any, name: str = "train.seed") -> None:
    """Raise unless ``value`` is an int in ``0..2**32 - 1`` (what numpy and torch both accept)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(
            f"{name}={py(value)!r}: must be an int in 0..{MAX_SEED}; pass e.g. --set {name}=0"
        )


def check_train_steps(steps: Any) -> None:
    """Raise unless ``train.steps >= 1`` (a run with no step writes no checkpoint to serve or resume)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(
            f"train.steps={py(steps)!r}: a run needs at least one outer step to write a checkpoint; "
            "pass e.g. --set train.steps=300"
        )
