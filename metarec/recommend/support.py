"""Support input for the serving layer: a CSV, a DataFrame, an InteractionTable or tuples ->
validated raw rows -> encoded, padded :class:`~metarec.episodes.batch.EpisodeSet` tasks.

Raw ids are encoded with a run's :class:`~metarec.data.encoding.IdEncoder` (the data layer's);
ratings are checked against the run's feedback kind and rating scale. Every error names the
argument, the value, the rule and the fix.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from metarec._errors import ConfigError, DataError, py, suggest
from metarec._io.paths import special_file
from metarec.data.encoding import IdEncoder
from metarec.data.table import Columns, InteractionTable

__all__ = [
    "check_support_ratings",
    "read_support",
    "SupportRows",
    "SupportTasks",
    "parse_support",
    "group_tasks",
    "encoded_tasks",
    "encode_items",
    "pad_tasks",
    "fit_users",
    "as_list",
    "is_seq",
    "check_lr",
    "UnknownItems",
]

UnknownItems = Literal["error", "fallback"]


def read_support(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a support CSV with a header row ``user,item,rating`` (extra columns are ignored).

    Raises:
        DataError: the file is missing, empty, has no header, or lacks one of the columns.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "support.csv").write_text("user,item,rating,note\\nalice,17,5,liked\\nalice,3,1,\\n")
        >>> read_support(d / "support.csv")
            user item  rating
        0  alice   17       5
        1  alice    3       1
        >>> _ = (d / "clicks.csv").write_text("user,item\\nalice,17\\n")
        >>> read_support(d / "clicks.csv")
        Traceback (most recent call last):
        ...
        metarec._errors.DataError: support='...clicks.csv': has columns ['user', 'item'], no 'rating'; ...
    """
    p = Path(path)
    kind = special_file(p)
    if kind is not None:
        raise DataError(
            f"support={str(p)!r}: is {kind}, not a regular file; pass a CSV file with columns user,item,rating"
        )
    if not p.is_file():
        raise DataError(
            f"support={str(p)!r}: file not found; pass a CSV with columns user,item,rating"
        )
    try:
        df = pd.read_csv(p, dtype={"user": str, "item": str}, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"support={str(p)!r}: the file is empty; it needs a header row 'user,item,rating'"
        ) from None
    cols = [str(c).strip() for c in df.columns]
    df.columns = cols
    missing = [c for c in ("user", "item", "rating") if c not in cols]
    if missing:
        headerless = all(_looks_numeric(c) for c in cols)
        why = (
            "has no header row"
            if headerless
            else f"has columns {cols}, no {missing[0]!r}{suggest(missing[0], cols)}"
        )
        raise DataError(
            f"support={str(p)!r}: {why}; the first line must be the header 'user,item,rating' "
            "followed by one interaction per line"
        )
    return df[["user", "item", "rating"]]


