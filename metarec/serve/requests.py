"""Request bodies of ``metarec serve`` -> validated :class:`Job` s (or an error with the message).

A ``POST /recommend`` body::

    {"user": "u", "k": 10, "support": [{"item": "1", "rating": 5}, ...], "domain": "optional"}

and a ``POST /predict`` body::

    {"user": "u", "support": [...], "items": ["1", "7"], "clip": true}

The fields, their kinds and bounds are those of :mod:`metarec.serve.schema` (which also writes
``/openapi.json``). The checks on the support rows and ids are those of ``metarec recommend``
(the same rules and the same messages: unknown catalogue items, missing ids, non-finite ratings,
ratings outside the run's scale or not 0/1 for implicit feedback, ``k >= 1``), so a client sees
what the command line would print; ids follow the library's one id rule
(:mod:`metarec.data.encoding`: surrounding whitespace is not part of an id). A request never
names a file: a support given as a string (a path) is refused. Sizes are bounded
(:class:`Limits`); a body over a bound is a :class:`PayloadTooLarge` (HTTP 413).

Every request is validated completely before it joins a micro-batch, so that nothing in it can
fail its neighbours: ids are valid Unicode text (a lone surrogate such as ``"\\ud800"`` is legal
JSON but no text) of at most :data:`~metarec.serve.schema.MAX_ID_CHARS` characters; integers
have at most :data:`~metarec.serve.schema.MAX_INT_DIGITS` digits (checked while parsing: a
5000-digit ``k`` never reaches ``int()``); the body is nested at most ``max_json_depth`` levels
(checked before parsing: 100,000 nested brackets never reach the recursive parser). Each error
names the field. A support that rates an item more than once gets the warning ``metarec
recommend`` prints, in the answer's ``"warnings"``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metarec._errors import ConfigError, DataError, MetarecError, py, suggest
from metarec.recommend.support import check_support_ratings
from metarec.serve.schema import MAX_ID_CHARS, MAX_INT_DIGITS, PREDICT, RECOMMEND, Body

__all__ = ["Limits", "Job", "PayloadTooLarge", "parse_body", "parse_recommend", "parse_predict"]

_EXAMPLE = '"support": [{"item": "1", "rating": 5}]'


class PayloadTooLarge(MetarecError):
    """A request over one of the server's size limits (answered with HTTP 413)."""


@dataclass(frozen=True)
class Limits:
    """Size limits of one request.

    Args:
        max_body_bytes: largest request body (bytes).
        max_support: most support rows in one request.
        max_items: most items one ``/predict`` request may score, and the largest ``k``.
        max_json_depth: deepest nesting of the JSON body (a valid body needs 3).
    """

    max_body_bytes: int = 1 << 20
    max_support: int = 1000
    max_items: int = 10_000
    max_json_depth: int = 16

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_support", "max_items", "max_json_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r}: must be an int >= 1")


@dataclass
class Job:
    """One validated request, in the run's index space.

    ``user`` is the id as sent (whitespace around it dropped), ``uidx`` its index in the run's
    user encoder (0: a cold user), ``items`` ``(S,)`` / ``ratings`` ``(S,)`` the support rows
    (item indices >= 1), ``k`` the top-k size (``/recommend``) or ``targets`` ``(P,)`` the items
    to score (``/predict``), ``domain`` the optional catalogue restriction, ``warnings`` what the
    answer should tell the client.
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
    warnings: list[str] = field(default_factory=list)


class _Long:
    """An integer literal with more than :data:`MAX_INT_DIGITS` digits, kept unconverted."""

    __slots__ = ("digits",)

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<an integer of {self.digits:,} digits>"


def _parse_int(text: str) -> int | _Long:
    return int(text) if len(text) <= MAX_INT_DIGITS + 1 else _Long(text)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_KEY = re.compile(rb'"((?:[^"\\]|\\.)*)"\s*:')


def _check_depth(body: bytes, limit: int) -> None:
    """Refuse a body nested deeper than ``limit`` before the (recursive) JSON parser sees it."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return  # cannot be deeper than the brackets it has
    flat = _STRING.sub(lambda m: b'"' + b"x" * (len(m.group()) - 2) + b'"', body)
    a = np.frombuffer(flat, np.uint8)
    step = np.isin(a, (ord("["), ord("{"))).astype(np.int32) - np.isin(a, (ord("]"), ord("}")))
    depth = np.cumsum(step)  # depth after each byte
    if not len(depth) or int(depth.max()) <= limit:
        return
    at = int(np.argmax(depth > limit))
    key = None
    for m in _KEY.finditer(flat, 0, at):
        if m.start() and depth[m.start() - 1] == 1:  # a key of the top-level object
            key = body[m.start(1) : m.end(1)].decode("utf-8", "replace")
    where = f"field {key!r}" if key is not None else "the body"
    raise DataError(
        f"request body: {where} is nested {int(depth.max()):,} levels deep, over the server's limit of "
        f"{limit} (--max-json-depth); a valid request needs 3, e.g. "
        f'{{"user": "u1", "k": 10, {_EXAMPLE}}}'
    )


