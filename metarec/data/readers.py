"""Readers of public recommendation datasets and of generic interaction files.

Every reader returns an :class:`~metarec.data.table.InteractionTable` built through
:meth:`InteractionTable.from_frame`, so files on disk get the same validation as frames a user
builds by hand. The data themselves are never shipped with metarec: MovieLens comes from
GroupLens (``metarec data fetch movielens-1m --root DIR``), the Amazon pairs from the DisenCDR
repository (cjx96/DisenCDR on GitHub), RecBole atomic files from RecBole's dataset collection.

The MovieLens readers live in :mod:`metarec.data.movielens` (re-exported here).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from metarec._errors import DataError, suggest
from metarec.data._reading import PathLike, _choice, _csv
from metarec.data.features import FeatureSpec
from metarec.data.movielens import (
    read_melu_item_features,
    read_movielens_1m,
    read_movielens_100k,
)
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


_AMAZON_HOWTO = (
    "the Amazon cross-domain pairs are the preprocessed files of the DisenCDR repository "
    "(github.com/cjx96/DisenCDR, folder dataset/); put its pair folders (e.g. sport_cloth/ and "
    "cloth_sport/) under root"
)
_RECBOLE_HOWTO = (
    "RecBole atomic files come from RecBole's dataset collection (recbole.io, 'Atomic Files'); "
    "put <name>.inter (and optionally .user/.item) in root"
)


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
