"""Validation and conversion of single interaction columns: ratings, timestamps, split parts,
ids.

Each function reads one column of a user's frame and returns a clean numpy array, or raises a
:class:`~metarec._errors.DataError` naming the column, the row, the value, the rule and a fix the
user can apply (a scenario key where there is one). :meth:`InteractionTable.from_frame
<metarec.data.table.InteractionTable.from_frame>` calls them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from metarec._errors import DataError, py, suggest

__all__ = [
    "PARTS",
    "check_scalars",
    "one_column_hint",
    "parse_parts",
    "parse_ratings",
    "parse_timestamps",
]

PARTS: tuple[str, ...] = ("train", "valid", "test")
"""Names of a dataset's own split parts (``InteractionTable.parts`` holds indices into this)."""
_PART_ALIASES = {"train": 0, "valid": 1, "validation": 1, "val": 1, "dev": 1, "test": 2}


def parse_ratings(
    frame: pd.DataFrame, col: str | None, feedback: str, scale: tuple[float, float] | None
) -> np.ndarray:
    """``float64 (n,)`` ratings of column ``col`` (``None``: implicit, every row 1), checked: numeric,
    finite, 0/1 for implicit feedback, inside ``scale`` for explicit."""
    if col is None:
        if feedback == "explicit":
            raise DataError(
                "columns.rating=None: explicit feedback needs a rating column; name it with "
                'data.columns.rating = "<column>" (Columns(rating=...) in Python), or set '
                'data.feedback = "implicit" (every row a positive)'
            )
        return np.ones(len(frame), dtype=np.float64)
    raw = frame[col]
    vals = pd.to_numeric(raw, errors="coerce")
    bad = raw[vals.isna() & raw.notna()]
    if len(bad):
        raise DataError(
            f"rating column {col!r}: non-numeric value {py(bad.iloc[0])!r} at row "
            f"{py(bad.index[0])!r}; ratings must be numbers; clean or drop those rows"
        )
    r = vals.to_numpy(dtype=np.float64)
    nan = np.isnan(r)
    if nan.any():
        row = frame.index[nan][0]
        raise DataError(
            f"rating column {col!r}: {int(nan.sum())} NaN rating(s), first at row {row!r}; "
            "every interaction needs a finite rating; drop or impute those rows"
        )
    inf = np.isinf(r)
    if inf.any():
        row = frame.index[inf][0]
        raise DataError(
            f"rating column {col!r}: infinite rating {py(r[inf][0])!r} at row {row!r}; "
            "ratings must be finite; drop or clip those rows"
        )
    if feedback == "implicit":
        off = ~np.isin(r, (0.0, 1.0))
        if off.any():
            raise DataError(
                f"rating column {col!r}: implicit feedback needs 0/1 values, got {py(r[off][0])!r} "
                f"at row {py(frame.index[off][0])!r}; binarise first (e.g. rating >= 4), set "
                'data.feedback = "explicit", or data.columns.rating = "none" to make every row a '
                "positive"
            )
    elif scale is not None:
        lo, hi = scale
        off = (r < lo) | (r > hi)
        if off.any():
            raise DataError(
                f"rating column {col!r}: rating {py(r[off][0])!r} at row "
                f"{py(frame.index[off][0])!r} is outside rating_scale=({lo:g}, {hi:g}); "
                f"{int(off.sum())} row(s) affected; set data.rating_scale = [low, high] "
                '(rating_scale= in Python; "none" skips the check) or clip the ratings'
            )
    return r


_INT_TEXT = r"\s*[+-]?\d+\s*"
_TS_FIX = (
    "use integer epoch seconds or ISO 8601 (2020-01-31T12:00:00), or leave the timestamp column "
    "out (data.columns.timestamp unset; Columns(timestamp=None) in Python)"
)
_TS_MAX = 253402300799  # 9999-12-31T23:59:59Z: beyond it a "time" is not a time
_TS_MIN = -62135596800  # 0001-01-01T00:00:00Z


