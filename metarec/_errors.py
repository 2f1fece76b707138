"""Error types and message helpers.

Every error raised on user input names the argument, the bad value, the rule and the fix
(``n_support=0: each task needs at least one support interaction; pass n_support >= 1``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MetarecError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "MissingExtra",
    "require_extra",
    "suggest",
    "py",
]


class MetarecError(ValueError):
    """Base class of metarec's errors on user input (a ``ValueError``).

    Catch it to handle any bad input the library refuses; the message names the argument, the
    value, the rule and the fix.

    Example:
        >>> import metarec as mr
        >>> try:
        ...     mr.SamplerConfig(n_support=0)
        ... except mr.MetarecError as e:
        ...     print(type(e).__name__, isinstance(e, ValueError), "|", e)
        ConfigError True | n_support=0: each task needs at least one support interaction; pass n_support >= 1
    """


class DataError(MetarecError):
    """Interactions or side features that fail validation.

    Example:
        >>> import pandas as pd, metarec as mr
        >>> frame = pd.DataFrame({"user": ["u1"], "item": ["i1"], "rating": [9.0]})
        >>> mr.InteractionTable.from_frame(frame, rating_scale=(1, 5))
        Traceback (most recent call last):
        ...
        metarec._errors.DataError: rating column 'rating': rating 9.0 at row 0 is outside rating_scale=(1, 5); ...
    """


class ConfigError(MetarecError):
    """A scenario or argument that fails validation.

    Example:
        >>> import metarec as mr
        >>> mr.Scenario(protocol={"n_suport": 5})
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: unknown key 'protocol.n_suport' (did you mean 'n_support'?); ...
    """


class CheckpointError(MetarecError):
    """A run directory or checkpoint that cannot be loaded safely.

    Example:
        >>> import tempfile, metarec as mr
        >>> empty = tempfile.mkdtemp()
        >>> try:
        ...     mr.load_run(empty)
        ... except mr.CheckpointError as e:
        ...     print(str(e).replace(empty, "<dir>"))
        run directory '<dir>': no manifest.json; pass a folder written by 'metarec train' or 'metarec adapt'
    """


class MissingExtra(ConfigError):
    """An optional dependency is not installed; the message names the extra to install."""


def require_extra(module: str, extra: str, what: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtra` in one line naming ``extra``.

    Callers check their extras before they write anything, so a missing one leaves no
    half-written folder behind.

    >>> require_extra("json", "none", "reading JSON").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise MissingExtra(
            f'{what} needs the "{extra}" extra ({why}); pip install "metarec[{extra}]"'
        ) from None


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if str(name).lower() in lowered:
            close = [lowered[str(name).lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""


def py(value: object) -> object:
    """A numpy scalar as the plain Python value (so messages read ``7.0``, not ``np.float64(7.0)``)."""
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "shape", None) == ():
        return item()
    return value
