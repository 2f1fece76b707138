"""What a protocol left out of every pool, and why: :class:`FilterReport`.

A split keeps only some interactions in its pools: task units with fewer than
``protocol.min_interactions`` or more than ``protocol.max_interactions`` interactions are left out
(MovieLens-100K's 361 users with more than 100 ratings under the default), a predefined split
evaluates only ``protocol.target_domain``, and so on. :func:`filter_report` accounts for every
interaction of the table that no pool holds, each under the scenario key that controls it, plus
what reading the data left out (:attr:`InteractionTable.filtered
<metarec.data.table.InteractionTable>`). :func:`metarec.episodes.build.build_splits` attaches the
report to the splits (:attr:`MetaSplits.filters <metarec.episodes.splits.MetaSplits>`) and logs
it (logger ``metarec.filters``, which the command line prints); :func:`check_selection_pool`
warns when the validation pool is too small to select on.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metarec.config import ProtocolConfig
from metarec.data.drops import Drop, lost_entities
from metarec.data.table import InteractionTable
from metarec.episodes.pool import _RECORD, PoolDrop
from metarec.episodes.splits import MetaSplits

__all__ = [
    "MIN_SELECTION_TASKS",
    "FilterReport",
    "SmallPoolWarning",
    "check_selection_pool",
    "filter_report",
    "log_report",
    "recording_drops",
]

_log = logging.getLogger("metarec.filters")

MIN_SELECTION_TASKS = 30
"""Fewest validation tasks to select a step or a setting on without a warning: the standard
error of a mean over fewer tasks is a large share of the differences selection decides on."""


class SmallPoolWarning(UserWarning):
    """The validation pool is too small to select a step or a setting on
    (:func:`check_selection_pool`)."""


@dataclass(frozen=True)
class FilterReport:
    """Interactions, users and items the table had and the pools kept, and each filter's share.

    Attributes:
        rows, users, items: ``(kept, total)``: held by some pool / in the table.
        drops: one :class:`~metarec.data.drops.Drop` per filter that left something out
            (reading first, then the protocol's limits), each with its scenario key.
    """

    rows: tuple[int, int]
    users: tuple[int, int]
    items: tuple[int, int]
    drops: list[Drop] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as lines for a terminal (one per filter, then what was kept)."""
        kept = (
            f"kept {self.rows[0]:,} of {self.rows[1]:,} interactions, {self.users[0]:,} of "
            f"{self.users[1]:,} users, {self.items[0]:,} of {self.items[1]:,} items in the pools"
        )
        return [d.line() for d in self.drops] + [kept]

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": list(self.rows),
            "users": list(self.users),
            "items": list(self.items),
            "drops": [d.to_json() for d in self.drops],
        }


@contextmanager
def recording_drops() -> Iterator[list[PoolDrop]]:
    """Collect what :func:`metarec.episodes.pool.build_pool` leaves out inside the block."""
    record: list[PoolDrop] = []
    token = _RECORD.set(record)
    try:
        yield record
    finally:
        _RECORD.reset(token)


_UNIT_WORDS = {
    "user": "users",
    "user-domain": "(user, domain) tasks",
    "domain": "domains",
    "cohort": "cohorts",
}


