"""What a filter left out, and the scenario key that controls it: :class:`Drop`.

Every step that removes interactions records one :class:`Drop`: the data layer (merged
duplicates, ``data.domain_by`` rows without a domain) on the table
(:attr:`InteractionTable.filtered <metarec.data.table.InteractionTable>`), the protocol
(``protocol.min_interactions``, ``protocol.max_interactions``, ...) in the splits' filter
report (:mod:`metarec.episodes.filters`). ``metarec tasks inspect``, ``train`` and ``bench`` show
them, so nothing is dropped in silence.

>>> d = Drop("protocol.max_interactions", 100, rows=45_163, users=361, items=3,
...          rule="users with more than 100 interactions",
...          fix='set protocol.max_interactions = "none" to keep them')
>>> print(d.line())
protocol.max_interactions = 100: 45,163 rows, 361 users, 3 items left out (users with more than
100 interactions); set protocol.max_interactions = "none" to keep them
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Drop", "lost_entities"]


@dataclass(frozen=True)
class Drop:
    """Interactions one filter left out.

    Attributes:
        key: the scenario key that controls the filter (``"protocol.max_interactions"``), or
            ``""`` for a rule no key changes (a task needs one support and one query row).
        value: the key's value (``100``), or ``None``.
        rows: interactions left out.
        users, items: users / items left with no interaction at all by this filter.
        rule: what was left out, in words.
        fix: how to keep them (``""``: nothing keeps them).
    """

    key: str
    value: Any
    rows: int
    users: int
    items: int
    rule: str
    fix: str = ""

    def line(self) -> str:
        """One line for a terminal: the key and value, the counts, the rule and the fix."""
        what = f"{self.key} = {_literal(self.value)}: " if self.key else ""
        fix = f"; {self.fix}" if self.fix else ""
        return (
            f"{what}{self.rows:,} rows, {self.users:,} users, {self.items:,} items left out "
            f"({self.rule}){fix}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _literal(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def lost_entities(ids: np.ndarray, dropped: np.ndarray, kept: np.ndarray) -> int:
    """How many distinct ``ids`` occur in the ``dropped`` rows and in none of the ``kept`` rows
    (both boolean masks over ``ids``)."""
    return int(np.setdiff1d(np.unique(ids[dropped]), np.unique(ids[kept])).shape[0])