def parse_body(body: bytes, limits: Limits) -> dict[str, Any]:
    """Raw bytes -> the JSON object (size and nesting checked first)."""
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"request body: {len(body):,} bytes, over the server's limit of "
            f"{limits.max_body_bytes:,} bytes (--max-body-bytes); send fewer support rows"
        )
    _check_depth(body, limits.max_json_depth)
    try:
        obj = json.loads(body, parse_int=_parse_int)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise DataError(
            f"request body: not valid JSON ({str(e)[:200]}); send one JSON object, e.g. "
            f'{{"user": "u1", "k": 10, {_EXAMPLE}}}'
        ) from None
    except RecursionError:  # pragma: no cover - _check_depth refuses such bodies first
        raise DataError(
            f"request body: nested too deeply to parse (--max-json-depth {limits.max_json_depth})"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"request body: expected a JSON object, got {type(obj).__name__}; e.g. "
            f'{{"user": "u1", "k": 10, {_EXAMPLE}}}'
        )
    return obj


def parse_recommend(obj: dict[str, Any], meta: Any, limits: Limits) -> Job:
    """A ``/recommend`` body -> :class:`Job` (``meta``: the served run model)."""
    _known_keys(obj, RECOMMEND)
    user, uidx = _user(obj, meta)
    k = obj.get("k", min(RECOMMEND.field("k").default, limits.max_items))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={_shown(k)}: must be an int >= 1; pass e.g. k=10")
    if k > limits.max_items:
        raise PayloadTooLarge(
            f"k={k:,}: over the server's limit of {limits.max_items:,} items per answer (--max-items); "
            "ask for fewer"
        )
    domain = obj.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise DataError(
            f"domain={_shown(domain)}: expected a domain name (a string), or leave it out for the whole catalogue"
        )
    if domain is not None:
        domain = _text(domain, "domain").strip()
    items, ratings = _support(obj.get("support", []), meta, limits)
    job = Job(user, uidx, items, ratings, k=k, domain=domain)
    _repeats(job, meta)
    return job


def parse_predict(obj: dict[str, Any], meta: Any, limits: Limits) -> Job:
    """A ``/predict`` body -> :class:`Job` with ``targets`` (the items to score, in order)."""
    _known_keys(obj, PREDICT)
    user, uidx = _user(obj, meta)
    raw = obj.get("items")
    if not isinstance(raw, list) or not raw:
        raise DataError(
            f'items={_shown(raw)}: expected a non-empty list of item ids to score, e.g. "items": ["1", "7"]'
        )
    if len(raw) > limits.max_items:
        raise PayloadTooLarge(
            f"items: {len(raw):,} ids, over the server's limit of {limits.max_items:,} (--max-items); "
            "split the request"
        )
    ids = _ids(raw, "items")
    clip = obj.get("clip", True)
    if not isinstance(clip, bool):
        raise DataError(f"clip={_shown(clip)}: expected true or false")
    targets = meta.encode_items(ids, what="items")
    items, ratings = _support(obj.get("support", []), meta, limits)
    job = Job(
        user, uidx, items, ratings, targets=targets, target_ids=[py(v) for v in ids], clip=clip
    )
    _repeats(job, meta)
    return job


# ---------------------------------------------------------------------- helpers
def _shown(v: Any) -> str:
    """``v`` for a message, never longer than a line."""
    text = repr(v)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text):,} characters)"


def _known_keys(obj: dict[str, Any], body: Body) -> None:
    keys = body.keys
    for key in obj:
        if key not in keys:
            raise DataError(
                f"request body: unknown field {_shown(key)}{suggest(str(key), keys)}; the fields are {list(keys)}"
            )
    for f in body.fields:
        if f.required and f.name not in obj and f.name != "user":
            raise DataError(f"{f.name}: missing; {f.description}")