def filter_report(
    table: InteractionTable,
    splits: MetaSplits,
    protocol: ProtocolConfig,
    recorded: Sequence[PoolDrop] = (),
) -> FilterReport:
    """Account for every interaction of ``table`` that no pool of ``splits`` holds.

    Each left-out row is put down to the first recorded limit that left it out of a pool of
    ``splits`` (``recorded``, from :func:`recording_drops`), else to the user's interaction
    count against ``protocol.min_interactions`` / ``max_interactions`` (splits that select
    users before building pools), else to ``protocol.target_domain`` (a predefined split's
    other domains), else to the split itself.
    """
    n = len(table)
    kept = np.zeros(n, dtype=bool)
    for pool in splits.pools.values():
        kept[pool.rows] = True
    out = ~kept
    cause = np.full(n, -1, dtype=np.int64)  # index into causes
    causes: list[tuple[str, Any, str, str]] = []  # (key, value, rule, fix)

    def add(key: str, value: Any, rule: str, fix: str, rows: np.ndarray) -> None:
        rows = rows[out[rows] & (cause[rows] < 0)]
        if rows.shape[0] == 0:
            return
        c = (key, value, rule, fix)
        if c not in causes:
            causes.append(c)
        cause[rows] = causes.index(c)

    unit_of = {name: pool.unit for name, pool in splits.pools.items()}
    for d in recorded:
        if d.pool in splits.pools:
            add(*_limit_cause(d, unit_of[d.pool], protocol), d.rows)
    if (out & (cause < 0)).any():
        counts = np.bincount(table.users, minlength=table.n_users)[table.users]  # (rows,)
        lo, hi = protocol.min_interactions, protocol.max_interactions
        add(*_limit_cause(PoolDrop("", "min_interactions", lo, np.zeros(0)), "user", protocol),
            np.nonzero(counts < lo)[0])  # fmt: skip
        if hi is not None:
            add(*_limit_cause(PoolDrop("", "max_interactions", hi, np.zeros(0)), "user", protocol),
                np.nonzero(counts > hi)[0])  # fmt: skip
        if (
            protocol.split == "predefined"
            and protocol.target_domain is not None
            and table.parts is not None
        ):
            tdom = int(table.domain_ids.encode([protocol.target_domain])[0])
            add("protocol.target_domain", protocol.target_domain,
                "held-out interactions of the other domains: only the target domain is evaluated",
                'set protocol.target_domain = "none" to evaluate every domain',
                np.nonzero((table.parts > 0) & (table.domains != tdom))[0])  # fmt: skip
        add("protocol.split", protocol.split, "in no pool of this split (by its design)", "",
            np.nonzero(out)[0])  # fmt: skip
    drops = list(table.filtered)
    for i, (key, value, rule, fix) in enumerate(causes):
        mine = cause == i
        drops.append(
            Drop(
                key,
                value,
                int(mine.sum()),
                lost_entities(table.users, mine, kept),
                lost_entities(table.items, mine, kept),
                rule,
                fix,
            )  # fmt: skip
        )
    return FilterReport(
        rows=(int(kept.sum()), n),
        users=(int(np.unique(table.users[kept]).shape[0]), int(np.unique(table.users).shape[0])),
        items=(int(np.unique(table.items[kept]).shape[0]), int(np.unique(table.items).shape[0])),
        drops=drops,
    )


def _limit_cause(d: PoolDrop, unit: str, p: ProtocolConfig) -> tuple[str, Any, str, str]:
    """``(key, value, rule, fix)`` of a pool limit."""
    units = _UNIT_WORDS.get(
        unit, f"{unit}s"
    )  # one cause over every pool, so users are counted once
    if d.limit == "max_interactions":
        key = "protocol.max_interactions" if d.value == p.max_interactions else ""
        return (key, d.value if key else None, f"{units} with more than {d.value} interactions",
                'set protocol.max_interactions = "none" (or higher) to keep them')  # fmt: skip
    if d.value == p.min_interactions:
        return ("protocol.min_interactions", d.value, f"{units} with fewer than {d.value} interactions",
                "lower protocol.min_interactions to keep them")  # fmt: skip
    return ("", None, f"{units} with fewer than {d.value} interactions: a task needs at least one support "
            "and one query interaction", "")  # fmt: skip


def check_selection_pool(splits: MetaSplits, protocol: ProtocolConfig) -> None:
    """Warn when the validation pool holds fewer than :data:`MIN_SELECTION_TASKS` tasks,
    naming the key that sizes it."""
    n = len(splits.pools[splits.val]) if splits.val in splits.pools else 0
    if n == 0 or n >= MIN_SELECTION_TASKS:
        return
    if protocol.split in ("random", "time"):
        key = f"protocol.fractions (its validation share, {protocol.fractions[1]:g})"
    else:
        key = f"protocol.val_fraction ({protocol.val_fraction:g})"
    warnings.warn(
        f"{splits.val} holds {n} task(s), fewer than {MIN_SELECTION_TASKS}: the best step and any tuned setting "
        f"are selected on it, and on so few tasks that choice is mostly noise; raise {key}, or lower "
        "protocol.min_interactions / raise protocol.max_interactions so that more units qualify",
        SmallPoolWarning,
        stacklevel=3,
    )


def log_report(report: FilterReport) -> None:
    """Log each filter that left something out (logger ``metarec.filters``, level INFO)."""
    for d in report.drops:
        _log.info(d.line())
