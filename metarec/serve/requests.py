"""Request bodies of ``metarec serve`` -> validated :class:`Job` s (or an error with the message).

A ``POST /recommend`` body::

    {"user": "u", "k": 10, "support": [{"item": "1", "rating": 5}, ...], "domain": "optional"}

and a ``POST /predict`` body::

    {"user": "u", "support": [...], "items": ["1", "7"], "clip": true}

The checks on the support rows and ids are those of ``metarec recommend`` (the same rules and
the same messages: unknown catalogue items, missing ids, non-finite ratings, ratings outside the
run's scale or not 0/1 for implicit feedback, ``k >= 1``), so a client sees what the command line
would print. A request never names a file: a support given as a string (a path) is refused.
Sizes are bounded (:class:`Limits`); a body over a bound is a :class:`PayloadTooLarge` (HTTP 413).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from metarec._errors import ConfigError, DataError, MetarecError, py, suggest

__all__ = ["Limits", "Job", "PayloadTooLarge", "parse_recommend", "parse_predict"]

_RECOMMEND_KEYS = ("user", "k", "support", "domain")
_PREDICT_KEYS = ("user", "support", "items", "clip")
_EXAMPLE = '"support": [{"item": "1", "rating": 5}]'


class PayloadTooLarge(MetarecError):
    """A request over one of the server's size limits (answered with HTTP 413)."""


@dataclass(frozen=True)
class Limits:
    """Size limits of one request.

    Args:
        max_body_bytes: largest request body (bytes).
        max_support: most support rows in one request.
        max_items: most items one ``/predict`` request may score.
    """

    max_body_bytes: int = 1 << 20
    max_support: int = 1000
    max_items: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_support", "max_items"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r}: must be an int >= 1")


@dataclass
class Job:
    """One validated request, in the run's index space.

    ``user`` is the raw id as sent, ``uidx`` its index in the run's user encoder (0: a cold
    user), ``items`` ``(S,)`` / ``ratings`` ``(S,)`` the support rows (item indices >= 1),
    ``k`` the top-k size (``/recommend``) or ``targets`` ``(P,)`` the items to score
    (``/predict``), ``domain`` the optional catalogue restriction.
    """

    user: Any
    uidx: int
    items: np.ndarray
    ratings: np.ndarray
    k: int | None = None
    targets: np.ndarray | None = None
    target_ids: list[Any] | None = None
    domain: str | None = None
    clip: bool = True


def parse_body(body: bytes, limits: Limits) -> dict[str, Any]:
    """Raw bytes -> the JSON object (size checked first)."""
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"request body: {len(body):,} bytes, over the server's limit of "
            f"{limits.max_body_bytes:,} bytes (--max-body-bytes); send fewer support rows"
        )
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            f"request body: not valid JSON ({e}); send one JSON object, e.g. "
            f'{{"user": "u1", "k": 10, {_EXAMPLE}}}'
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"request body: expected a JSON object, got {type(obj).__name__}; e.g. "
            f'{{"user": "u1", "k": 10, {_EXAMPLE}}}'
        )
    return obj


def parse_recommend(obj: dict[str, Any], meta: Any, limits: Limits) -> Job:
    """A ``/recommend`` body -> :class:`Job` (``meta``: the served :class:`~metarec.recommend.load.MetaModel`)."""
    _known_keys(obj, _RECOMMEND_KEYS)
    user, uidx = _user(obj, meta)
    k = obj.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r}: must be an int >= 1; pass e.g. k=10")
    domain = obj.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise DataError(
            f"domain={domain!r}: expected a domain name (a string), or leave it out for the whole catalogue"
        )
    items, ratings = _support(obj.get("support", []), meta, limits)
    return Job(user, uidx, items, ratings, k=k, domain=domain)


def parse_predict(obj: dict[str, Any], meta: Any, limits: Limits) -> Job:
    """A ``/predict`` body -> :class:`Job` with ``targets`` (the items to score, in order)."""
    _known_keys(obj, _PREDICT_KEYS)
    user, uidx = _user(obj, meta)
    raw = obj.get("items")
    if not isinstance(raw, list) or not raw:
        raise DataError(
            f'items={raw!r}: expected a non-empty list of item ids to score, e.g. "items": ["1", "7"]'
        )
    if len(raw) > limits.max_items:
        raise PayloadTooLarge(
            f"items: {len(raw):,} ids, over the server's limit of {limits.max_items:,} (--max-items); "
            "split the request"
        )
    ids = _ids(raw, "items")
    clip = obj.get("clip", True)
    if not isinstance(clip, bool):
        raise DataError(f"clip={clip!r}: expected true or false")
    targets = meta.encode_items(ids, what="items")
    items, ratings = _support(obj.get("support", []), meta, limits)
    return Job(
        user, uidx, items, ratings, targets=targets, target_ids=[py(v) for v in ids], clip=clip
    )


