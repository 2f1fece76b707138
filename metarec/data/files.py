"""The file boundary: every interaction, feature or metadata file the data layer reads.

:func:`read_frame` reads a delimited text file (optionally compressed) or a Parquet file into a
DataFrame; :func:`read_json_object` reads a JSON file that must hold an object;
:func:`check_codes` checks integer codes read from a file against the size of their vocabulary.
Each turns what goes wrong at a file boundary (a missing or unreadable file, a corrupt archive,
bytes that are not text, a separator that splits nothing, a truncated file, out-of-range codes)
into one :class:`~metarec._errors.DataError` (or the error class the caller names) that gives
the file, the problem and a fix a user can apply, never a traceback from the parser below.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "r.dat"
>>> _ = p.write_text("u1\\ti1\\t5\\n01\\ti2\\t4\\n")
>>> read_frame(p, format="csv", sep="\\t", header=False, names=["user", "item", "rating"])["user"].tolist()
['u1', '01']
"""

from __future__ import annotations

import csv
import gzip
import json
import lzma
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from metarec._errors import DataError, MetarecError, suggest
from metarec._io.paths import special_file

__all__ = [
    "FORMATS", "SEPARATORS", "check_codes", "file_format", "normalize_sep", "read_frame", "read_json_object",
    "separator_hint", "sniff_separator",
]  # fmt: skip

