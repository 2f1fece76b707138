"""The validated interaction table every later stage reads.

An :class:`InteractionTable` holds encoded ``users``, ``items``, ``ratings``, ``domains`` and
optional ``timestamps`` as aligned numpy arrays, the id encoders (index 0 = unknown), and
optional user and item :class:`~metarec.data.features.FeatureTable`\\ s. It is built once, at the
boundary, by :meth:`InteractionTable.from_frame`, which rejects bad input with an error naming
the column, the value, the rule and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from metarec._errors import DataError, py, suggest
from metarec.data.columns import (
    PARTS,
    check_scalars,
    one_column_hint,
    parse_parts,
    parse_ratings,
    parse_timestamps,
)
from metarec.data.drops import Drop
from metarec.data.duplicates import DUPLICATE_POLICIES, deduplicate
from metarec.data.encoding import IdEncoder, normalize_ids
from metarec.data.features import FeatureSpec, FeatureTable, encode_features

__all__ = ["Columns", "InteractionTable", "PARTS"]

Feedback = Literal["explicit", "implicit"]
DuplicatePolicy = Literal["error", "first", "last", "mean"]
_ROLES = ("user", "item", "rating", "domain", "timestamp", "part")


@dataclass(frozen=True)
class Columns:
    """Names of the interaction columns in a user's frame (a column mapping).

    ``rating=None`` means implicit feedback with every row a positive; ``domain``,
    ``timestamp`` and ``part`` (the dataset's own split: ``train`` / ``valid`` / ``test``) are
    optional. Two roles cannot name the same column.

    Example:
        >>> import pandas as pd
        >>> clicks = pd.DataFrame({"uid": ["a", "a", "b"], "iid": ["x", "y", "x"], "ts": [10, 20, 30]})
        >>> cols = Columns(user="uid", item="iid", rating=None, timestamp="ts")
        >>> t = InteractionTable.from_frame(clicks, cols, feedback="implicit")
        >>> t.feedback, t.ratings.tolist(), t.timestamps.tolist()
        ('implicit', [1.0, 1.0, 1.0], [10, 20, 30])
        >>> Columns(user="id", item="id")
        Traceback (most recent call last):
        ...
        metarec._errors.DataError: columns.item='id': the same column is already columns.user; ...
    """

    user: str = "user"
    item: str = "item"
    rating: str | None = "rating"
    domain: str | None = None
    timestamp: str | None = None
    part: str | None = None

    def __post_init__(self) -> None:
        seen: dict[Any, str] = {}
        for role in _ROLES:
            col = getattr(self, role)
            if role in ("user", "item") and col is None:
                raise DataError(
                    f"columns.{role}=None: every interaction needs a {role} column; name it"
                )
            if col is None:
                continue
            try:
                hash(col)
            except TypeError:
                raise DataError(f"columns.{role}={col!r}: a column name must be a string") from None
            if col in seen:
                raise DataError(
                    f"columns.{role}={col!r}: the same column is already columns.{seen[col]}; one "
                    f"column cannot play two roles; set data.columns.{role} (Columns({role}=...) "
                    "in Python) to another column"
                )
            seen[col] = role


class InteractionTable:
    """Validated, encoded interactions with optional side features.

    Attributes:
        users, items, domains: ``int64`` arrays of encoded indices (0 is reserved for unknown).
        ratings: ``float32`` array (1.0 for implicit positives).
        timestamps: ``int64`` seconds since the epoch, or ``None``.
        user_ids, item_ids, domain_ids: the encoders.
        user_features, item_features: encoded side features or ``None``.
        feedback: ``"explicit"`` or ``"implicit"``; rating_scale: ``(lo, hi)`` or ``None``.
        parts: ``int8`` array, the dataset's own split of each row (an index into
            :data:`PARTS`: 0 train, 1 valid, 2 test), or ``None`` when it ships none.
        filtered: what reading left out (:class:`~metarec.data.drops.Drop`: merged duplicates,
            rows without a ``data.domain_by`` domain); empty when nothing was.

    Build it with :meth:`from_frame` (or :func:`metarec.load_table` from a scenario's
    ``[data]``).

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"user": ["u1", "u1", "u2"], "item": ["i1", "i2", "i1"],
        ...                       "rating": [4.0, 2.0, 5.0]})
        >>> t = InteractionTable.from_frame(frame, rating_scale=(1, 5))
        >>> t
        InteractionTable(3 interactions, 2 users, 2 items, 1 domains, explicit)
        >>> t.users.tolist(), t.items.tolist(), t.user_ids.decode(t.users)
        ([1, 1, 2], [1, 2, 1], ['u1', 'u1', 'u2'])
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        domains: np.ndarray,
        timestamps: np.ndarray | None,
        user_ids: IdEncoder,
        item_ids: IdEncoder,
        domain_ids: IdEncoder,
        *,
        feedback: Feedback = "explicit",
        rating_scale: tuple[float, float] | None = None,
        user_features: FeatureTable | None = None,
        item_features: FeatureTable | None = None,
        parts: np.ndarray | None = None,
    ) -> None:
        self.users = users
        self.items = items
        self.ratings = ratings
        self.domains = domains
        self.timestamps = timestamps
        self.user_ids = user_ids
        self.item_ids = item_ids
        self.domain_ids = domain_ids
        self.feedback = feedback
        self.rating_scale = rating_scale
        self.user_features = user_features
        self.item_features = item_features
        self.parts = parts
        self.filtered: list[Drop] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        columns: Columns | None = None,
        *,
        feedback: Feedback = "explicit",
        rating_scale: tuple[float, float] | None = (1.0, 5.0),
        duplicates: DuplicatePolicy = "error",
        domains: Sequence[Any] | None = None,
        user_features: pd.DataFrame | None = None,
        user_feature_specs: Sequence[FeatureSpec] = (),
        user_feature_id: str | None = None,
        item_features: pd.DataFrame | None = None,
        item_feature_specs: Sequence[FeatureSpec] = (),
        item_feature_id: str | None = None,
    ) -> InteractionTable:
        """Validate ``frame`` and encode it.

        Args:
            frame: one row per interaction.
            columns: column mapping (default ``user``, ``item``, ``rating``).
            feedback: ``"explicit"`` (ratings on ``rating_scale``) or ``"implicit"`` (ratings
                are 1 for positives, or 0/1; ``columns.rating=None`` makes every row a positive).
            rating_scale: inclusive ``(lo, hi)`` for explicit ratings; ``None`` disables the check.
            duplicates: policy for repeated (user, item, domain) rows: ``"error"``, keep
                ``"first"``/``"last"`` (by timestamp when given, else row order) or ``"mean"``.
            domains: domains that must each have interactions (an empty one is an error).
            user_features, item_features: side-feature frames, one row per id; ids absent
                from the interactions are allowed (cold entities are scored by features).
            user_feature_specs, item_feature_specs: which feature columns, and their kinds.
            user_feature_id, item_feature_id: id column of the feature frames (default: the
                interaction column name).

        Raises:
            DataError: with the column, value, rule and fix.
        """
        c = columns or Columns()
        if feedback not in ("explicit", "implicit"):
            raise DataError(
                f"feedback={feedback!r}: must be 'explicit' (ratings) or 'implicit' (clicks, 0/1)"
                f"{suggest(feedback, ('explicit', 'implicit'))}"
            )
        if duplicates not in DUPLICATE_POLICIES:
            raise DataError(
                f"duplicates={duplicates!r}: policy must be one of "
                f"{DUPLICATE_POLICIES}{suggest(duplicates, DUPLICATE_POLICIES)}"
            )
        if rating_scale is not None and feedback == "explicit":
            try:
                lo, hi = (float(x) for x in rating_scale)
            except (TypeError, ValueError):
                lo = hi = float("nan")
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise DataError(
                    f"rating_scale={rating_scale!r}: needs finite lo < hi, e.g. rating_scale=(1, "
                    '5); set data.rating_scale = "none" (rating_scale=None in Python) to skip the '
                    "range check"
                )
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}")
        if not isinstance(c, Columns):
            raise DataError(
                f"columns: expected a Columns mapping, got {type(c).__name__}; pass "
                "Columns(user=..., item=...)"
            )
        if frame.columns.has_duplicates:
            dup = frame.columns[frame.columns.duplicated()][0]
            raise DataError(
                f"frame: column {py(dup)!r} appears twice; give every column its own name"
            )
        for role in _ROLES:
            col = getattr(c, role)
            if col is not None and col not in frame.columns:
                raise DataError(
                    f"columns.{role}={col!r}: column not found; the frame has {list(frame.columns)}"
                    f"{suggest(str(col), [str(x) for x in frame.columns])}{one_column_hint(frame)}; "
                    f'set data.columns.{role} = "<the right name>" in the scenario (Columns({role}=...) in Python)'
                )
        if len(frame) == 0:
            raise DataError("frame: no interactions (0 rows); load a non-empty table")

        for role in ("user", "item"):
            col = getattr(c, role)
            miss = frame[col].isna()
            if miss.any():
                raise DataError(
                    f"{role} column {col!r}: {int(miss.sum())} missing id(s), first at row "
                    f"{py(frame.index[miss.to_numpy()][0])!r}; "
                    f"every interaction needs {'an' if role == 'item' else 'a'} {role}; "
                    "drop those rows"
                )
            check_scalars(frame[col], f"{role} column {col!r}")

        ratings = parse_ratings(frame, c.rating, feedback, rating_scale)
        ts = parse_timestamps(frame, c.timestamp) if c.timestamp else None
        dom_raw = (
            frame[c.domain]
            if c.domain
            else pd.Series(np.zeros(len(frame), dtype=np.int64), index=frame.index)
        )
        if c.domain and dom_raw.isna().any():
            raise DataError(
                f"domain column {c.domain!r}: {int(dom_raw.isna().sum())} missing value(s); "
                "every interaction needs a domain; fill or drop them"
            )
        if c.domain:
            check_scalars(dom_raw, f"domain column {c.domain!r}")
        part = parse_parts(frame, c.part) if c.part else None

        # the id rule (metarec.data.encoding): surrounding whitespace is not part of an id
        ids = {
            "u": normalize_ids(frame[c.user].to_numpy()),
            "i": normalize_ids(frame[c.item].to_numpy()),
            "d": normalize_ids(dom_raw.to_numpy()),
        }
        for key, role, col in (
            ("u", "user", c.user),
            ("i", "item", c.item),
            ("d", "domain", c.domain),
        ):
            arr = ids[key]
            if arr.dtype.kind != "O":
                continue
            blank = np.asarray(arr == "", dtype=bool)
            if blank.any():
                raise DataError(
                    f"{role} column {col!r}: {int(blank.sum())} id(s) that are only whitespace, "
                    f"first at row {py(frame.index[blank][0])!r}; every interaction needs "
                    f"{'an' if role == 'item' else 'a'} {role}; drop or fill those rows"
                )
        work = pd.DataFrame({**ids, "r": ratings})
        if ts is not None:
            work["t"] = ts
        if part is not None:
            work["p"] = part
        n_read = len(work)
        work = deduplicate(work, duplicates, part=c.part, domain=c.domain)
        merged = n_read - len(work)

        if domains is not None:
            present = set(pd.unique(work["d"]).tolist())
            empty = [d for d in domains if d not in present]
            if empty:
                raise DataError(
                    f"domains: domain {py(empty[0])!r} has no interactions ({len(empty)} empty "
                    "domain(s)); every declared domain needs at least one interaction; remove it "
                    "from domains= or add its interactions"
                )
        elif c.domain and isinstance(frame[c.domain].dtype, pd.CategoricalDtype):
            cats = list(frame[c.domain].cat.categories)
            present = set(pd.unique(work["d"]).tolist())
            empty = [d for d in cats if d not in present]
            if empty:
                raise DataError(
                    f"domain column {c.domain!r}: category {py(empty[0])!r} has no interactions; "
                    "drop unused categories first (frame[col].cat.remove_unused_categories())"
                )

        u_fid = user_feature_id or c.user
        i_fid = item_feature_id or c.item
        user_ids = IdEncoder.fit(_union(work["u"], user_features, u_fid, "user"), name="user")
        item_ids = IdEncoder.fit(_union(work["i"], item_features, i_fid, "item"), name="item")
        domain_ids = IdEncoder.fit(work["d"].to_numpy(), name="domain")
        uf = (
            encode_features(user_features, u_fid, user_feature_specs, user_ids, what="user")
            if user_features is not None
            else None
        )
        itf = (
            encode_features(item_features, i_fid, item_feature_specs, item_ids, what="item")
            if item_features is not None
            else None
        )
        table = cls(
            user_ids.encode(work["u"].to_numpy()),
            item_ids.encode(work["i"].to_numpy()),
            work["r"].to_numpy(dtype=np.float32),
            domain_ids.encode(work["d"].to_numpy()),
            work["t"].to_numpy(dtype=np.int64) if ts is not None else None,
            user_ids,
            item_ids,
            domain_ids,
            feedback=feedback,
            rating_scale=_float_pair(rating_scale)
            if (rating_scale and feedback == "explicit")
            else None,
            user_features=uf,
            item_features=itf,
            parts=work["p"].to_numpy(dtype=np.int8) if part is not None else None,
        )
        if merged:
            table.filtered.append(
                Drop(
                    "data.duplicates",
                    duplicates,
                    merged,
                    0,
                    0,
                    f"repeated (user, item, domain) rows merged into one ({duplicates!r})",
                    'set data.duplicates = "error" to be told of each instead',
                )  # fmt: skip
            )
        return table

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def n_users(self) -> int:
        """Size of the user index space (unknown slot included)."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_domains(self) -> int:
        return len(self.domain_ids)

    def subset(self, mask: np.ndarray) -> InteractionTable:
        """Rows selected by a boolean mask or an index array; encoders and features are shared."""
        return InteractionTable(
            self.users[mask],
            self.items[mask],
            self.ratings[mask],
            self.domains[mask],
            None if self.timestamps is None else self.timestamps[mask],
            self.user_ids,
            self.item_ids,
            self.domain_ids,
            feedback=self.feedback,
            rating_scale=self.rating_scale,
            user_features=self.user_features,
            item_features=self.item_features,
            parts=None if self.parts is None else self.parts[mask],
        )

    def to_frame(self, raw_ids: bool = False) -> pd.DataFrame:
        """The interactions as a DataFrame of encoded indices (or raw ids with ``raw_ids=True``)."""
        d: dict[str, Any] = {
            "user": self.users,
            "item": self.items,
            "rating": self.ratings,
            "domain": self.domains,
        }
        if self.timestamps is not None:
            d["timestamp"] = self.timestamps
        if self.parts is not None:
            d["part"] = np.asarray(PARTS, dtype=object)[self.parts]
        df = pd.DataFrame(d)
        if raw_ids:
            df["user"] = self.user_ids.decode(self.users)
            df["item"] = self.item_ids.decode(self.items)
            df["domain"] = self.domain_ids.decode(self.domains)
        return df

    def summary(self) -> dict[str, Any]:
        return {
            "interactions": len(self),
            "users": self.n_users - 1,
            "items": self.n_items - 1,
            "domains": self.n_domains - 1,
            "feedback": self.feedback,
            "rating_scale": self.rating_scale,
            "timestamps": self.timestamps is not None,
            **(
                {"parts": {p: int((self.parts == i).sum()) for i, p in enumerate(PARTS)}}
                if self.parts is not None
                else {}
            ),
            "user_features": sorted(self.user_features.vocabs)
            + (self.user_features.numeric_names if self.user_features else [])
            if self.user_features
            else [],
            "item_features": sorted(self.item_features.vocabs)
            + (self.item_features.numeric_names if self.item_features else [])
            if self.item_features
            else [],
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"InteractionTable({s['interactions']} interactions, {s['users']} users, {s['items']} "
            f"items, {s['domains']} domains, {self.feedback})"
        )


# ---------------------------------------------------------------------- helpers
def _union(ids: pd.Series, feats: pd.DataFrame | None, id_col: str, what: str) -> np.ndarray:
    if feats is None:
        return ids.to_numpy()
    if id_col not in feats.columns:
        raise DataError(
            f"{what}_features: id column {id_col!r} not found; columns are {list(feats.columns)}"
            f"{suggest(id_col, feats.columns)}; pass {what}_feature_id=<id column>"
        )
    fid = feats[id_col].dropna()
    num = (pd.api.types.is_numeric_dtype(ids), pd.api.types.is_numeric_dtype(fid))
    if len(fid) and num[0] != num[1]:
        kinds = ["numbers" if n else "strings" for n in num]
        raise DataError(
            f"{what}_features[{id_col!r}]: ids are {kinds[1]} but the interactions' {what} ids are "
            f"{kinds[0]}; they would never match; convert one side, e.g. "
            f"{what}_features[{id_col!r}] = "
            f"{what}_features[{id_col!r}].astype({'str' if not num[0] else 'int'})"
        )
    both = pd.concat([ids, fid], ignore_index=True)
    return pd.unique(both) if both.dtype != object else pd.unique(both.to_numpy(dtype=object))


def _float_pair(pair: tuple[float, float]) -> tuple[float, float]:
    """``(lo, hi)`` as floats (the length was checked with the rating scale above)."""
    lo, hi = (float(x) for x in pair)
    return lo, hi
