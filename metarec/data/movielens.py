"""Readers of the MovieLens datasets (GroupLens): ML-100K, ML-1M and MeLU's extra item features
(genre, director, actors, text columns). Re-exported by :mod:`metarec.data.readers`."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from metarec._errors import DataError, suggest
from metarec.data._reading import PathLike, _choice, _csv, _need
from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable

__all__ = ["read_melu_item_features", "read_movielens_100k", "read_movielens_1m"]


_ML_HOWTO = (
    "download it with `metarec data fetch {name} --root DIR` (the official GroupLens archive, "
    "https://grouplens.org/datasets/movielens/) and point data.path at DIR (root=DIR in Python)"
)


# MovieLens-1M age codes (lower bound of each bucket); ML-100K ages are bucketed the same way.
_AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


def read_movielens_100k(
    root: PathLike,
    *,
    age: Literal["bucket", "numeric"] = "bucket",
    year: Literal["categorical", "numeric"] = "categorical",
) -> InteractionTable:
    """Read MovieLens-100K (GroupLens layout) with user and item side features.

    Args:
        root: the folder holding ``ml-100k/``, or ``ml-100k`` itself.
        age: ``"bucket"`` (categorical, the MovieLens-1M age codes 1/18/25/35/45/50/56) or
            ``"numeric"`` (standardised years of age).
        year: the item release year as a ``"categorical"`` or ``"numeric"`` feature.

    Returns:
        100,000 explicit ratings on (1, 5) with timestamps; user features ``age``, ``gender``,
        ``occupation``, ``zip`` and item features ``genre`` (multi-valued) and ``year``.

    Raises:
        DataError: a missing file, with how to obtain the data.
    """
    _choice("age", age, ("bucket", "numeric"))
    _choice("year", year, ("categorical", "numeric"))
    base = _find_dir(root, "ml-100k", "u.data", "movielens-100k")
    how = _ML_HOWTO.format(name="movielens-100k")
    ratings = _csv(
        base / "u.data",
        how,
        sep="\t",
        header=None,
        names=["user", "item", "rating", "timestamp"],
        dtype="int64",
    )
    users = _csv(
        base / "u.user", how, sep="|", header=None, names=["user", "age", "gender", "occupation", "zip"],
        dtype={"user": "int64", "age": "int64", "gender": str, "occupation": str, "zip": str},
    )  # fmt: skip
    if age == "bucket":
        users["age"] = _age_bucket(users["age"])
    items = _csv(
        base / "u.item", how, sep="|", header=None, encoding="latin-1",
        names=["item", "title", "release", "video", "url", *_ML100K_GENRES], quoting=csv.QUOTE_NONE,
    )  # fmt: skip
    flags = items[list(_ML100K_GENRES)].to_numpy(dtype=bool)
    names = np.array(_ML100K_GENRES, dtype=object)
    genres = ["|".join(names[row]) for row in flags]
    years = pd.to_numeric(items["release"].str[-4:], errors="coerce")
    item_frame = pd.DataFrame({"item": items["item"].astype("int64"), "genre": genres})
    item_frame["year"] = _year_column(years, year)
    return InteractionTable.from_frame(
        ratings,
        Columns(timestamp="timestamp"),
        user_features=users,
        user_feature_specs=[
            FeatureSpec("age", "numeric" if age == "numeric" else "categorical"),
            FeatureSpec("gender"),
            FeatureSpec("occupation"),
            FeatureSpec("zip"),
        ],  # fmt: skip
        item_features=item_frame,
        item_feature_specs=[FeatureSpec("genre", "multi", sep="|"), FeatureSpec("year", year)],
    )


def read_movielens_1m(
    root: PathLike,
    melu_extra: bool | None = None,
    *,
    zip_prefix: int | None = None,
    item_text: Sequence[str] = (),
) -> InteractionTable:
    """Read MovieLens-1M (GroupLens layout), optionally with MeLU's item side information.

    Args:
        root: the folder holding ``ml-1m/`` (and optionally ``melu-extra/``), or ``ml-1m`` itself.
        melu_extra: ``True``: item features from ``melu-extra/movies_extrainfos.dat`` (MeLU's
            set: ``rate``, ``genre``, ``director``, ``actors``, plus ``year``; an error if the
            file is missing); ``False``: item features from ``movies.dat`` (``genre``, ``year``
            from the title); ``None``: MeLU's when the folder exists.
        zip_prefix: keep only the first ``zip_prefix`` characters of the zip code (``None``:
            the full code, as MeLU does).
        item_text: item columns added as text features (``FeatureSpec(c, "text")``, embedded by
            :mod:`metarec.data.text`): ``"title"`` always; with MeLU's file also ``"plot"``,
            ``"director"``, ``"writer"``, ``"actors"``, ``"genre"`` (default: none).

    Returns:
        1,000,209 explicit ratings on (1, 5) with timestamps; user features ``gender``, ``age``,
        ``occupation``, ``zip`` (all categorical, MeLU's user set). Movies 860 and 1795 have no
        MeLU feature row: they load, with all-zero features.

    Raises:
        DataError: a missing file, with how to obtain the data.
    """
    base = _find_dir(root, "ml-1m", "ratings.dat", "movielens-1m")
    ratings = _csv(  # "a::b" read with sep=":" (the fast C parser) has empty columns between fields.
        base / "ratings.dat", _ML_HOWTO.format(name="movielens-1m"), sep=":", header=None, usecols=[0, 2, 4, 6],
        names=["user", "_1", "item", "_2", "rating", "_3", "timestamp"], dtype="int64",
    )  # fmt: skip
    users = _read_double_colon(base / "users.dat", ["user", "gender", "age", "occupation", "zip"])
    for col in ("user", "age", "occupation"):
        users[col] = users[col].astype("int64")
    if zip_prefix is not None:
        users["zip"] = users["zip"].str[:zip_prefix]
    extra = _melu_dir(base)
    if melu_extra is None:
        melu_extra = (extra / "movies_extrainfos.dat").is_file()
    if melu_extra:
        items = read_melu_item_features(extra / "movies_extrainfos.dat")
        item_specs = [
            FeatureSpec("rate"), FeatureSpec("genre", "multi", sep=", "),
            FeatureSpec("director", "multi", sep=", "), FeatureSpec("actors", "multi", sep=", "),
            FeatureSpec("year"),
        ]  # fmt: skip
    else:
        items = _read_double_colon(base / "movies.dat", ["item", "title", "genre"])
        items["item"] = items["item"].astype("int64")
        items["year"] = _year_column(
            pd.to_numeric(items["title"].str.extract(_TITLE_YEAR)[0]), "categorical"
        )
        item_specs = [FeatureSpec("genre", "multi", sep="|"), FeatureSpec("year")]
    items, item_specs = _with_text(
        items, item_specs, item_text, "melu-extra" if melu_extra else "movies.dat"
    )
    return InteractionTable.from_frame(
        ratings,
        Columns(timestamp="timestamp"),
        user_features=users,
        user_feature_specs=[FeatureSpec(c) for c in ("gender", "age", "occupation", "zip")],
        item_features=items,
        item_feature_specs=item_specs,
    )


_MELU_COLUMNS = "item title year rate released genre director writer actors plot poster".split()
_TEXT_COLUMNS = ("title", "plot", "director", "writer", "actors", "genre")


def _with_text(
    items: pd.DataFrame, specs: list[FeatureSpec], text: Sequence[str], origin: str
) -> tuple[pd.DataFrame, list[FeatureSpec]]:
    """Add ``text`` columns as text features (a column already used as a feature is copied to
    ``<name>_text``)."""
    if isinstance(text, str):
        raise DataError(
            f"item_text={text!r}: expected a list of column names; pass item_text=[{text!r}]"
        )
    used = {s.name for s in specs}
    for col in text:
        if col not in _TEXT_COLUMNS or col not in items.columns:
            avail = [c for c in _TEXT_COLUMNS if c in items.columns]
            raise DataError(
                f"item_text: column {col!r} is not a text column of {origin}; choose from "
                f"{avail}{suggest(col, avail)}"
                + (
                    ""
                    if origin == "melu-extra"
                    else "; plots, directors and actors need melu_extra=True"
                )
            )
        name = f"{col}_text" if col in used else col
        items = items.assign(**{name: items[col]})
        specs = [*specs, FeatureSpec(name, "text")]
    return items, specs


def read_melu_item_features(path: PathLike) -> pd.DataFrame:
    """Read MeLU's ``movies_extrainfos.dat`` (UTF-8, ``::``-separated, 11 columns).

    Returns:
        One row per movie with columns ``item`` (int MovieLens-1M id), ``title``, ``year`` (int),
        ``rate`` (MPAA), ``released``, ``genre``, ``director``, ``writer``, ``actors``, ``plot``,
        ``poster``. List columns stay ``", "``-separated strings; ``N/A`` becomes ``None``
        (MeLU's own code keeps it as a ``"nan"`` token).

    Raises:
        DataError: a missing file or a row without 11 fields.
    """
    path = Path(path)
    how = (
        "it is MeLU's side information (movies_extrainfos.dat of the MeLU repository, "
        "github.com/hoyeoplee/MeLU); put it in melu-extra/ beside ml-1m/, "
        "or set data.melu_extra = false (melu_extra=False in Python)"
    )
    frame = _read_double_colon(path, _MELU_COLUMNS, encoding="utf-8", how=how)
    frame = frame.where(frame != "N/A", None)
    frame["item"] = frame["item"].astype("int64")
    frame["year"] = _year_column(pd.to_numeric(frame["year"], errors="coerce"), "categorical")
    return frame


def _find_dir(root: PathLike, folder: str, marker: str, name: str) -> Path:
    """The dataset folder: ``root`` itself, ``root/folder`` or ``root/name/folder``."""
    root = Path(root)
    for cand in (root, root / folder, root / name / folder):
        if (cand / marker).is_file():
            return cand
    raise DataError(
        f"{name}: {marker} not found in {root} nor in {root / folder}; "
        + _ML_HOWTO.format(name=name)
    )


def _melu_dir(base: Path) -> Path:
    inside = base.parent / "melu-extra"
    return inside if inside.is_dir() else base / "melu-extra"


def _read_double_colon(
    path: Path, names: list[str], *, encoding: str = "latin-1", how: str = ""
) -> pd.DataFrame:
    """A small ``::``-separated file (any line ending) as a frame of strings."""
    _need(path, how or _ML_HOWTO.format(name="movielens-1m"))
    rows = []
    for i, line in enumerate(path.read_text(encoding=encoding).splitlines(), start=1):
        row = line.split("::")
        if len(row) != len(names) and line.strip():
            raise DataError(
                f"{path}, line {i}: {len(row)} '::'-separated fields, expected {len(names)} "
                f"({', '.join(names)}); the file is corrupt or not the expected version"
            )
        rows.extend([row] if line.strip() else [])
    return pd.DataFrame(rows, columns=names)


def _age_bucket(age: pd.Series) -> pd.Series:
    """Ages in years to the MovieLens-1M age codes (1: under 18, 18: 18-24, ..., 56: 56+)."""
    edges = np.array(_AGE_BUCKETS[1:])
    return pd.Series(
        np.array(_AGE_BUCKETS)[np.searchsorted(edges, age.to_numpy(), side="right")],
        index=age.index,
    )


def _year_column(years: pd.Series, kind: str) -> pd.Series:
    """Years as floats with NaN (numeric) or as Python ints with ``None`` (categorical)."""
    if kind == "numeric":
        return years.astype("float64")
    return pd.Series(
        [None if pd.isna(y) else int(y) for y in years], index=years.index, dtype=object
    )
