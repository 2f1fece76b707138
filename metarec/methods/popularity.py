"""``popularity`` through the method interface: one score per item from meta-train, no adaptation.

Two kinds of score (setting ``by``, ``[learners.popularity] by = "count"``):

* ``"mean"`` (explicit feedback): each item's mean meta-train rating shrunk towards the global
  mean, ``score_i = (sum_{r in R_i} r + m * mu) / (|R_i| + m)`` with ``R_i`` the item's
  meta-train ratings, ``mu`` the mean of all meta-train ratings and ``m =``
  :data:`PRIOR_STRENGTH` pseudo ratings; an item never rated in meta-train (a cold item) gets
  ``mu``. A rating prediction: what the rating scenarios (MAE) score;
* ``"count"``: the item's number of meta-train interactions, the popularity that ranks a
  catalogue (the field's "most popular" baseline). Its scores are not ratings.

``by = "auto"`` (the default) is ``"count"`` with implicit feedback or in a ranking scenario
(``protocol.ranking``), else ``"mean"``. ``adapt`` ignores the support and ``score`` looks the
items up, the same row for every task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.methods.base import FitData
from metarec.train.log import TrainingLog

__all__ = [
    "PRIOR_STRENGTH",
    "item_scores",
    "PopularityMethod",
    "PopularityFitted",
    "PopularityAdapted",
    "make_popularity",
]

PRIOR_STRENGTH = 5.0
"""Pseudo ratings at the global mean added to every item's mean rating (explicit feedback)."""


def item_scores(
    table: InteractionTable, rows: np.ndarray, prior: float = PRIOR_STRENGTH, by: str = "auto"
) -> np.ndarray:
    """Popularity score of every item index from the table rows ``rows`` (meta-train):
    ``float64 (n_items,)``, see the module docstring for the formulas (``by``: ``"auto"``
    is ``"count"`` with implicit feedback, else ``"mean"``)."""
    items = table.items[rows]
    count = np.bincount(items, minlength=table.n_items).astype(np.float64)
    if by == "count" or (by == "auto" and table.feedback == "implicit"):
        return count
    r = table.ratings[rows].astype(np.float64)
    mu = float(r.mean()) if r.size else 0.0
    total = np.bincount(items, weights=r, minlength=table.n_items)
    return (total + prior * mu) / (count + prior)


@dataclass
class PopularityAdapted:
    scores: torch.Tensor  # (n_items,)
    tasks: int
    score_kind: str = "rating"  # "rank": counts, not ratings (no error metrics)

    @property
    def n_tasks(self) -> int:
        return self.tasks

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` item indices -> ``(T, N)`` item scores (``users`` unused)."""
        return self.scores.to(items.device)[items]

    def score_catalogue(self, items: torch.Tensor) -> torch.Tensor:
        """``items (C,)`` -> ``(T, C)``: the same row for every task."""
        return self.scores.to(items.device)[items].unsqueeze(0).expand(self.tasks, -1)

    def select(self, rows: torch.Tensor) -> PopularityAdapted:
        return PopularityAdapted(self.scores, int(rows.shape[0]), self.score_kind)

    @classmethod
    def concat(cls, parts: list[PopularityAdapted]) -> PopularityAdapted:
        return cls(parts[0].scores, sum(p.tasks for p in parts), parts[0].score_kind)


class PopularityFitted:
    """Item scores ``(n_items,)`` (float64)."""

    def __init__(
        self,
        table: InteractionTable,
        scores: torch.Tensor,
        prior: float = PRIOR_STRENGTH,
        by: str = "mean",
    ) -> None:
        self.name, self.table, self.scores, self.prior = "popularity", table, scores, prior
        self.by = by  # "count" or "mean" (resolved)
        self.training_log = TrainingLog()  # counted, not trained

    @property
    def score_kind(self) -> str:
        """``"rank"`` for counts (they order items, they are not ratings), else ``"rating"``."""
        return "rank" if self.by == "count" else "rating"

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> PopularityAdapted:
        return PopularityAdapted(self.scores, support.n_tasks, self.score_kind)

    def config(self) -> dict[str, Any]:
        return {"prior_strength": self.prior, "by": self.by}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"scores": self.scores.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        got = state.get("scores")
        if got is None or tuple(got.shape) != tuple(self.scores.shape):
            raise CheckpointError(
                f"state_dict: 'scores' has shape {None if got is None else tuple(got.shape)}, the catalogue needs "
                f"{tuple(self.scores.shape)}; the weights belong to another run; re-train"
            )
        self.scores = got.to(torch.float64)

    @classmethod
    def build(
        cls, name: str, config: Mapping[str, Any], table: InteractionTable
    ) -> PopularityFitted:
        by = config.get("by")  # runs saved before the setting: counts iff implicit
        if by is None:
            by = "count" if table.feedback == "implicit" else "mean"
        return cls(
            table,
            torch.zeros(table.n_items, dtype=torch.float64),
            float(config.get("prior_strength", PRIOR_STRENGTH)),
            str(by),
        )


_BY = ("auto", "count", "mean")


class PopularityMethod:
    """``popularity``; ``by``: ``"auto"``, ``"count"`` or ``"mean"`` (module docstring);
    ``ranking``: the scenario ranks a catalogue (``"auto"`` then means counts)."""

    name = "popularity"

    def __init__(self, by: str = "auto", *, ranking: bool = False) -> None:
        if by not in _BY:
            raise ConfigError(
                f'learners.popularity.by={by!r}: must be one of {list(_BY)}; "count" ranks by the number '
                'of meta-train interactions, "mean" predicts the shrunk mean rating'
            )
        self.by, self.ranking = by, ranking

    def fit(self, data: FitData) -> PopularityFitted:
        rows = data.splits.pools[data.splits.train].rows
        by = self.by
        if by == "auto":
            by = "count" if (self.ranking or data.table.feedback == "implicit") else "mean"
        s = torch.as_tensor(item_scores(data.table, rows, by=by), dtype=torch.float64)
        return PopularityFitted(data.table, s, by=by)


def make_popularity(scenario: Any = None, **settings: Any) -> PopularityMethod:
    """``popularity`` for a scenario: ``by`` from ``settings`` or ``[learners.popularity]``;
    ``"auto"`` counts in a ranking scenario (``protocol.ranking``)."""
    section = dict((getattr(scenario, "learners", None) or {}).get("popularity", {}) or {})
    merged = {**section, **settings}
    unknown = sorted(set(merged) - {"by"})
    if unknown:
        raise ConfigError(
            f'learners.popularity: unknown setting {unknown[0]!r}; the setting is by ("auto", "count" or "mean")'
        )
    ranking = bool(scenario is not None and scenario.protocol.ranking)
    return PopularityMethod(str(merged.get("by", "auto")), ranking=ranking)
