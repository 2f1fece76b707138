"""Readers of public recommendation datasets and of generic interaction files.

Every reader returns an :class:`~metarec.data.table.InteractionTable` built through
:meth:`InteractionTable.from_frame`, so files on disk get the same validation as frames a user
builds by hand. The data themselves are never shipped with metarec: MovieLens comes from
GroupLens (``metarec data fetch movielens-1m --root DIR``), the Amazon pairs from the DisenCDR
repository (cjx96/DisenCDR on GitHub), RecBole atomic files from RecBole's dataset collection.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from metarec._errors import ConfigError, DataError, suggest
from metarec.data.features import FeatureSpec
from metarec.data.sources import IdKind, SourceFile, read_files
from metarec.data.table import Columns, Feedback, InteractionTable

__all__ = [
    "AmazonPairSplit",
    "read_amazon_pair",
    "read_amazon_pair_split",
    "read_interactions",
    "read_melu_item_features",
    "read_movielens_100k",
    "read_movielens_1m",
    "read_recbole_atomic",
]

PathLike = str | Path

_ML_HOWTO = (
    "download it with `metarec data fetch {name} --root DIR` (the official GroupLens archive, "
    "https://grouplens.org/datasets/movielens/) and point data.path at DIR (root=DIR in Python)"
)
_AMAZON_HOWTO = (
    "the Amazon cross-domain pairs are the preprocessed files of the DisenCDR repository "
    "(github.com/cjx96/DisenCDR, folder dataset/); put its pair folders (e.g. sport_cloth/ and "
    "cloth_sport/) under root"
)
_RECBOLE_HOWTO = (
    "RecBole atomic files come from RecBole's dataset collection (recbole.io, 'Atomic Files'); "
    "put <name>.inter (and optionally .user/.item) in root"
)

# MovieLens-1M age codes (lower bound of each bucket); ML-100K ages are bucketed the same way.
_AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


# ---------------------------------------------------------------------- MovieLens
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
                f"item_text: column {col!r} is not a text column of {origin}; choose from {avail}{suggest(col, avail)}"
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
        "github.com/hoyeoplee/MeLU); put it in melu-extra/ beside ml-1m/, or set data.melu_extra = false (melu_extra=False in Python)"
    )
    frame = _read_double_colon(path, _MELU_COLUMNS, encoding="utf-8", how=how)
    frame = frame.where(frame != "N/A", None)
    frame["item"] = frame["item"].astype("int64")
    frame["year"] = _year_column(pd.to_numeric(frame["year"], errors="coerce"), "categorical")
    return frame


# ---------------------------------------------------------------------- RecBole
_RECBOLE_KINDS = {"token": "categorical", "token_seq": "multi", "float": "numeric"}


def read_recbole_atomic(
    root: PathLike,
    name: str,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str | None = "rating",
    time_field: str | None = "timestamp",
    feedback: Feedback | None = None,
    rating_scale: tuple[float, float] | None = None,
    user_features: Sequence[str] | None = None,
    item_features: Sequence[str] | None = None,
) -> InteractionTable:
    """Read RecBole atomic files ``<name>.inter`` and, when present, ``<name>.user``/``.item``.

    Headers are typed (``user_id:token``, ``rating:float``, ``genre:token_seq``): ``token``
    becomes a categorical feature, ``token_seq`` a multi-valued one (space-separated), ``float``
    a numeric one; ``float_seq`` columns are skipped. Ids are read as strings (RecBole tokens).

    Args:
        root: folder holding the files; name: the dataset name (``"ml-100k"``).
        user_field, item_field, rating_field, time_field: RecBole's field names (its defaults);
            ``rating_field`` / ``time_field`` are ignored when the ``.inter`` file lacks them.
        feedback: ``None``: ``"explicit"`` when there is a rating field, else ``"implicit"``.
        rating_scale: ``None``: the observed (min, max) rating.
        user_features, item_features: feature fields to keep (``None``: every typed field).

    Raises:
        DataError: a missing file, an unknown field, or a header without ``:type``.
    """
    base = Path(root)
    inter, inter_types = _read_atomic(base / f"{name}.inter")
    rating = rating_field if rating_field in inter_types else None
    fb: Feedback = feedback or ("explicit" if rating else "implicit")
    if rating and rating_scale is None and fb == "explicit":  # from_frame reports bad ratings
        r = pd.to_numeric(inter[rating], errors="coerce")
        rating_scale = (float(min(r.min(), r.max() - 1)), float(r.max()))
    ts = time_field if time_field in inter_types else None
    if ts:
        inter[ts] = pd.to_numeric(inter[ts], errors="coerce")
    kwargs: dict[str, Any] = {}
    for what, field, keep in (
        ("user", user_field, user_features),
        ("item", item_field, item_features),
    ):
        path = base / f"{name}.{what}"
        if not path.is_file():
            continue
        frame, types = _read_atomic(path)
        chosen = (
            [c for c in types if c != field and types[c] in _RECBOLE_KINDS]
            if keep is None
            else list(keep)
        )
        for c in chosen:
            if c not in types or types[c] not in _RECBOLE_KINDS:
                raise DataError(
                    f"{what}_features: field {c!r} is not a token, token_seq or float field of {path}; "
                    f"fields are {types}{suggest(c, types)}"
                )
            if types[c] == "float":
                frame[c] = pd.to_numeric(frame[c], errors="coerce")
        kwargs[f"{what}_features"] = frame
        kwargs[f"{what}_feature_specs"] = [
            FeatureSpec(c, _RECBOLE_KINDS[types[c]], sep=" ")  # type: ignore[arg-type]
            for c in chosen
        ]
        kwargs[f"{what}_feature_id"] = field
    return InteractionTable.from_frame(
        inter,
        Columns(user=user_field, item=item_field, rating=rating, timestamp=ts),
        feedback=fb,
        rating_scale=rating_scale,
        **kwargs,
    )


def _read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    frame = _csv(path, _RECBOLE_HOWTO, sep="\t", dtype=str, keep_default_na=False, na_values=[""],
                 quoting=csv.QUOTE_NONE, encoding="utf-8")  # fmt: skip
    types: dict[str, str] = {}
    for col in frame.columns:
        field, sep, kind = str(col).rpartition(":")
        if not sep:
            raise DataError(
                f"{path}: header {col!r} has no type; RecBole atomic headers are 'name:type' "
                "with type token, token_seq, float or float_seq"
            )
        types[field] = kind
    frame.columns = list(types)
    return frame, types


# ---------------------------------------------------------------------- Amazon (DisenCDR)
class AmazonPairSplit(NamedTuple):
    """Training table of an Amazon pair and its held-out test rows (raw ids)."""

    train: InteractionTable
    test: pd.DataFrame


def read_amazon_pair(
    root: PathLike, pair: str, *, which: Literal["train", "test", "test_original"] = "train"
) -> InteractionTable:
    """Read one DisenCDR Amazon cross-domain pair as an implicit-feedback table.

    Args:
        root: the folder holding the pair folders (``sport_cloth/``, ``cloth_sport/``, ...).
        pair: ``"X_Y"`` (or ``"X-Y"``): domain X from folder ``X_Y/``, domain Y from ``Y_X/``.
        which: which file of each folder: ``"train"``, ``"test"`` or ``"test_original"``.

    Returns:
        Every row a positive (rating 1), a ``domain`` column (``X``/``Y``); users are shared
        inside a pair, item ids are per domain and namespaced ``"X:<item>"`` so they never collide.

    Raises:
        DataError: a missing folder or file, with where the data come from.
    """
    frame = _amazon_frame(root, pair, which)
    return InteractionTable.from_frame(
        frame, Columns(rating=None, domain="domain"), feedback="implicit"
    )


def read_amazon_pair_split(root: PathLike, pair: str) -> AmazonPairSplit:
    """The training table of a pair and its ``test.txt`` rows for later protocols.

    ``test`` has columns ``user`` (int), ``item`` (namespaced like the table's raw item ids,
    so ``train.item_ids.encode(test["item"])`` works) and ``domain``.
    """
    return AmazonPairSplit(read_amazon_pair(root, pair), _amazon_frame(root, pair, "test"))


def _amazon_frame(root: PathLike, pair: str, which: str) -> pd.DataFrame:
    _choice("which", which, ("train", "test", "test_original"))
    base = Path(root)
    parts = re.split(r"[_-]", pair)
    if len(parts) != 2 or not all(parts):
        raise DataError(f"pair={pair!r}: name two domains, e.g. pair='sport_cloth'")
    frames = []
    for x, y in (parts, parts[::-1]):
        folder = base / f"{x}_{y}"
        if not folder.is_dir():
            have = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            raise DataError(
                f"pair={pair!r}: folder {folder} not found{suggest(folder.name, have)}; "
                f"available: {have}; {_AMAZON_HOWTO}"
            )
        df = _csv(folder / f"{which}.txt", _AMAZON_HOWTO, sep="\t", header=None, usecols=[0, 1],
                  names=["user", "item"], dtype="int64")  # fmt: skip
        df["item"] = f"{x}:" + df["item"].astype(str)
        df["domain"] = x
        frames.append(df)
    if which == "train":
        _check_every_user_shared(frames, parts, base)
    return pd.concat(frames, ignore_index=True)


def _check_every_user_shared(frames: list[pd.DataFrame], parts: list[str], base: Path) -> None:
    """DisenCDR's pairs share every user: the two training files hold the same user ids.

    Another common layout numbers shared users ``0..K-1`` and each domain's other users from
    ``K`` on; read as DisenCDR's, it would merge different people who share a number. Refuse it.
    """
    a, b = (np.unique(f["user"].to_numpy()) for f in frames)
    if a.shape == b.shape and np.array_equal(a, b):
        return
    only_a, only_b = np.setdiff1d(a, b), np.setdiff1d(b, a)
    x, y = parts
    raise DataError(
        f"pair={x}_{y} under {base}: the two domains' train.txt hold different users ({a.shape[0]} in {x}, "
        f"{b.shape[0]} in {y}; {only_a.shape[0]} only in {x}, {only_b.shape[0]} only in {y}); DisenCDR's pairs share "
        "every user, so these files are in another layout; if user ids below some K are shared and ids from K on "
        'are local to each domain, read them with data.source = "shared_below_k", data.shared_users = K and one '
        "data.files entry per domain (metarec.data.sources.read_shared_below_k in Python)"
    )


# ---------------------------------------------------------------------- generic files
def read_interactions(
    path: PathLike,
    columns: Columns,
    *,
    sep: str | None = None,
    format: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    ids: IdKind = "string",
    feedback: Feedback = "explicit",
    rating_scale: tuple[float, float] | None = (1.0, 5.0),
    read_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> InteractionTable:
    """Read a CSV, TSV or Parquet file of interactions through a column mapping.

    One file of :func:`metarec.data.sources.read_files` (which reads several, one per domain
    or split part).

    Args:
        path: ``.csv`` (``,``), ``.tsv`` / ``.txt`` (tab), optionally compressed
            (``.csv.gz`` ...), or ``.parquet`` / ``.pq`` (needs ``pip install metarec[parquet]``);
            any other name with an explicit ``format``.
        columns: which columns are user, item, rating, domain, timestamp (and part).
        sep: field separator of a text file (default from the format; ``"auto"`` sniffs it).
        format: ``"csv"``, ``"tsv"`` or ``"parquet"`` (``None``: from the extension).
        header: the first line names the columns; ``False`` for header-less files (with ``names``).
        names: column names of a header-less file.
        ids: ``"string"`` (ids exactly as written: ``01`` is not ``1``) or ``"numeric"``.
        feedback, rating_scale: as in :meth:`InteractionTable.from_frame`; with implicit
            feedback and no ``rating`` column every row is a positive.
        read_options: extra keyword arguments of ``pandas.read_csv`` / ``read_parquet``.
        **kwargs: passed on to :meth:`InteractionTable.from_frame` (``duplicates``,
            ``user_features``, ``item_feature_specs`` ...).

    Raises:
        DataError: a missing, corrupt or unsupported file, a missing column (with a "wrong
            separator?" hint), or any validation failure.
    """
    return read_files(
        [SourceFile(path)], columns, format=format, sep=sep, header=header, names=names, ids=ids,
        feedback=feedback, rating_scale=rating_scale, read_options=read_options, **kwargs,
    )  # fmt: skip


# ---------------------------------------------------------------------- helpers
def _choice(arg: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{arg}={value!r}: must be one of {choices}{suggest(str(value), choices)}"
        )


def _need(path: Path, how: str) -> Path:
    """``path`` if it is a file, else a DataError naming it and how to obtain the data."""
    if not path.is_file():
        raise DataError(f"file not found: {path}; {how}")
    return path


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


def _csv(path: Path, how: str, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` of a file that must exist, parse errors turned into DataError."""
    _need(path, how=how)
    try:
        return pd.read_csv(path, **kwargs)
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(
            f"{path}: cannot parse the file ({e}); it is corrupt or not the expected layout"
        ) from e


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
