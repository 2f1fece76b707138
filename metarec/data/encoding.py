"""Stable id encoding with a reserved "unknown" index, and the one rule of what an id is.

Index 0 is reserved for values never seen when the encoder was built (cold users, cold items,
unseen feature values); known values get 1..n in sorted order of their string form, so the
same set of raw ids always gives the same encoding. Encoders serialise to JSON and are saved
beside every trained model.

**What an id is** (every reader follows it: the training files, the support CSV of
``metarec recommend`` / ``adapt``, a Python frame, a served request): an id is compared by its
text without surrounding whitespace, exactly otherwise. ``" u3"`` and ``"u3"`` are one user;
``1``, ``01`` and ``001`` are three (unless ``data.ids = "numeric"``); the integer ``5`` and the
string ``"5"`` are one id. :func:`normalize_ids` applies the rule to a column, :class:`IdEncoder`
to every lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from metarec._errors import DataError

__all__ = ["IdEncoder", "UNKNOWN", "normalize_ids"]

UNKNOWN = 0
"""The index every encoder reserves for values it has not seen."""


class IdEncoder:
    """Maps raw ids (any hashable scalar) to ``int64`` indices ``1..n``; unknown ids map to 0.

    Example:
        >>> enc = IdEncoder.fit(["b", "a", "b"])
        >>> enc.encode(["a", "b", "zzz"]).tolist()
        [1, 2, 0]
        >>> len(enc)          # includes the unknown slot
        3
    """

    def __init__(self, values: Sequence[Any], name: str = "id") -> None:
        self.name = name
        self._values: list[Any] = list(values)
        # Pandas index does vectorised lookups; keys are the string form so that
        # ids read back from JSON (always strings or numbers) encode the same way.
        self._index = _keys(self._values)
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][0]
            same = [v for v, k in zip(self._values, self._index) if k == dup]
            raise DataError(
                f"{name} ids: {' and '.join(repr(v) for v in same[:3])} are one id written as different types "
                f"(string form {dup!r}); make the {name} column one type (all strings or all integers)"
            )
        self._lookup: dict[str, int] | None = None  # key -> index, built on the first small encode
        # Fast path for integer vocabularies (the common case: MovieLens, Amazon ids).
        self._int_index: pd.Index | None = None
        if self._values and all(
            isinstance(v, (int, np.integer))
            and not isinstance(v, bool)
            and _I64_MIN <= v <= _I64_MAX
            for v in self._values
        ):
            self._int_index = pd.Index(np.asarray(self._values, dtype=np.int64))

    @classmethod
    def fit(cls, values: Iterable[Any], name: str = "id") -> IdEncoder:
        """Build an encoder over the distinct values, sorted for a stable encoding.

        A handful of values that are all one id (one cold user's support, the serving path)
        skip the pandas pass.
        """
        if (
            isinstance(values, (list, tuple))
            and 0 < len(values) <= _FEW
            and not _is_missing(values[0])
        ):
            first, key = _norm(values[0]), _key(values[0])
            if all(type(v) is type(first) and _key(v) == key for v in values):
                return cls([first], name=name)
        uniq = pd.unique(
            pd.Series(list(values) if not isinstance(values, (pd.Series, np.ndarray)) else values)
        )
        uniq = list(dict.fromkeys(_norm(v) for v in uniq if not _is_missing(v)))
        uniq.sort(key=lambda v: (0, v) if isinstance(v, (int, np.integer)) else (1, str(v)))
        return cls(uniq, name=name)

    def __len__(self) -> int:
        """Number of indices, the unknown slot included (the size of an embedding table)."""
        return len(self._values) + 1

    @property
    def values(self) -> list[Any]:
        """Known raw values in index order (index ``i`` holds ``values[i - 1]``)."""
        return list(self._values)

    def encode(self, raw: Iterable[Any]) -> np.ndarray:
        """Encode raw ids; unknown or missing ids become :data:`UNKNOWN` (0).

        Many ids go through a vectorised pandas lookup; a handful (one user's support, the
        serving path) through a dict, which is much cheaper per call.
        """
        if not np.isscalar(raw) and len(raw) <= _FEW:  # type: ignore[arg-type]
            vals = raw.tolist() if hasattr(raw, "tolist") else list(raw)
            if self._lookup is None:
                self._lookup = {k: i for i, k in enumerate(self._index.tolist(), 1)}
            return np.fromiter((self._lookup.get(_key(v), 0) for v in vals), np.int64, len(vals))
        arr = raw if isinstance(raw, (np.ndarray, pd.Series)) else None
        if self._int_index is not None and arr is not None and np.asarray(arr).dtype.kind == "i":
            pos = self._int_index.get_indexer(np.asarray(arr, dtype=np.int64))
            return (pos + 1).astype(np.int64)
        pos = self._index.get_indexer(_keys(raw))
        return (pos + 1).astype(np.int64)  # -1 (unknown) -> 0

    def decode(self, idx: Iterable[int]) -> list[Any]:
        """Decode indices back to raw ids; index 0 decodes to ``None``."""
        out: list[Any] = []
        for i in np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx).tolist():
            out.append(self._values[i - 1] if 0 < i <= len(self._values) else None)
        return out

    def __contains__(self, raw: Any) -> bool:
        return _key(raw) in self._index

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "values": [_jsonable(v) for v in self._values]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> IdEncoder:
        return cls(obj["values"], name=obj.get("name", "id"))

    def __repr__(self) -> str:
        return f"IdEncoder(name={self.name!r}, known={len(self._values)})"


def _is_missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

_FEW = 64
"""Up to this many ids are encoded by dict lookup instead of a pandas index."""


def normalize_ids(values: Any) -> Any:
    """A column of raw ids under the id rule (module docstring): strings lose their surrounding
    whitespace; numbers, missing values and the column's type are kept. Returns an object array
    for string ids, the input unchanged otherwise (no copy when nothing changes)."""
    arr = values.to_numpy() if isinstance(values, pd.Series) else values
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "OUS" or not len(arr):
        return values
    s = pd.Series(arr, dtype=object)
    text = s.map(lambda v: v.strip() if isinstance(v, str) else v)
    if text.equals(s):
        return values
    return text.to_numpy(dtype=object)


def _norm(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


def _key(v: Any) -> str:
    """The string form two raw ids share exactly when they encode to the same index."""
    if isinstance(v, (np.integer,)):
        v = int(v)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def _keys(raw: Any) -> pd.Index:
    """String keys of many raw ids, vectorised for the common homogeneous cases."""
    if np.isscalar(raw):
        raw = [raw]
    if isinstance(raw, pd.Series):
        arr = raw.to_numpy()
    elif isinstance(raw, np.ndarray):
        arr = raw
    else:
        arr = np.empty(len(raw), dtype=object)
        arr[:] = list(raw)
    if arr.dtype.kind in "US":
        return pd.Index(arr.astype(str)).str.strip()
    if arr.dtype.kind in "iu":  # uint64 ids above the int64 range keep their own digits
        return pd.Index(arr.astype(str))
    if arr.dtype.kind == "O" and len(arr):
        kind = pd.api.types.infer_dtype(arr, skipna=False)
        if kind == "string":
            return pd.Index(arr.astype(str)).str.strip()
        if kind == "integer":
            try:
                return pd.Index(arr.astype(np.int64).astype(str))
            except OverflowError:  # Python ints beyond int64: exact digits, one by one
                pass
    return pd.Index([_key(v) for v in arr.tolist()])


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)