def encode_items(
    item_ids: IdEncoder, items: Iterable[Any], unknown_items: str = "error", what: str = "items"
) -> np.ndarray:
    """Raw item ids -> indices of ``item_ids`` (``unknown_items``: ``"error"`` raises naming the
    unknown ids, ``"fallback"`` maps them to the unknown item, index 0)."""
    if unknown_items not in ("error", "fallback"):
        raise ConfigError(
            f"unknown_items={unknown_items!r}: choose 'error' or 'fallback'"
            f"{suggest(str(unknown_items), ('error', 'fallback'))}"
        )
    raw = (
        items
        if isinstance(items, (np.ndarray, pd.Series))
        else np.asarray(as_list(items), dtype=object)
    )
    idx = item_ids.encode(raw)
    if unknown_items == "error" and (idx == 0).any():
        bad = pd.unique(np.asarray(raw, dtype=object)[idx == 0])
        shown = ", ".join(repr(py(b)) for b in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise DataError(
            f"{what}: {len(bad)} item id(s) not in the run's item catalogue ({shown}); the model has no "
            "embedding and no side features for them; drop them, or pass unknown_items='fallback' "
            "(--unknown-items fallback) to score them as the unknown item (index 0)"
        )
    return idx


def pad_tasks(
    tcode: np.ndarray, n_tasks: int, uidx: np.ndarray, iidx: np.ndarray, ratings: np.ndarray
):
    """Rows grouped by task into padded ``(T, N)`` arrays, in row order within a task (vectorised)."""
    counts = np.bincount(tcode, minlength=n_tasks)
    order = np.argsort(tcode, kind="stable")
    pos = np.arange(len(order)) - np.repeat(
        np.cumsum(counts) - counts, counts
    )  # position within its task
    t = tcode[order]
    width = max(int(counts.max()), 1)
    users = np.zeros((n_tasks, width), np.int64)  # (tasks, support)
    items = np.zeros((n_tasks, width), np.int64)
    targets = np.zeros((n_tasks, width), np.float64)
    mask = np.zeros((n_tasks, width), bool)
    users[t, pos], items[t, pos], targets[t, pos], mask[t, pos] = (
        uidx[order],
        iidx[order],
        ratings[order],
        True,
    )
    return users, items, targets, mask


class SupportRows(NamedTuple):
    """Validated raw support rows: ``users``, ``items`` (object arrays), ``ratings`` (float64)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray


def parse_support(
    support: Any, columns: Any, user: Any, feedback: str, scale: tuple[float, float] | None
) -> SupportRows:
    """Any accepted support form -> validated raw arrays (``user`` fills or filters the user ids)."""
    if isinstance(support, InteractionTable):
        df = support.to_frame(raw_ids=True)
        u, i, r = _objects(df["user"]), _objects(df["item"]), df["rating"].to_numpy()
    elif isinstance(support, pd.DataFrame):
        u, i, r = _columns(support, columns, user is not None, feedback)
    elif isinstance(support, (list, tuple)) or (
        isinstance(support, np.ndarray) and support.ndim == 2
    ):
        u, i, r = _from_tuples(list(support), user)
    else:
        raise DataError(
            f"support: expected a DataFrame, an InteractionTable or a list of (user, item, rating) tuples, "
            f"got {type(support).__name__}; e.g. meta.adapt([('u1', 'i9', 4.0)])"
        )
    if u is None:
        u = np.empty(len(i), dtype=object)
        u[:] = [user] * len(i)
    elif user is not None and len(u):
        keep = IdEncoder([user], name="user").encode(u) > 0
        u, i, r = u[keep], i[keep], r[keep]
    for role, ids in (("user", u), ("item", i)):
        miss = pd.isna(ids) if len(ids) else np.zeros(0, bool)
        if miss.any():
            raise DataError(
                f"support {role} ids: {int(miss.sum())} missing, first at row {int(np.flatnonzero(miss)[0])}; "
                f"every interaction needs a {role}; drop those rows"
            )
    ratings = _numbers(r)
    check_support_ratings(ratings, feedback, scale)
    _warn_repeats(u, i)
    return SupportRows(u, i, ratings)


_FEW_ROWS = 1000
"""Up to this many support rows are checked for repeats with a dict instead of pandas."""


def check_support_ratings(
    ratings: np.ndarray, feedback: str, scale: tuple[float, float] | None
) -> None:
    """Refuse support ratings the run cannot read: not 0/1 with implicit feedback, or outside
    the run's ``rating_scale`` with explicit feedback (the message names the row and the fix)."""
    if feedback == "implicit" and not np.isin(ratings, (0.0, 1.0)).all():
        k = int(np.flatnonzero(~np.isin(ratings, (0.0, 1.0)))[0])
        raise DataError(
            f"support ratings: {ratings[k]:g} at row {k}: this run has implicit feedback, ratings must be 0 "
            "or 1; binarise them first (e.g. rating >= 4)"
        )
    if feedback == "explicit" and scale is not None:
        off = (ratings < scale[0]) | (ratings > scale[1])
        if off.any():
            k = int(np.flatnonzero(off)[0])
            raise DataError(
                f"support ratings: {ratings[k]:g} at row {k} is outside the run's rating_scale="
                f"({scale[0]:g}, {scale[1]:g}); fix or clip the ratings"
            )


def _warn_repeats(users: np.ndarray, items: np.ndarray) -> None:
    """Warn (saying what is done) when a user rates the same item more than once."""
    if len(items) < 2:
        return
    if len(items) <= _FEW_ROWS:  # one user's support (the serving path): a dict, no DataFrame
        counts = Counter(zip(map(str, users.tolist()), map(str, items.tolist())))
        if len(counts) == len(items):
            return
        rep = [(pair, n) for pair, n in counts.most_common() if n > 1]
        (uid, iid), n = rep[0]
        n_rep = len(rep)
    else:
        pairs = pd.DataFrame({"u": users.astype(str), "i": items.astype(str)})
        vc = pairs.value_counts()
        many = vc[vc > 1]
        if not len(many):
            return
        (uid, iid), n, n_rep = many.index[0], int(many.iloc[0]), len(many)
    if n_rep:
        warnings.warn(
            f"support: user {uid!r} rates item {iid!r} {n} times ({n_rep} repeated (user, item) pair(s) in "
            "all); each row is used as its own support example, as given; drop the repeats (e.g. keep the "
            "last rating) if that is not what you mean",
            UserWarning,
            stacklevel=3,
        )


def _numbers(r: Any) -> np.ndarray:
    try:
        out = np.asarray(r, dtype=np.float64)
    except (TypeError, ValueError):
        out = pd.to_numeric(pd.Series(r), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"support ratings: {py(np.asarray(r, dtype=object)[k])!r} at row {k} is not a finite number; "
            "ratings must be numbers; clean or drop those rows"
        )
    return out


def _objects(x: Any) -> np.ndarray:
    out = np.empty(len(x), dtype=object)
    out[:] = list(x.tolist() if hasattr(x, "tolist") else x)
    return out


def _columns(frame: pd.DataFrame, columns: Any, user_given: bool, feedback: str):
    c: dict[str, str | None]
    if columns is None:
        c = {"user": "user", "item": "item", "rating": "rating"}
    elif isinstance(columns, Columns):
        c = {"user": columns.user, "item": columns.item, "rating": columns.rating}
    elif isinstance(columns, Mapping):
        unknown = [k for k in columns if k not in ("user", "item", "rating")]
        if unknown:
            raise ConfigError(
                f"columns: unknown role {unknown[0]!r}; roles are 'user', 'item', 'rating'"
                f"{suggest(unknown[0], ('user', 'item', 'rating'))}; pass e.g. columns={{'user': 'uid'}}"
            )
        c = {"user": "user", "item": "item", "rating": "rating", **dict(columns)}
    else:
        raise ConfigError(f"columns: expected Columns(...) or a dict, got {type(columns).__name__}")
    out: dict[str, Any] = {}
    for role, col in c.items():
        if col is not None and col in frame.columns:
            out[role] = frame[col].to_numpy()
        elif role == "user" and user_given:
            out[role] = None
        elif role == "rating" and col is None and feedback == "implicit":
            out[role] = np.ones(len(frame))
        elif len(frame.columns) == 0 and len(frame) == 0:
            out[role] = (
                np.zeros(0)
                if role == "rating"
                else None
                if role == "user"
                else np.zeros(0, dtype=object)
            )
        else:
            raise DataError(
                f"support columns.{role}={col!r}: column not found; the frame has {list(frame.columns)}"
                f"{suggest(str(col), [str(x) for x in frame.columns])}; pass columns={{{role!r}: <the right name>}}"
            )
    users = None if out["user"] is None else _objects(out["user"])
    return users, _objects(out["item"]), out["rating"]


def _from_tuples(rows: list[Any], user: Any):
    if not rows:
        return (
            (None if user is not None else np.zeros(0, dtype=object)),
            np.zeros(0, dtype=object),
            np.zeros(0),
        )
    lens = {len(r) if isinstance(r, (tuple, list, np.ndarray)) else -1 for r in rows}
    if lens == {3}:
        u, i, r = zip(*rows, strict=True)
        return _objects(u), _objects(i), r
    if lens == {2} and user is not None:
        i, r = zip(*rows, strict=True)
        return None, _objects(i), r
    raise DataError(
        f"support[0]={rows[0]!r}: expected (user, item, rating) tuples, all of length 3 (or (item, rating) pairs "
        "with user=...); e.g. meta.adapt([('u1', 'i9', 4.0)]) or meta.adapt([('i9', 4.0)], user='u1')"
    )


def fit_users(raw: list[Any]) -> IdEncoder:
    try:
        return IdEncoder.fit(raw, name="user")
    except ValueError as e:
        raise DataError(
            f"support user ids: {e}; the same user is spelled two ways (e.g. 5 and '5'); use one type"
        ) from None


def as_list(x: Any) -> list[Any]:
    if isinstance(x, (pd.Series, pd.Index, np.ndarray)):
        return list(x.tolist())
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        return [x]
    return list(x)


def is_seq(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray, pd.Series, pd.Index))


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def check_lr(lr: Any) -> None:
    if lr is not None and (
        isinstance(lr, bool)
        or not isinstance(lr, (int, float))
        or not (math.isfinite(lr) and lr > 0)
    ):
        raise ConfigError(
            f"lr={lr!r}: must be a finite number > 0; pass e.g. lr=0.01, or None for the run's default"
        )


