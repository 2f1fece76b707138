"""File helpers shared by the dataset readers (:mod:`metarec.data.readers`,
:mod:`metarec.data.movielens`): a file that must exist, a parsed CSV, a checked choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from metarec._errors import ConfigError, DataError, suggest
from metarec._io.paths import special_file

__all__: list[str] = []


PathLike = str | Path


def _choice(arg: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{arg}={value!r}: must be one of {choices}{suggest(str(value), choices)}"
        )


def _need(path: Path, how: str) -> Path:
    """``path`` if it is a file, else a DataError naming it and how to obtain the data."""
    kind = special_file(path)
    if kind is not None:
        raise DataError(
            f"{path}: is {kind}, not a regular file; metarec reads data from regular files only; {how}"
        )
    if not path.is_file():
        raise DataError(f"file not found: {path}; {how}")
    return path


def _csv(path: Path, how: str, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` of a file that must exist, parse errors turned into DataError."""
    _need(path, how=how)
    try:
        return pd.read_csv(path, **kwargs)
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(
            f"{path}: cannot parse the file ({e}); it is corrupt or not the expected layout"
        ) from e