# ---------------------------------------------------------------------- helpers
def _known_keys(obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in obj:
        if key not in keys:
            raise DataError(
                f"request body: unknown field {key!r}{suggest(str(key), keys)}; the fields are {list(keys)}"
            )


def _user(obj: dict[str, Any], meta: Any) -> tuple[Any, int]:
    if "user" not in obj:
        raise DataError(
            'user: missing; every request names its user, e.g. {"user": "u1", ...} (cold users welcome)'
        )
    user = obj["user"]
    if (
        isinstance(user, bool)
        or not isinstance(user, (str, int))
        or (isinstance(user, str) and not user)
    ):
        raise DataError(f"user={user!r}: expected a non-empty string or an integer id")
    return user, int(meta.user_ids.encode([user])[0])


def _ids(raw: list[Any], what: str) -> np.ndarray:
    out = np.empty(len(raw), dtype=object)
    for n, v in enumerate(raw):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise DataError(f"{what}[{n}]={v!r}: expected an item id (a string or an integer)")
        out[n] = v
    return out


def _support(rows: Any, meta: Any, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """The support rows -> (item indices (S,), ratings (S,)), checked as ``metarec recommend`` checks a CSV."""
    fast = _support_fast(rows, meta, limits)
    return fast if fast is not None else _support_checked(rows, meta, limits)


def _support_fast(rows: Any, meta: Any, limits: Limits) -> tuple[np.ndarray, np.ndarray] | None:
    """The common case in plain Python (a few ``{"item", "rating"}`` rows, every check passed),
    or ``None`` when any check would fail, so that :func:`_support_checked` words the error."""
    if type(rows) is not list or len(rows) > limits.max_support:
        return None
    items: list[Any] = []
    ratings: list[float] = []
    for row in rows:
        if type(row) is not dict or len(row) != 2:
            return None
        item, rating = row.get("item"), row.get("rating")
        if type(item) not in (str, int) or type(rating) not in (int, float):
            return None
        items.append(item)
        ratings.append(float(rating))  # type: ignore[arg-type]
    if meta.feedback == "implicit":
        if any(r != 0.0 and r != 1.0 for r in ratings):
            return None
    else:
        scale = meta.rating_scale
        lo, hi = (scale[0], scale[1]) if scale is not None else (-math.inf, math.inf)
        if not all(lo <= r <= hi and math.isfinite(r) for r in ratings):
            return None
    idx = meta.item_ids.encode(items)
    if len(idx) and not idx.all():  # an unknown item: the checked path names it
        return None
    return idx, np.asarray(ratings, np.float64)


def _support_checked(rows: Any, meta: Any, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(rows, str):
        raise DataError(
            f"support={rows!r}: a string (a file path?) is not accepted; the server never reads files; "
            f"send the rows themselves, e.g. {_EXAMPLE}"
        )
    if not isinstance(rows, list):
        raise DataError(
            f'support: expected a list of {{"item": ..., "rating": ...}} objects, got '
            f"{type(rows).__name__}; e.g. {_EXAMPLE}"
        )
    if len(rows) > limits.max_support:
        raise PayloadTooLarge(
            f"support: {len(rows):,} rows, over the server's limit of {limits.max_support:,} "
            "(--max-support); send the user's most recent rows"
        )
    items = np.empty(len(rows), dtype=object)
    ratings = np.empty(len(rows), dtype=object)
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "item" not in row or "rating" not in row:
            raise DataError(
                f"support[{n}]={row!r}: expected an object with 'item' and 'rating', e.g. {_EXAMPLE}"
            )
        extra = [k for k in row if k not in ("item", "rating", "user")]
        if extra:
            raise DataError(
                f"support[{n}]: unknown field {extra[0]!r}; a row holds 'item' and 'rating'"
            )
        if "user" in row:
            raise DataError(
                f"support[{n}]: has a 'user' field; the rows are the request's user's, so leave it out"
            )
        items[n], ratings[n] = row["item"], row["rating"]
    missing = np.asarray([v is None for v in items], bool)
    if missing.any():  # the wording of the command line's check
        raise DataError(
            f"support item ids: {int(missing.sum())} missing, first at row {int(np.flatnonzero(missing)[0])}; "
            "every interaction needs a item; drop those rows"
        )
    for n, v in enumerate(items):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise DataError(
                f"support[{n}].item={v!r}: expected an item id (a string or an integer)"
            )
    values = _ratings(ratings)
    _check_scale(values, meta.feedback, meta.rating_scale)
    return meta.encode_items(items, what="support"), values


def _ratings(raw: np.ndarray) -> np.ndarray:
    out = np.full(len(raw), np.nan)
    for n, v in enumerate(raw):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[n] = float(v)
        elif isinstance(v, str):
            try:
                out[n] = float(v)
            except ValueError:
                pass
    bad = ~np.isfinite(out)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        shown = float("nan") if raw[k] is None else raw[k]
        raise DataError(
            f"support ratings: {shown!r} at row {k} is not a finite number; "
            "ratings must be numbers; clean or drop those rows"
        )
    return out


def _check_scale(ratings: np.ndarray, feedback: str, scale: tuple[float, float] | None) -> None:
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