class SupportTasks(NamedTuple):
    """Support rows grouped into tasks.

    ``users``: encoder of the raw users that brought support (or were named); ``ucode`` their
    code per row; ``uidx`` / ``iidx`` the run's user / item indices per row; ``ratings``;
    ``tcode`` the task of each row; ``n_tasks``; ``task_of`` ``(len(users),)`` the task row of each
    user code (``default`` for users without one).
    """

    users: IdEncoder
    ucode: np.ndarray
    uidx: np.ndarray
    iidx: np.ndarray
    ratings: np.ndarray
    tcode: np.ndarray
    n_tasks: int
    task_of: np.ndarray
    default: int


def group_tasks(
    rows: SupportRows,
    user_ids: IdEncoder,
    item_ids: IdEncoder,
    *,
    per: str = "user",
    unknown_items: str = "error",
    extra_user: Any = None,
    stacklevel: int = 4,
) -> SupportTasks:
    """One task per user with rows (``per="user"``, in encoder order; the others get task
    ``default = n_tasks``) or one task over every row (``per="domain"``). Empty support warns."""
    if per not in ("user", "domain"):
        raise ConfigError(
            f"per={per!r}: choose 'user' (one task per user) or 'domain' (one task over every row)"
            f"{suggest(str(per), ('user', 'domain'))}"
        )
    iidx = encode_items(item_ids, rows.items, unknown_items, what="support")
    raw_users = rows.users
    users = fit_users(list(raw_users) + ([] if extra_user is None else [extra_user]))
    ucode = users.encode(raw_users)  # (rows,) in 1..U
    if len(raw_users) == 0:
        who = "" if extra_user is None else f" for user {py(extra_user)!r}"
        warnings.warn(
            f"support is empty{who}: no interaction to adapt on; the meta-learned initialisation is used "
            "(pass at least one (user, item, rating) row to personalise)",
            UserWarning,
            stacklevel=stacklevel,
        )
    uidx = user_ids.encode(raw_users)
    n_users = len(users) - 1
    if per == "domain":  # one task over every row; every user is served by it
        n_tasks = 1 if len(raw_users) else 0
        tcode = np.zeros(len(raw_users), np.int64)
        task_of, default = np.zeros(n_users + 1, np.int64), 0
    else:
        has = np.zeros(n_users + 1, bool)
        has[ucode] = True
        has[0] = False
        n_tasks = int(has.sum())
        task_of = np.where(has, np.cumsum(has) - 1, n_tasks).astype(np.int64)  # (n_users + 1,)
        tcode, default = task_of[ucode], n_tasks
    return SupportTasks(users, ucode, uidx, iidx, rows.ratings, tcode, n_tasks, task_of, default)