FileFormat = Literal["csv", "tsv", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet")
"""Values of ``format`` (and ``data.format``): delimited text (``csv``, default separator ``,``;
``tsv``, default tab) or ``parquet``."""

SEPARATORS: tuple[str, ...] = (",", "\t", ";", "|", "::", " ")
"""Separators :func:`sniff_separator` considers, in order of preference on a tie."""

_EXT_FORMAT = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zip", ".zst")
_SEP_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe", "::": "'::'", " ": "space"}
_SEP_WORDS = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


def normalize_sep(sep: str | None) -> str | None:
    """``sep`` with the words a command line can type (``\\t``, ``tab``, ``comma``, ``semicolon``,
    ``pipe``, ``space``) replaced by the character."""
    return _SEP_WORDS.get(sep, sep) if sep is not None else None


def _sep_toml(sep: str) -> str:
    return json.dumps(sep)


def file_format(path: str | Path, format: str | None = None) -> str:
    """The format of ``path``: ``format`` when given, else from the extension.

    Raises:
        DataError: an unknown ``format``, or an extension that names none (with the
            ``data.format`` key that reads it anyway).
    """
    path = Path(path)
    if format is not None:
        if format not in FORMATS:
            raise DataError(
                f"format={format!r}: unknown file format{suggest(format, FORMATS)}; formats are "
                f'{list(FORMATS)} (set data.format = "csv" and data.sep for any delimited text '
                "file)"
            )
        return format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext not in _EXT_FORMAT:
        raise DataError(
            f"{path}: unsupported extension {ext or '(none)'!r}; known extensions are "
            f"{sorted(_EXT_FORMAT)} (text files may end in {list(_COMPRESSED)}); for any other "
            'name give the format: data.format = "csv" (or "tsv", "parquet") with data.sep = "\\t" '
            "in the scenario, or format=/sep= in Python"
        )
    return _EXT_FORMAT[ext]


def _need(path: Path, how: str) -> None:
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file; give the path of the file itself")
    kind = special_file(path)  # a FIFO would block the read, /dev/zero never end
    if kind is not None:
        raise DataError(
            f"{path}: is {kind}, not a regular file; metarec reads data from regular files only; "
            "copy the data into a file and give its path"
        )
    if not path.is_file():
        raise DataError(f"file not found: {path}; {how}")


def _head_lines(path: Path, n: int = 20) -> list[str]:
    """The first ``n`` lines of a (possibly compressed) text file, decoded leniently."""
    opener: Any = open
    suffix = path.suffix.lower()
    if suffix == ".gz":
        opener = gzip.open
    elif suffix == ".xz":
        opener = lzma.open
    elif suffix == ".bz2":
        import bz2

        opener = bz2.open
    elif suffix in (".zip", ".zst"):
        return []
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            return [line.rstrip("\r\n") for _, line in zip(range(n), f)]
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise DataError(
            f"{path}: cannot read the file ({type(e).__name__}: {e}); it is corrupt or truncated "
            "(a partial download or copy?); obtain the file again"
        ) from None


def sniff_separator(path: str | Path, *, header: bool = True) -> str | None:
    """The separator among :data:`SEPARATORS` that splits the first lines of ``path`` into the
    same number (> 1) of fields on every line, the most fields winning; ``None`` if none does."""
    lines = [line for line in _head_lines(Path(path)) if line.strip()]
    if not lines:
        return None
    best: tuple[int, str] | None = None
    for sep in SEPARATORS:
        counts = {len(line.split(sep)) for line in lines}
        if len(counts) == 1 and (n := counts.pop()) > 1 and (best is None or n > best[0]):
            best = (n, sep)
    return best[1] if best else None


def _pandas_sep(sep: str) -> tuple[str, dict[str, Any]]:
    if len(sep) == 1:
        return sep, {}
    return re.escape(sep), {"engine": "python"}  # a multi-character separator is a regex in pandas


def read_frame(
    path: str | Path,
    *,
    format: str | None = None,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    string_columns: Sequence[str] | Literal["all"] = "all",
    read_options: Mapping[str, Any] | None = None,
    how: str = "check the path (a scenario's relative data paths are relative to the scenario file's folder)",
) -> pd.DataFrame:
    """Read one table file into a DataFrame.

    Args:
        path: the file.
        format: ``"csv"``, ``"tsv"`` or ``"parquet"``; ``None``: from the extension
            (``.csv``, ``.tsv``/``.txt``, ``.parquet``/``.pq``, text optionally compressed).
        sep: separator of a text file (any string; ``None``: the format's default, ``,`` or tab).
        header: the first line of a text file names the columns; ``False``: it is data, and
            ``names`` (or ``0, 1, ...``) name the columns.
        names: column names of a header-less file (a header, if any, is replaced).
        string_columns: columns read as exact strings, so that ``01`` stays ``"01"``
            (``"all"``: every column); the others are inferred by pandas (numbers stay numbers).
        read_options: extra keyword arguments of ``pandas.read_csv`` / ``read_parquet``.
        how: the fix for a missing file (how to obtain it).

    Returns:
        The frame; text columns hold strings (empty fields are missing).

    Raises:
        DataError: a missing, unreadable, corrupt, truncated or non-text file, or a layout the
            parser rejects, naming the file, the problem and the fix.
    """
    path = Path(path)
    fmt = file_format(path, format)
    _need(path, how)
    opts = dict(read_options or {})
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise DataError(
                f"{path}: reading Parquet needs pyarrow; pip install 'metarec[parquet]'"
            ) from None
        try:
            frame = pd.read_parquet(path, **opts)
        except (OSError, ValueError, TypeError) as e:  # pyarrow.ArrowInvalid is a ValueError
            raise DataError(
                f"{path}: not a readable Parquet file ({type(e).__name__}: {_short(e)}); it is "
                'corrupt or truncated, or not Parquet (for text set data.format = "csv"); obtain '
                "or write the file again"
            ) from None
        if names is not None:
            frame = _rename(frame, names, path)
        return frame
    sep_: str = _SEP_WORDS.get(sep, sep) if sep is not None else ("\t" if fmt == "tsv" else ",")
    if sep_ == "":
        raise DataError(
            f"{path}: sep='': the separator must be at least one character; e.g. data.sep = \",\""
        )
    psep, extra = _pandas_sep(sep_)
    kw: dict[str, Any] = {"sep": psep, **extra}
    if (
        not header or names is not None
    ):  # named after reading; a header that names replace is skipped
        kw["header"] = None
        if header:
            kw["skiprows"] = 1
    if string_columns == "all":
        kw["dtype"] = str
    elif string_columns:
        wanted = set(string_columns)
        kw["dtype"] = (
            {k: str for k, n in enumerate(names) if n in wanted}
            if names is not None
            else {c: str for c in wanted}
        )
    kw.update(keep_default_na=False, na_values=[""])
    if kw.get("engine") != "python":
        kw["quoting"] = csv.QUOTE_MINIMAL
    kw.update(opts)
    try:
        frame = pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: the file is empty (no columns, no rows); write the interactions into it"
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (byte {e.object[e.start : e.start + 1]!r} at offset "
            f"{e.start}); it is binary, corrupt or in another encoding; re-save it as UTF-8, or "
            "pass read_options={'encoding': 'latin-1'} in Python"
        ) from None
    except (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as e:
        raise DataError(
            f"{path}: the compressed file is corrupt or truncated ({type(e).__name__}: "
            f"{_short(e)}); obtain the file again (a partial download or copy?)"
        ) from None
    except (pd.errors.ParserError, ValueError, OSError, csv.Error) as e:
        hint = _sep_hint(path, sep_, header)
        raise DataError(
            f"{path}: cannot parse the file ({type(e).__name__}: {_short(e)}); "
            f"{hint or 'it is corrupt or not the expected layout'}"
        ) from None
    except MemoryError:
        raise DataError(
            f"{path}: the file does not fit in memory; split it into several data.files entries"
        ) from None
    if (
        names is not None
    ):  # named after reading, so that a count mismatch is an error, not a silent shift
        if frame.shape[1] != len(names) and (hint := _sep_hint(path, sep_, header)):
            raise DataError(f"{path}: {frame.shape[1]} column(s) read, {len(names)} named; {hint}")
        frame = _rename(frame, names, path)
    if len(frame) and frame.shape[1] > 1:
        empty = [str(c) for c in frame.columns if frame[c].isna().all()]
        if empty and (hint := _sep_hint(path, sep_, header)):
            raise DataError(f"{path}: column(s) {empty} are empty on every line; {hint}")
    return frame


def _rename(frame: pd.DataFrame, names: Sequence[str], path: Path) -> pd.DataFrame:
    if frame.shape[1] != len(names):
        raise DataError(
            f"{path}: the file has {frame.shape[1]} columns but names lists {len(names)}: "
            f"{list(names)}; give one name per column in data.names (names= in Python), e.g. a "
            "name for a timestamp column too"
        )
    return frame.set_axis(list(names), axis=1)


def _short(e: BaseException, n: int = 200) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= n else text[: n - 3] + "..."


def _sep_hint(path: Path, sep: str, header: bool) -> str:
    """``"wrong separator? ..."`` when another separator splits the file cleanly, else ``""``."""
    try:
        found = sniff_separator(path, header=header)
    except DataError:
        return ""
    if found is None or found == sep:
        return ""
    return (
        f"wrong separator? the file is read with sep={sep!r} ({_SEP_NAMES.get(sep, 'custom')}) but "
        f"its lines split evenly on {found!r} ({_SEP_NAMES[found]}); set data.sep = "
        f"{_sep_toml(found)} in the scenario (sep= in Python)"
    )


def separator_hint(path: str | Path, sep: str, *, header: bool = True) -> str:
    """The "wrong separator?" hint for ``path`` read with ``sep`` (``""`` when ``sep`` looks right)."""
    return _sep_hint(Path(path), sep, header)


def read_json_object(
    path: str | Path, what: str, *, error: type[MetarecError] = DataError, fix: str = ""
) -> dict[str, Any]:
    """A JSON file that must hold an object (``{...}``).

    Args:
        path: the file; what: what it is, for the message (``"encoders"``).
        error: the error class to raise (``CheckpointError`` for run directories).
        fix: what the user should do about a damaged file.

    Raises:
        ``error``: a missing or unreadable file, invalid JSON (with line and column), or JSON
        that is not an object.
    """
    path = Path(path)
    fix = fix or "restore or rewrite the file"
    kind = special_file(path)
    if kind is not None:
        raise error(f"{path}: the {what} file is {kind}, not a regular file; {fix}")
    if not path.is_file():
        raise error(f"{path}: the {what} file is missing; {fix}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(
            f"{path}: cannot read the {what} file ({type(e).__name__}: {_short(e)}); {fix}"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(
            f"{path}: the {what} file is not valid JSON ({e.msg} at line {e.lineno}, column "
            f"{e.colno}; truncated?); {fix}"
        ) from None
    except RecursionError:
        raise error(
            f"{path}: the {what} file is nested too deeply to be metarec's; {fix}"
        ) from None
    if not isinstance(obj, dict):
        raise error(
            f"{path}: the {what} file holds a JSON {type(obj).__name__}, expected an object "
            f"({{...}}); {fix}"
        )
    return obj


def check_codes(
    codes: np.ndarray, size: int, what: str, *, error: type[MetarecError] = DataError, fix: str = ""
) -> np.ndarray:
    """``codes`` (integer indices into a vocabulary of ``size`` entries, 0 = unknown) if every
    one lies in ``[0, size)``; else ``error`` naming ``what``, the first bad code and its range."""
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise error(
            f"{what}: codes must be integers, got dtype {arr.dtype}; {fix or 'the file is damaged'}"
        )
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= size:
            bad = lo if lo < 0 else hi
            raise error(
                f"{what}: code {bad} is outside the vocabulary's range [0, {size - 1}] ({size} "
                "entries); "
                f"{fix or 'the file is damaged or was written with another vocabulary; rebuild it'}"
            )
    return arr