def parse_timestamps(frame: pd.DataFrame, col: str) -> np.ndarray:
    """Epoch seconds (``int64``) of a timestamp column: integers (or integer strings) as they
    are, datetimes and date strings converted; fractional, out-of-range or unparsable values
    are refused rather than truncated or wrapped."""
    raw = frame[col]
    if raw.isna().any():
        row = frame.index[raw.isna().to_numpy()][0]
        raise DataError(
            f"timestamp column {col!r}: missing timestamp at row {py(row)!r}; fill or drop those "
            f"rows, or {_TS_FIX}"
        )
    if pd.api.types.is_bool_dtype(raw):
        raise DataError(f"timestamp column {col!r}: holds true/false values, not times; {_TS_FIX}")
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    elif pd.api.types.is_numeric_dtype(raw) or raw.astype(str).str.fullmatch(_INT_TEXT).all():
        return _epoch_numbers(frame, col, raw)
    else:
        if pd.api.types.infer_dtype(raw, skipna=True) not in ("string", "datetime", "date"):
            bad = raw[[not isinstance(v, str) for v in raw.tolist()]]
            raise DataError(
                f"timestamp column {col!r}: value {py(bad.iloc[0])!r} at row {py(bad.index[0])!r} "
                f"mixes with other kinds of values; {_TS_FIX}"
            )
        try:
            parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
        except (ValueError, TypeError, OverflowError):
            parsed = pd.Series(
                [pd.to_datetime(v, errors="coerce", utc=True) for v in raw.tolist()],
                index=raw.index,
            )
        if parsed.dtype == object:
            parsed = pd.to_datetime(parsed, errors="coerce", utc=True)
    bad = parsed.isna()
    if bad.any():
        row = frame.index[bad.to_numpy()][0]
        raise DataError(
            f"timestamp column {col!r}: cannot parse {py(raw.loc[row])!r} at row {py(row)!r} as a "
            f"time; {_TS_FIX}"
        )
    if getattr(parsed.dt, "tz", None) is None:
        parsed = parsed.dt.tz_localize("UTC")
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _epoch_numbers(frame: pd.DataFrame, col: str, raw: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(raw) and raw.dtype.kind == "f":
        v = raw.to_numpy(dtype=np.float64)
        frac = ~np.isfinite(v) | (v != np.floor(v))
        if frac.any():
            k = int(np.argmax(frac))
            raise DataError(
                f"timestamp column {col!r}: {py(v[k])!r} at row {py(frame.index[k])!r} "
                "is not a whole number of seconds "
                f"(it would be truncated); {_TS_FIX}"
            )
        vals = [int(x) for x in v.tolist()]
    elif pd.api.types.is_numeric_dtype(raw) and raw.dtype.kind in "iu":
        arr = raw.to_numpy()
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            vals = [int(x) for x in arr.tolist()]
        else:
            out = arr.astype(np.int64)
            _check_ts_range(frame, col, out)
            return out
    else:  # integer strings: vectorised when they fit int64, exact Python ints otherwise
        try:
            out = raw.astype(str).str.strip().astype(np.int64).to_numpy()
        except (OverflowError, ValueError):
            vals = [int(str(x)) for x in raw.tolist()]
        else:
            _check_ts_range(frame, col, out)
            return out
    lo, hi = min(vals), max(vals)
    if lo < _TS_MIN or hi > _TS_MAX:
        bad = lo if lo < _TS_MIN else hi
        k = vals.index(bad)
        raise DataError(
            f"timestamp column {col!r}: {bad} at row {py(frame.index[k])!r} is not a time in epoch "
            f"seconds (outside years 1..9999); milliseconds? divide by 1000 first; {_TS_FIX}"
        )
    return np.asarray(vals, dtype=np.int64)


def _check_ts_range(frame: pd.DataFrame, col: str, ts: np.ndarray) -> None:
    off = (ts < _TS_MIN) | (ts > _TS_MAX)
    if off.any():
        k = int(np.argmax(off))
        raise DataError(
            f"timestamp column {col!r}: {int(ts[k])} at row {py(frame.index[k])!r} is not a time "
            "in epoch seconds (outside years 1..9999); milliseconds? divide by 1000 first; "
            f"{_TS_FIX}"
        )


def parse_parts(frame: pd.DataFrame, col: str) -> np.ndarray:
    """Part index (0 train, 1 valid, 2 test) of every row of the split column ``col``."""
    raw = frame[col]
    keys = raw.astype(str).str.strip().str.lower()
    codes = keys.map(_PART_ALIASES)
    bad = codes.isna() | raw.isna()
    if bad.any():
        row = frame.index[bad.to_numpy()][0]
        raise DataError(
            f"part column {col!r}: {py(raw.loc[row])!r} at row {py(row)!r} is not a split part; "
            f"parts are {list(PARTS)} ('validation', 'val' and 'dev' mean "
            f"'valid'){suggest(str(raw.loc[row]), PARTS)}"
        )
    return codes.to_numpy(dtype=np.int8)


_SCALARS = (str, int, float, np.integer, np.floating)


def check_scalars(values: pd.Series, what: str) -> None:
    """Ids must be strings or numbers (not lists, dicts, booleans or bytes)."""
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
        "string",
        "integer",
        "floating",
        "mixed-integer-float",
    ):
        return
    if values.dtype == object or pd.api.types.is_bool_dtype(values):
        for row, v in zip(values.index, values.tolist()):
            if isinstance(v, bool) or not isinstance(v, _SCALARS):
                raise DataError(
                    f"{what}: value {v!r} at row {py(row)!r} is a {type(v).__name__}; ids must be "
                    "strings or numbers; convert the column (e.g. to str) first"
                )


def one_column_hint(frame: pd.DataFrame) -> str:
    """A "wrong separator?" hint when the whole header landed in one column."""
    if frame.shape[1] != 1:
        return ""
    name = str(frame.columns[0])
    for sep in (";", "\t", "|", ",", "::", " "):
        if sep in name:
            return (
                f"; the frame has one column {name!r}: wrong separator? the header splits on "
                f"{sep!r}; set data.sep = {json.dumps(sep)} in the scenario (sep= in Python)"
            )
    return ""