def _text(v: str, what: str) -> str:
    """``v`` when it is valid Unicode text of at most :data:`MAX_ID_CHARS` characters."""
    if len(v) > MAX_ID_CHARS:
        raise DataError(
            f"{what}: {len(v):,} characters, over the limit of {MAX_ID_CHARS}; ids are short names"
        )
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(
            f"{what}={v!r}: not valid Unicode text (a lone surrogate {v[e.start]!r} at position {e.start}); "
            "send ids as UTF-8 text"
        ) from None
    return v


def _id(v: Any, what: str) -> Any:
    """A valid id under the id rule (stripped string or int), else a DataError naming ``what``."""
    if isinstance(v, _Long):
        raise DataError(f"{what}={v!r}: over {MAX_INT_DIGITS} digits; send such an id as a string")
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise DataError(f"{what}={_shown(v)}: expected an id (a string or an integer)")
    if isinstance(v, str):
        v = _text(v, what).strip()
        if not v:
            raise DataError(f"{what}: empty; every id is a non-empty string or an integer")
    return v


def _user(obj: dict[str, Any], meta: Any) -> tuple[Any, int]:
    if "user" not in obj:
        raise DataError(
            'user: missing; every request names its user, e.g. {"user": "u1", ...} (cold users welcome)'
        )
    raw = obj["user"]
    if (
        isinstance(raw, bool)
        or not isinstance(raw, (str, int, _Long))
        or (isinstance(raw, str) and not raw.strip())
    ):
        raise DataError(f"user={_shown(raw)}: expected a non-empty string or an integer id")
    user = _id(raw, "user")
    return user, int(meta.user_ids.encode([user])[0])


def _ids(raw: list[Any], what: str) -> np.ndarray:
    out = np.empty(len(raw), dtype=object)
    for n, v in enumerate(raw):
        if isinstance(v, bool) or not isinstance(v, (str, int, _Long)):
            raise DataError(
                f"{what}[{n}]={_shown(v)}: expected an item id (a string or an integer)"
            )
        out[n] = _id(v, f"{what}[{n}]")
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
        if type(item) is str and (len(item) > MAX_ID_CHARS or not item.isprintable()):
            return (
                None  # too long, a surrogate or other unprintable text: the checked path says which
            )
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
            f"support={_shown(rows)}: a string (a file path?) is not accepted; the server never reads files; "
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
                f"support[{n}]={_shown(row)}: expected an object with 'item' and 'rating', e.g. {_EXAMPLE}"
            )
        extra = [k for k in row if k not in ("item", "rating", "user")]
        if extra:
            raise DataError(
                f"support[{n}]: unknown field {_shown(extra[0])}; a row holds 'item' and 'rating'"
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
        if isinstance(v, bool) or not isinstance(v, (str, int, _Long)):
            raise DataError(
                f"support[{n}].item={_shown(v)}: expected an item id (a string or an integer)"
            )
        items[n] = _id(v, f"support[{n}].item")
    values = _ratings(ratings)
    check_support_ratings(values, meta.feedback, meta.rating_scale)
    return meta.encode_items(items, what="support"), values


def _ratings(raw: np.ndarray) -> np.ndarray:
    out = np.full(len(raw), np.nan)
    for n, v in enumerate(raw):
        if isinstance(v, _Long):
            raise DataError(
                f"support[{n}].rating={v!r}: not a rating; ratings are finite numbers on the run's scale"
            )
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                out[n] = float(v)
            except OverflowError:
                pass
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
            f"support ratings: {_shown(shown)} at row {k} is not a finite number; "
            "ratings must be numbers; clean or drop those rows"
        )
    return out


def _repeats(job: Job, meta: Any) -> None:
    """The warning of ``metarec recommend`` when the support rates an item more than once."""
    if len(job.items) < 2 or len(np.unique(job.items)) == len(job.items):
        return
    counts = Counter(job.items.tolist())
    rep = [(i, n) for i, n in counts.most_common() if n > 1]
    (idx, n) = rep[0]
    item = meta.item_ids.decode([idx])[0]
    job.warnings.append(
        f"support: user {str(job.user)!r} rates item {str(item)!r} {n} times ({len(rep)} repeated (user, item) "
        "pair(s) in all); each row is used as its own support example, as given; drop the repeats (e.g. keep "
        "the last rating) if that is not what you mean"
    )
