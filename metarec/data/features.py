"""User and item side features: categorical, multi-valued categorical and numeric.

A feature table is encoded per entity index (the user or item :class:`IdEncoder`'s index), so a
model looks features up by index and items never seen in interactions are still scored through
their features. Categorical and multi-valued features share one layout: an ``int64`` array
``(n_entities, L)`` of value indices, 0 meaning padding/unknown (``L = 1`` for a plain
categorical). Numeric features form one ``float32`` array ``(n_entities, d)``, standardised
with the mean and standard deviation of the rows present. Text features (strings: titles,
plots) are embedded once by a pretrained encoder (:mod:`metarec.data.text`) into a ``float32``
array ``(n_entities, D)`` each; an entity without text gets the zero vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from metarec._errors import DataError, py, suggest
from metarec.data.encoding import IdEncoder

__all__ = ["FeatureSpec", "FeatureTable", "encode_features"]

FeatureKind = Literal["categorical", "multi", "numeric", "text"]
_KINDS = ("categorical", "multi", "numeric", "text")


@dataclass(frozen=True)
class FeatureSpec:
    """One side-feature column.

    Args:
        name: column name in the feature frame.
        kind: ``"categorical"`` (one value), ``"multi"`` (several values in one string split by
            ``sep``, or a list), ``"numeric"``, or ``"text"`` (a string embedded by ``encoder``).
        sep: separator of multi-valued strings (``"Action|Comedy"``).
        max_values: keep at most this many values of a multi-valued feature (``None``: all).
        encoder: text features: the pretrained encoder (:func:`metarec.data.text.get_encoder`;
            ``"wordllama"`` or ``"sentence-transformers:/path"``).

    Example:
        >>> import pandas as pd
        >>> from metarec.data.table import InteractionTable
        >>> ratings = pd.DataFrame({"user": ["u1", "u2"], "item": ["i1", "i2"], "rating": [4.0, 5.0]})
        >>> items = pd.DataFrame({"item": ["i1", "i2", "i3"], "year": [1999, 2005, 2010],
        ...                       "genre": ["Drama|Comedy", "Drama", "Action"]})
        >>> t = InteractionTable.from_frame(ratings, item_features=items, item_feature_specs=[
        ...     FeatureSpec("genre", kind="multi"), FeatureSpec("year", kind="numeric")])
        >>> f = t.item_features
        >>> f.vocabs["genre"].values, f.categorical["genre"].shape, f.numeric_names
        (['Action', 'Comedy', 'Drama'], (4, 2), ['year'])
        >>> FeatureSpec("genre", kind="multiple")
        Traceback (most recent call last):
        ...
        metarec._errors.DataError: FeatureSpec(kind='multiple') for feature 'genre': kind must be
        one of ('categorical', 'multi', 'numeric', 'text') (did you mean 'multi'?); ...
    """

    name: str
    kind: FeatureKind = "categorical"
    sep: str = "|"
    max_values: int | None = None
    encoder: str = "wordllama"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise DataError(
                f"FeatureSpec(kind={self.kind!r}) for feature {self.name!r}: kind must be one of "
                f"{_KINDS}{suggest(self.kind, _KINDS)}; pass kind='categorical', 'multi', 'numeric' or 'text'"
            )


@dataclass
class FeatureTable:
    """Encoded side features of one entity type (users or items), indexed by entity index.

    Attributes:
        categorical: ``{name: int64 array (n_entities, L)}``; 0 is padding/unknown.
        numeric: ``float32 array (n_entities, d)`` (``d`` may be 0).
        numeric_names: names of the numeric columns, in order.
        vocabs: ``{name: IdEncoder}`` of each categorical feature.
        present: ``bool array (n_entities,)``: the entity has a feature row.
        text: ``{name: float32 array (n_entities, D)}`` of text embeddings (zero: no text).
        text_sources: ``{name: {"encoder", "texts_sha256", "sha256"}}``: each text array's
            encoder, texts and array fingerprints (:func:`metarec.data.text.encode_text_feature`),
            saved with a run so that it loads without the encoder.
    """

    categorical: dict[str, np.ndarray]
    numeric: np.ndarray
    numeric_names: list[str]
    vocabs: dict[str, IdEncoder]
    present: np.ndarray
    numeric_stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    text: dict[str, np.ndarray] = field(default_factory=dict)
    text_sources: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def n_entities(self) -> int:
        return int(self.present.shape[0])

    def vocab_sizes(self) -> dict[str, int]:
        """Embedding-table size of each categorical feature (unknown slot included)."""
        return {k: len(v) for k, v in self.vocabs.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "vocabs": {k: v.to_json() for k, v in self.vocabs.items()},
            "numeric_names": self.numeric_names,
            "numeric_stats": self.numeric_stats,
            "widths": {k: int(v.shape[1]) for k, v in self.categorical.items()},
            **(
                {
                    "text_dims": {k: int(v.shape[1]) for k, v in self.text.items()},
                    "text_sources": self.text_sources,
                }
                if self.text
                else {}
            ),
        }


def encode_features(
    frame: pd.DataFrame,
    id_col: str,
    specs: Sequence[FeatureSpec],
    entities: IdEncoder,
    *,
    what: str = "item",
) -> FeatureTable:
    """Validate a side-feature frame and encode it against an entity encoder.

    Rows whose id is absent from ``entities`` are dropped (the caller builds ``entities`` over
    the union of interaction ids and feature ids when features of cold entities matter).

    Raises:
        DataError: a missing column (with a close-match suggestion), duplicated ids, or a feature
            column mixing numbers and strings.
    """
    cols = [id_col] + [s.name for s in specs]
    for c in cols:
        if c not in frame.columns:
            raise DataError(
                f"{what}_features: column {c!r} not found; columns are {list(frame.columns)}"
                f"{suggest(c, frame.columns)}; fix the column name or the FeatureSpec"
            )
    ids = frame[id_col]
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(
            f"{what}_features: {len(dup)} duplicated id(s) in column {id_col!r}, first {py(dup.iloc[0])!r}; "
            f"each {what} needs exactly one feature row; drop duplicates first "
            f"(frame.drop_duplicates({id_col!r}))"
        )
    idx = entities.encode(ids.to_numpy())
    keep = idx > 0
    idx = idx[keep]
    sub = frame.loc[keep]
    n = len(entities)
    present = np.zeros(n, dtype=bool)
    present[idx] = True

    categorical: dict[str, np.ndarray] = {}
    vocabs: dict[str, IdEncoder] = {}
    num_cols: list[np.ndarray] = []
    num_names: list[str] = []
    stats: dict[str, tuple[float, float]] = {}
    text: dict[str, np.ndarray] = {}
    sources: dict[str, dict[str, str]] = {}
    for spec in specs:
        col = sub[spec.name]
        if spec.kind == "text":
            text[spec.name], sources[spec.name] = _encode_text(col, spec, idx, n, what)
            continue
        if spec.kind == "numeric":
            vals = pd.to_numeric(col, errors="coerce")
            bad = col[vals.isna() & col.notna()]
            if len(bad):
                raise DataError(
                    f"{what}_features[{spec.name!r}]: numeric feature has non-numeric value {py(bad.iloc[0])!r}; "
                    f"clean the column or declare it FeatureSpec({spec.name!r}, kind='categorical')"
                )
            v = vals.to_numpy(dtype=np.float64)
            mu = float(np.nanmean(v)) if np.isfinite(v).any() else 0.0
            sd = float(np.nanstd(v)) if np.isfinite(v).any() else 1.0
            sd = sd if sd > 0 else 1.0
            full = np.zeros(n, dtype=np.float32)
            full[idx] = np.nan_to_num((v - mu) / sd, nan=0.0)
            num_cols.append(full)
            num_names.append(spec.name)
            stats[spec.name] = (mu, sd)
            continue
        _check_mixed(col, spec.name, what)
        if spec.kind == "categorical":
            vocab = IdEncoder.fit(col.dropna().to_numpy(), name=spec.name)
            full = np.zeros((n, 1), dtype=np.int64)
            full[idx, 0] = vocab.encode(col.to_numpy())
        else:
            lists = [_split(v, spec.sep) for v in col.tolist()]
            if spec.max_values is not None:
                lists = [v[: spec.max_values] for v in lists]
            flat = [x for v in lists for x in v]
            vocab = IdEncoder.fit(flat, name=spec.name)
            width = max(1, max((len(v) for v in lists), default=1))
            full = np.zeros((n, width), dtype=np.int64)
            lens = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
            if flat:
                codes = vocab.encode(flat)
                rows = np.repeat(idx, lens)
                pos = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
                full[rows, pos] = codes
        categorical[spec.name] = full
        vocabs[spec.name] = vocab
    numeric = np.stack(num_cols, axis=1) if num_cols else np.zeros((n, 0), dtype=np.float32)
    return FeatureTable(categorical, numeric, num_names, vocabs, present, stats, text, sources)


def _encode_text(
    col: pd.Series, spec: FeatureSpec, idx: np.ndarray, n: int, what: str
) -> tuple[np.ndarray, dict[str, str]]:
    from metarec.data.text import encode_text_feature, matrix_sha256

    bad = [
        v
        for v in col.tolist()
        if v is not None and not isinstance(v, str) and not (isinstance(v, float) and np.isnan(v))
    ]
    if bad:
        raise DataError(
            f"{what}_features[{spec.name!r}]: text feature has non-string value {py(bad[0])!r}; convert the column "
            f"first (frame[{spec.name!r}].astype(str)) or declare another kind"
        )
    vecs, source = encode_text_feature(col.tolist(), encoder=spec.encoder)  # (rows, D)
    full = np.zeros((n, vecs.shape[1]), dtype=np.float32)
    full[idx] = vecs
    return full, {**source, "sha256": matrix_sha256(full)}


def _split(v: Any, sep: str) -> list[str]:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x).strip() for x in v if str(x).strip()]
    return [p.strip() for p in str(v).split(sep) if p.strip()]


def _check_mixed(col: pd.Series, name: str, what: str) -> None:
    if col.dtype != object:
        return
    kinds = {type(v).__name__ for v in col.dropna().tolist() if not isinstance(v, (list, tuple))}
    numeric = kinds & {"int", "float", "int64", "float64"}
    if numeric and "str" in kinds:
        example_num = next(v for v in col.dropna() if type(v).__name__ in numeric)
        example_str = next(v for v in col.dropna() if isinstance(v, str))
        raise DataError(
            f"{what}_features[{name!r}]: column mixes numbers ({example_num!r}) and strings "
            f"({example_str!r}); convert it to one type first (frame[{name!r}].astype(str))"
        )