def encoded_tasks(
    user_ids: IdEncoder,
    users: Sequence[Any],
    items: Sequence[np.ndarray],
    ratings: Sequence[np.ndarray],
) -> SupportTasks:
    """Tasks of support rows already validated and encoded (a server's requests): user ``b``
    (distinct raw ids) brings item indices ``items[b]`` ``(S_b,)`` of the run's item encoder and
    ``ratings[b]`` ``(S_b,)``; a user without rows gets the default task (the initialisation).
    Nothing is parsed or encoded again (:meth:`~metarec.recommend.run_model.RunModel.adapt_encoded`)."""
    enc = fit_users(list(users))
    counts = np.asarray([len(i) for i in items], np.int64)
    codes = enc.encode(np.asarray(list(users), dtype=object))  # (B,) in 1..U
    ucode = np.repeat(codes, counts)  # (rows,)
    uidx = np.repeat(user_ids.encode(np.asarray(list(users), dtype=object)), counts)
    iidx = (
        np.concatenate([np.asarray(i, np.int64) for i in items])
        if len(items)
        else np.zeros(0, np.int64)
    )
    vals = (
        np.concatenate([np.asarray(r, np.float64) for r in ratings])
        if len(ratings)
        else np.zeros(0)
    )
    n_users = len(enc) - 1
    has = np.zeros(n_users + 1, bool)
    has[ucode] = True
    has[0] = False
    n_tasks = int(has.sum())
    task_of = np.where(has, np.cumsum(has) - 1, n_tasks).astype(np.int64)  # (n_users + 1,)
    return SupportTasks(enc, ucode, uidx, iidx, vals, task_of[ucode], n_tasks, task_of, n_tasks)
