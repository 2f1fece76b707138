"""Hyper-parameters chosen per support size: a fitted method that holds one member per distinct
choice and adapts each task with the member chosen for the nearest support size.

A cold user with one interaction and one with twenty are different problems: a closed-form
baseline shrinks its item-item evidence more with one shot than with twenty (EASE's best
``lambda`` on ML-1M meta-val differs by orders of magnitude between 1 and 20 shots). The
baselines' tuning (:func:`metarec.methods.ranking._common.tune`) therefore scores every grid
point on meta-val at **each** of the scenario's shots and keeps, per support size, the best point;
:class:`ByShots` is the result when the choices differ. A task is adapted by the member of the
support size nearest to its own, in log scale (:func:`nearest_shot`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from metarec._errors import CheckpointError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.train.log import TrainingLog

__all__ = ["ByShots", "nearest_shot", "by_shots_loader"]


def nearest_shot(shots: Sequence[int], sizes: torch.Tensor) -> torch.Tensor:
    """Index into ``shots`` of the support size nearest to each of ``sizes`` in log scale
    (``int64 (T,)``; a size 0 counts as 1).

    Example:
        >>> nearest_shot([1, 5, 20], torch.tensor([0, 2, 3, 9, 11, 40]))
        tensor([0, 0, 1, 1, 2, 2])
    """
    grid = torch.log(torch.tensor([float(k) for k in shots], dtype=torch.float64))
    x = torch.log(sizes.double().clamp(min=1.0))
    return (x[:, None] - grid[None, :]).abs().argmin(dim=1)


class ByShots:
    """Members chosen per support size (see the module docstring).

    Attributes:
        name, table: the method's name and table (as every fitted method).
        shots: the support sizes tuned on, ascending.
        which: ``which[i]`` is the member chosen for ``shots[i]``.
        members: the distinct fitted members.
    """

    def __init__(
        self,
        name: str,
        table: InteractionTable,
        shots: Sequence[int],
        which: Sequence[int],
        members: Sequence[Any],
    ) -> None:
        self.name, self.table = name, table
        self.shots = [int(k) for k in shots]
        self.which = [int(i) for i in which]
        self.members = list(members)
        self.training_log = TrainingLog()
        self.tuning: dict[str, Any] = {}

    @property
    def score_kind(self) -> str:
        """The members' kind of score (``"rank"``: they order items, they are not ratings)."""
        return str(getattr(self.members[0], "score_kind", "rating"))

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> Any:
        """Adapt each task with the member chosen for its support size; the members' adapted
        rows are put back in task order (``select`` / ``concat`` of the adapted objects)."""
        member = torch.tensor(self.which)[nearest_shot(self.shots, support.sizes().cpu())]
        used = member.unique().tolist()
        if len(used) == 1:
            return self.members[used[0]].adapt(support, steps=steps, lr=lr)
        parts, order = [], []
        for m in used:
            rows = torch.nonzero(member == m).flatten()
            parts.append(self.members[m].adapt(support.select(rows), steps=steps, lr=lr))
            order.append(rows)
        adapted = type(parts[0]).concat(parts)
        back = torch.empty(support.n_tasks, dtype=torch.long)
        back[torch.cat(order)] = torch.arange(support.n_tasks)
        return adapted.select(back)

    def config(self) -> dict[str, Any]:
        return {
            "by_shots": {
                "shots": self.shots,
                "which": self.which,
                "members": [m.config() for m in self.members],
            },
            "tuning": self.tuning,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"member{i}.{k}": v
            for i, m in enumerate(self.members)
            for k, v in m.state_dict().items()
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for i, m in enumerate(self.members):
            prefix = f"member{i}."
            m.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
        extra = [
            k
            for k in state
            if not k.startswith(tuple(f"member{i}." for i in range(len(self.members))))
        ]
        if extra:
            raise CheckpointError(
                f"state_dict: {extra[:3]} belong to no member of {self.name}'s {len(self.members)}; "
                "the weights belong to another run; re-train"
            )


def by_shots_loader(
    member: Callable[[str, Mapping[str, Any], InteractionTable], Any],
) -> Callable[[str, Mapping[str, Any], InteractionTable], Any]:
    """A run-directory loader that rebuilds a :class:`ByShots` (its members through ``member``)
    from its config, and a single fitted member otherwise."""

    def load(name: str, config: Mapping[str, Any], table: InteractionTable) -> Any:
        spec = config.get("by_shots")
        if not isinstance(spec, Mapping):
            return member(name, config, table)
        members = [member(name, c, table) for c in spec["members"]]
        out = ByShots(name, table, spec["shots"], spec["which"], members)
        out.tuning = dict(config.get("tuning") or {})
        return out

    return load


def choose(scores: Sequence[Sequence[float]]) -> list[int]:
    """Per column (support size) of ``scores[point][shot]``, the best point (the first on ties;
    the first point when no score is finite)."""
    n_shots = len(scores[0]) if scores else 0
    out = []
    for j in range(n_shots):
        best, arg = -math.inf, 0
        for i, row in enumerate(scores):
            if math.isfinite(row[j]) and row[j] > best:
                best, arg = row[j], i
        out.append(arg)
    return out
