"""Task pools: the interactions of each task unit, grouped for vectorised sampling.

A :class:`TaskPool` is a compressed-sparse-row grouping of table rows by task unit: unit ``j``
owns ``rows[offsets[j]:offsets[j + 1]]`` (row indices into the
:class:`~metarec.data.table.InteractionTable`), sorted by timestamp when the table has one. A
unit is a user, a domain, or a cohort of users. Pools optionally pin a fixed query set per unit
(``query_flag``), as MeLU's protocol does.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from metarec._errors import ConfigError, suggest
from metarec.data.table import InteractionTable

__all__ = ["TaskPool", "PoolDrop", "unit_keys", "build_pool"]

Unit = Literal["user", "domain", "cohort"]


@dataclass(frozen=True)
class TaskPool:
    """Rows of an interaction table grouped by task unit.

    Attributes:
        name: the split or state this pool is (``"meta-train"``, ``"user-cold"``...).
        unit: ``"user"``, ``"domain"`` or ``"cohort"``.
        units: ``int64 (U,)`` unit ids (user index, domain index or cohort id).
        offsets: ``int64 (U + 1,)`` CSR offsets into ``rows``.
        rows: ``int64 (nnz,)`` table row indices, grouped by unit (time-ordered within a unit
            when the table has timestamps).
        query_flag: ``bool (nnz,)`` or ``None``: rows pinned to the query set.
        support_rank: ``int64 (nnz,)`` or ``None``: a pinned support order (the ranking
            protocol, :mod:`metarec.episodes.ranking`): ``k`` shots are the ``k`` non-query rows
            of lowest rank, the same rows for every sampler seed and nested across ``k``.
    """

    name: str
    unit: str
    units: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    query_flag: np.ndarray | None = None
    support_rank: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.units.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def unit_rows(self, j: int) -> np.ndarray:
        return self.rows[self.offsets[j] : self.offsets[j + 1]]

    def filter(self, keep: np.ndarray, name: str | None = None) -> TaskPool:
        """Units where ``keep`` (bool ``(U,)``) is True."""
        lens = self.lengths[keep]
        starts = self.offsets[:-1][keep]
        flat = _ranges(starts, lens)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        qf = None if self.query_flag is None else self.query_flag[flat]
        sr = None if self.support_rank is None else self.support_rank[flat]
        return TaskPool(
            name or self.name, self.unit, self.units[keep], offsets, self.rows[flat], qf, sr
        )


@dataclass(frozen=True)
class PoolDrop:
    """Rows :func:`build_pool` left out of a pool by one of its limits (recorded while a
    :func:`metarec.episodes.drops.recording_drops` block runs).

    Attributes:
        pool: the pool's name; limit: ``"min_interactions"`` or ``"max_interactions"``;
        value: the limit's value; rows: ``int64 (n,)`` the table rows left out.
    """

    pool: str
    limit: str
    value: int
    rows: np.ndarray


_RECORD: ContextVar[list[PoolDrop] | None] = ContextVar("metarec_pool_drops", default=None)


def unit_keys(
    table: InteractionTable,
    unit: Unit,
    cohort_by: str | Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> np.ndarray:
    """The task-unit id of every table row (``int64 (n_rows,)``).

    ``unit="cohort"`` groups users by a user feature column (``cohort_by="age"``) or by a
    callable receiving the raw-id interaction frame and returning one cohort label per row.
    """
    if unit == "user":
        return table.users
    if unit == "domain":
        return table.domains
    if unit != "cohort":
        raise ConfigError(
            f"unit={unit!r}: must be 'user', 'domain' or 'cohort'{suggest(unit, ('user', 'domain', 'cohort'))}"
        )
    if cohort_by is None:
        raise ConfigError(
            "unit='cohort' needs cohort_by=<user feature column or callable>; e.g. cohort_by='age'"
        )
    if callable(cohort_by):
        labels = np.asarray(cohort_by(table.to_frame(raw_ids=True)))
        if labels.shape[0] != len(table):
            raise ConfigError(
                f"cohort_by callable returned {labels.shape[0]} labels for {len(table)} rows; return one label per row"
            )
        return pd.factorize(labels, sort=True)[0].astype(np.int64) + 1
    feats = table.user_features
    if feats is None or cohort_by not in feats.categorical:
        avail = [] if feats is None else sorted(feats.categorical)
        raise ConfigError(
            f"cohort_by={cohort_by!r}: not a categorical user feature; available: {avail}"
            f"{suggest(cohort_by, avail)}; load user features or pick one of those"
        )
    return feats.categorical[cohort_by][table.users, 0].astype(np.int64)


def build_pool(
    table: InteractionTable,
    rows: np.ndarray,
    keys: np.ndarray,
    name: str,
    unit: str,
    *,
    min_interactions: int = 1,
    max_interactions: int | None = None,
) -> TaskPool:
    """Group ``rows`` (table row indices) by ``keys[rows]`` into a pool.

    Units with fewer than ``min_interactions`` or more than ``max_interactions`` rows are
    dropped. Rows are ordered by (unit, timestamp, row) so time-ordered sampling is a slice.
    """
    rows = np.asarray(rows, dtype=np.int64)
    k = keys[rows]
    ts = table.timestamps[rows] if table.timestamps is not None else np.zeros_like(rows)
    order = np.lexsort((rows, ts, k))
    rows, k = rows[order], k[order]
    units, starts, counts = np.unique(k, return_index=True, return_counts=True)
    keep = counts >= min_interactions
    if max_interactions is not None:
        keep &= counts <= max_interactions
    record = _RECORD.get()
    if record is not None and not keep.all():
        too_few = counts < min_interactions
        for limit, value, out in (
            ("min_interactions", min_interactions, too_few),
            ("max_interactions", max_interactions, ~keep & ~too_few),
        ):
            if out.any() and value is not None:
                dropped = rows[_ranges(starts[out], counts[out])]
                record.append(PoolDrop(name, limit, int(value), dropped))
    flat = _ranges(starts[keep], counts[keep])
    offsets = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
    return TaskPool(name, unit, units[keep].astype(np.int64), offsets, rows[flat])


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), vectorised."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_start = np.cumsum(lens) - lens
    return np.repeat(starts - seg_start, lens) + np.arange(total, dtype=np.int64)
