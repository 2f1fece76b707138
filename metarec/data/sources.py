"""Interaction tables from a list of files: one file per domain and/or per split part.

A dataset often ships as several files: one per domain (``books.dat``, ``movies.dat``), one per
part of its own split (``train.txt``, ``valid.txt``, ``test.txt``), or both. :func:`read_files`
reads such a list, each entry a :class:`SourceFile` naming its ``domain`` and ``part``, with one
set of reading options (format, separator, header, column names) and returns one validated
:class:`~metarec.data.table.InteractionTable` whose ``parts`` record the dataset's split.

Ids keep their exact string form (``1``, ``01`` and ``001`` are three users) unless declared
numeric (``ids="numeric"``, then ``01`` is user 1). Ids that mean different things in different
domains are namespaced (``namespace=("item",)`` makes item ``7`` of domain ``books`` the id
``"books:7"``). :func:`read_shared_below_k` reads the cross-domain layout in which user ids
below ``K`` are shared by the domains and ids from ``K`` on are local to their domain.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.dat").write_text("1\\t7\\t5\\n01\\t7\\t3\\n")
>>> _ = (d / "b.dat").write_text("1\\t7\\t4\\n")
>>> t = read_files([SourceFile(d / "a.dat", domain="a"), SourceFile(d / "b.dat", domain="b")],
...                format="tsv", names=["user", "item", "rating"], header=False, namespace=("item",))
>>> t.n_users - 1, sorted(t.item_ids.values)
(2, ['a:7', 'b:7'])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from metarec._errors import DataError, py, suggest
from metarec.data.files import normalize_sep, read_frame, separator_hint, sniff_separator
from metarec.data.table import PARTS, Columns, Feedback, InteractionTable

__all__ = ["IdKind", "SourceFile", "read_files", "read_shared_below_k"]

IdKind = Literal["string", "numeric"]
_ID_KINDS = ("string", "numeric")
_NAMESPACED = ("user", "item")
_INT = re.compile(r"\s*[+-]?\d+\s*")
_I64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class SourceFile:
    """One interaction file of a dataset.

    Args:
        path: the file.
        domain: the domain of every row of the file (``None``: no domain, or the file's own
            domain column).
        part: the part of the dataset's own split the rows belong to: ``"train"``,
            ``"valid"`` or ``"test"`` (``None``: no predefined split).
    """

    path: str | Path
    domain: str | None = None
    part: str | None = None


def _as_source(f: Any, i: int) -> SourceFile:
    if isinstance(f, SourceFile):
        return f
    if isinstance(f, (str, Path)):
        return SourceFile(f)
    if isinstance(f, Mapping):
        unknown = set(f) - {"path", "domain", "part"}
        if unknown or "path" not in f:
            raise DataError(
                f"files[{i}]={dict(f)!r}: an entry needs 'path' and may have 'domain' and 'part'"
            )
        return SourceFile(f["path"], f.get("domain"), f.get("part"))
    path = getattr(f, "path", None)
    if path is None:
        raise DataError(
            f"files[{i}]={f!r}: expected a path, a SourceFile or a table with path, domain, part"
        )
    return SourceFile(path, getattr(f, "domain", None), getattr(f, "part", None))


def read_files(
    files: Sequence[SourceFile | str | Path | Mapping[str, Any]],
    columns: Columns | None = None,
    *,
    format: str | None = None,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    ids: IdKind = "string",
    namespace: Sequence[str] = (),
    feedback: Feedback = "explicit",
    rating_scale: tuple[float, float] | None = (1.0, 5.0),
    read_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> InteractionTable:
    """Read interaction files into one table.

    Args:
        files: the files, each a :class:`SourceFile` (or a path, or a mapping with ``path``,
            ``domain``, ``part``); rows of a file with a ``domain`` get that domain, rows of a
            file with a ``part`` that part of the dataset's own split.
        columns: which columns are user, item, rating, timestamp (and domain / part when the
            files carry them as columns). With implicit feedback and the default rating column
            ``"rating"`` absent from the files, every row is a positive.
        format: ``"csv"``, ``"tsv"`` or ``"parquet"`` for every file (``None``: from each
            extension); any extension (``.dat``) reads with an explicit format.
        sep: separator of text files (any string, e.g. ``"::"``); ``"auto"`` sniffs it from the
            first lines; ``None``: the format's default; the words ``\\t``, ``tab``, ``comma``,
            ``semicolon``, ``pipe`` and ``space`` (easy to type in ``--set``) mean those characters.
        header: text files start with a header line; ``False`` with ``names`` for header-less files.
        names: column names of header-less files (e.g. ``["user", "item", "rating"]``).
        ids: ``"string"`` keeps ids exactly as written; ``"numeric"`` declares user and item ids
            integers (``01`` is ``1``; a non-integer id is an error).
        namespace: ``"user"`` and/or ``"item"``: prefix those ids with their domain
            (``"books:7"``), for ids that are local to a domain.
        feedback, rating_scale, **kwargs: as in :meth:`InteractionTable.from_frame`
            (``duplicates``, side features ...).
        read_options: extra keyword arguments of ``pandas.read_csv`` / ``read_parquet``.

    Raises:
        DataError: a missing, corrupt or mis-separated file, a missing column (with a
            "wrong separator?" hint when another separator fits), inconsistent entries, or any
            validation failure of :meth:`InteractionTable.from_frame`.
    """
    frame, cols = _frames(files, columns, format=format, sep=sep, header=header, names=names, ids=ids,
                          namespace=namespace, feedback=feedback, read_options=read_options)  # fmt: skip
    if len(frame) == 0:  # the table would say "frame: no interactions", not which file
        paths = [str(_as_source(f, i).path) for i, f in enumerate(files)]
        raise DataError(
            f"{', '.join(repr(p) for p in paths)}: no interaction rows (only a header, or empty); "
            "pass a file with one interaction per line"
        )
    return InteractionTable.from_frame(
        frame, cols, feedback=feedback, rating_scale=rating_scale, **kwargs
    )


def read_shared_below_k(
    files: Sequence[SourceFile | str | Path | Mapping[str, Any]],
    shared_users: int | None,
    columns: Columns | None = None,
    *,
    namespace_items: bool = True,
    feedback: Feedback = "implicit",
    rating_scale: tuple[float, float] | None = None,
    duplicates: str = "error",
    **options: Any,
) -> InteractionTable:
    """Read the cross-domain layout "shared user ids below K, domain-local ids from K on".

    In this layout (common in preprocessed cross-domain cold-start benchmarks) user ids
    ``0..K-1`` are the users present in every domain and ids ``K, K+1, ...`` number each
    domain's other users separately, so user ``K`` of one domain is not user ``K`` of another.
    Ids below ``K`` stay as they are; ids from ``K`` on are namespaced by domain
    (``"books:K"``); items are namespaced by domain unless ``namespace_items=False``.

    Args:
        files: one or more files per domain (every entry needs a ``domain``), optionally with
            ``part`` for the dataset's own split; as in :func:`read_files`.
        shared_users: ``K``, the number of shared users. It cannot be read off the ids (the
            domain-local ids of two domains overlap as numbers just as shared ids do), so
            ``None`` is refused rather than guessed.
        columns, feedback, rating_scale, duplicates: as in :func:`read_files`.
        **options: reading options of :func:`read_files` (``format``, ``sep``, ``header``,
            ``names``, ``read_options``); user and item ids are read as integers.

    Raises:
        DataError: ``shared_users`` missing or not a positive integer, fewer than two
            domains, non-integer user ids, or ids that contradict the layout (an id below
            ``K`` in only one domain: ``K`` is too large or the files are in another layout).
            A ``K`` too large by less than the smallest domain's count of local users cannot
            be detected from the ids: take ``K`` from the dataset's documentation.
    """
    entries = [_as_source(f, i) for i, f in enumerate(files)]
    doms = list(dict.fromkeys(e.domain for e in entries))
    if any(d is None for d in doms) or len(doms) < 2:
        raise DataError(
            f"shared-below-K layout: files name domains {doms}; every entry needs a domain and "
            'there must be at least two (data.files entries with domain = "...")'
        )
    if shared_users is None:
        raise DataError(
            "shared-below-K layout: data.shared_users is not set; the number K of shared users "
            "cannot be read off the ids (domain-local ids of two domains overlap as numbers "
            "exactly as shared ids do), so it is not guessed; set data.shared_users = K (the users "
            "with ids 0..K-1 are in every domain; shared_users= in Python), from the dataset's "
            "documentation"
        )
    if (
        isinstance(shared_users, bool)
        or not isinstance(shared_users, (int, np.integer))
        or shared_users < 1
    ):
        raise DataError(
            f"shared_users={shared_users!r}: must be a positive integer K (ids 0..K-1 are shared)"
        )
    k = int(shared_users)
    namespace = ("item",) if namespace_items else ()
    options = {**options, "ids": "numeric"}
    frame, cols = _frames(entries, columns, namespace=namespace, feedback=feedback, **options)
    user = frame[cols.user].to_numpy()
    dom = frame[cols.domain].to_numpy()
    if (user < 0).any():
        raise DataError(
            f"shared-below-K layout: user id {py(user[user < 0][0])} is negative; ids are 0, 1, ..."
        )
    below = user < k
    if not below.any():
        raise DataError(
            f"shared_users={k}: no user id is below {k}; every user would be domain-local; check "
            "data.shared_users"
        )
    per_dom = (
        pd.DataFrame({"u": user[below], "d": dom[below]})
        .drop_duplicates()
        .groupby("u")["d"]
        .nunique()
    )
    lonely = per_dom[per_dom < len(doms)]
    if len(lonely):
        raise DataError(
            f"shared_users={k}: {len(lonely)} of the {len(per_dom)} ids below {k} are not in every "
            f"domain (e.g. user {py(lonely.index[0])}); shared users are in all of {doms}; K is "
            "too large, or the files are not in the shared-below-K layout (every user shared: read "
            "them with data.files and no shared_users)"
        )
    raw = pd.Series(user).astype(str)
    local = ~below
    raw[local] = pd.Series(dom[local]).astype(str).to_numpy() + ":" + raw[local].to_numpy()
    frame = frame.assign(**{cols.user: raw.to_numpy(dtype=object)})
    return InteractionTable.from_frame(
        frame,
        cols,
        feedback=feedback,
        rating_scale=rating_scale,
        duplicates=duplicates,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------- helpers
def _frames(
    files: Sequence[Any],
    columns: Columns | None,
    *,
    format: str | None = None,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    ids: str = "string",
    namespace: Sequence[str] = (),
    feedback: str = "explicit",
    read_options: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, Columns]:
    """Read and concatenate the files; return the frame and the column mapping to use."""
    if ids not in _ID_KINDS:
        raise DataError(
            f"ids={ids!r}: must be 'string' or 'numeric'{suggest(str(ids), _ID_KINDS)} (data.ids "
            "in the scenario)"
        )
    bad_ns = [n for n in namespace if n not in _NAMESPACED]
    if bad_ns:
        raise DataError(
            f"namespace={list(namespace)}: {bad_ns[0]!r} cannot be "
            f'namespaced{suggest(str(bad_ns[0]), _NAMESPACED)}; use "user" and/or "item" '
            '(data.namespace = ["item"])'
        )
    if isinstance(files, (str, Path)) or not len(files):
        raise DataError(
            'files: give a list of at least one file (data.files entries with path = "...")'
        )
    entries = [_as_source(f, i) for i, f in enumerate(files)]
    for i, e in enumerate(entries):
        if e.part is not None and str(e.part).lower() not in (
            "train",
            "valid",
            "validation",
            "val",
            "dev",
            "test",
        ):
            raise DataError(
                f"files[{i}] ({e.path}): part={e.part!r} is not a split part"
                f"{suggest(str(e.part), PARTS)}; parts are {list(PARTS)}"
            )
    with_part = [e.part is not None for e in entries]
    if any(with_part) and not all(with_part):
        i = with_part.index(False)
        raise DataError(
            f"files[{i}] ({entries[i].path}): no part, while other files name one; when one file is part of the "
            'dataset\'s split every file must be: give it part = "train", "valid" or "test"'
        )
    with_dom = [e.domain is not None for e in entries]
    if any(with_dom) and not all(with_dom):
        i = with_dom.index(False)
        raise DataError(
            f"files[{i}] ({entries[i].path}): no domain, while other files name one; give every "
            "file its domain"
        )
    c = columns or Columns()
    dom_col = c.domain or "domain"
    part_col = c.part or "part"
    frames = []
    for e in entries:
        path = Path(e.path)
        s = normalize_sep(sep)
        if s == "auto":
            s = sniff_separator(path, header=header) if format != "parquet" else None
            if (
                s is None
                and format != "parquet"
                and not str(path).lower().endswith((".parquet", ".pq"))
            ):
                raise DataError(
                    f"{path}: sep='auto' found no separator that splits every line alike; set "
                    "data.sep"
                )
        ids_cols = [col for col in (c.user, c.item, c.domain, c.part) if col is not None]
        f = read_frame(
            path,
            format=format,
            sep=s,
            header=header,
            names=names,
            string_columns=ids_cols,
            read_options=read_options,
        )
        f = _check_columns(
            f,
            c,
            path,
            s,
            header,
            feedback,
            entry_domain=e.domain is not None,
            entry_part=e.part is not None,
        )
        if len(f) == 0 and len(entries) > 1:  # its domain or part would silently vanish
            of = f" (domain {e.domain!r})" if e.domain is not None else ""
            raise DataError(
                f"{path}: no interaction rows (only a header, or empty){of}; every data.files "
                "entry needs interactions; fill the file, or remove its entry from data.files"
            )
        if e.domain is not None:
            if c.domain is not None and c.domain in f.columns:
                raise DataError(
                    f"{path}: the file has a domain column {c.domain!r} and its entry names "
                    f"domain={e.domain!r}; give one of them (drop data.columns.domain or the "
                    "entry's domain)"
                )
            f = f.assign(**{dom_col: str(e.domain)})
        if e.part is not None:
            if c.part is not None and c.part in f.columns:
                raise DataError(
                    f"{path}: the file has a part column {c.part!r} and its entry names "
                    f"part={e.part!r}; give one"
                )
            f = f.assign(**{part_col: str(e.part)})
        if ids == "numeric":
            for role in ("user", "item"):
                col = getattr(c, role)
                f[col] = _numeric_ids(f[col], f"{role} column {col!r}", path)
        frames.append(f)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    rating = c.rating if (c.rating is None or c.rating in frame.columns) else None
    cols = replace(
        c,
        rating=rating,
        domain=dom_col if any(with_dom) else c.domain,
        part=part_col if any(with_part) else c.part,
    )
    for role in namespace:
        if cols.domain is None:
            raise DataError(
                f"namespace=[{role!r}]: ids are namespaced by domain but the files have none; give "
                "each data.files entry a domain (or name a domain column in data.columns.domain)"
            )
        col = getattr(cols, role)
        frame[col] = (
            frame[cols.domain].astype(str).to_numpy(dtype=object)
            + ":"
            + frame[col].astype(str).to_numpy(dtype=object)
        )
    return frame, cols


def _check_columns(
    f: pd.DataFrame,
    c: Columns,
    path: Path,
    sep: str | None,
    header: bool,
    feedback: str,
    *,
    entry_domain: bool,
    entry_part: bool,
) -> pd.DataFrame:
    """Every mapped column is in the file (a missing one names the file, with a separator hint)."""
    for role in ("user", "item", "rating", "timestamp", "domain", "part"):
        col = getattr(c, role)
        if col is None or col in f.columns:
            continue
        if role == "rating" and feedback == "implicit" and col == "rating":
            continue  # implicit feedback without a rating column: every row a positive
        if (role == "domain" and entry_domain) or (role == "part" and entry_part):
            continue
        hint = separator_hint(path, sep, header=header) if sep is not None else ""
        if not hint and sep is None and f.shape[1] == 1:
            hint = separator_hint(
                path, "," if path.suffix.lower() == ".csv" else "\t", header=header
            )
        if not hint and not header and all(isinstance(x, (int, np.integer)) for x in f.columns):
            hint = (
                f"the file has no header, so its {f.shape[1]} columns are numbered; name them with "
                'data.names = ["user", "item", "rating"] (names= in Python)'
            )
        if (
            not hint
            and header
            and f.shape[1]
            and all(str(x).strip().lstrip("-").replace(".", "").isdigit() for x in f.columns)
        ):
            hint = (
                f"its first line {[str(x) for x in f.columns]} looks like data, not a header; set "
                'data.header = false and data.names = ["user", "item", ...]'
            )
        raise DataError(
            f"{path}: columns.{role}={col!r}: column not found; the file has "
            f"{[str(x) for x in f.columns]}{suggest(str(col), [str(x) for x in f.columns])}; "
            + (
                hint
                or f'set data.columns.{role} = "<the right name>" in the scenario (Columns({role}=...) in Python)'
            )
        )
    return f


def _numeric_ids(values: pd.Series, what: str, path: Path) -> pd.Series:
    """Integer ids (``int64``) of a column declared numeric; a non-integer or too large id is an error."""
    if (
        values.dtype.kind == "i" or values.isna().any() or len(values) == 0
    ):  # from_frame reports missing ids
        return values
    if values.dtype.kind == "u":
        if values.size and values.max() > _I64[1]:
            raise DataError(
                f"{path}: {what}: id {py(values.max())} is above the int64 range; leave data.ids = "
                '"string"'
            )
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        v = values.to_numpy()
        bad = ~np.isfinite(v) | (v != np.floor(v))
        if bad.any():
            k = int(np.argmax(bad))
            raise DataError(
                f"{path}: {what}: id {py(v[k])!r} at row {k} is not an integer, but data.ids = "
                '"numeric"; leave data.ids = "string" to keep ids as written'
            )
        return pd.Series(v.astype(np.int64), index=values.index)
    text = values.astype(str)
    ok = text.str.fullmatch(_INT.pattern) | values.isna()
    if not ok.all():
        k = int(np.argmax(~ok.to_numpy()))
        raise DataError(
            f"{path}: {what}: id {py(values.iloc[k])!r} at row {k} is not an integer, but data.ids "
            '= "numeric"; leave data.ids = "string" to keep ids exactly as written'
        )
    ints = [int(x) for x in text.tolist()]
    lo, hi = min(ints), max(ints)
    if lo < _I64[0] or hi > _I64[1]:
        k = ints.index(lo if lo < _I64[0] else hi)
        raise DataError(
            f"{path}: {what}: id {text.iloc[k].strip()} at row {k} is outside the int64 range; "
            'leave data.ids = "string" (ids kept as exact strings)'
        )
    return pd.Series(np.asarray(ints, dtype=np.int64), index=values.index)
