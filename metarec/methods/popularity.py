"""``popularity`` through the method interface: one score per item from meta-train, no adaptation.

* explicit feedback: each item's mean meta-train rating shrunk towards the global mean,
  ``score_i = (sum_{r in R_i} r + m * mu) / (|R_i| + m)`` with ``R_i`` the item's meta-train
  ratings, ``mu`` the mean of all meta-train ratings and ``m =`` :data:`PRIOR_STRENGTH` pseudo
  ratings; an item never rated in meta-train (a cold item) gets ``mu``;
* implicit feedback: the item's number of meta-train interactions.

``adapt`` ignores the support and ``score`` looks the items up, the same row for every task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError
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
]

PRIOR_STRENGTH = 5.0
"""Pseudo ratings at the global mean added to every item's mean rating (explicit feedback)."""


def item_scores(
    table: InteractionTable, rows: np.ndarray, prior: float = PRIOR_STRENGTH
) -> np.ndarray:
    """Popularity score of every item index from the table rows ``rows`` (meta-train):
    ``float64 (n_items,)``, see the module docstring for the formulas."""
    items = table.items[rows]
    count = np.bincount(items, minlength=table.n_items).astype(np.float64)
    if table.feedback == "implicit":
        return count
    r = table.ratings[rows].astype(np.float64)
    mu = float(r.mean()) if r.size else 0.0
    total = np.bincount(items, weights=r, minlength=table.n_items)
    return (total + prior * mu) / (count + prior)


@dataclass
class PopularityAdapted:
    scores: torch.Tensor  # (n_items,)
    tasks: int

    @property
    def n_tasks(self) -> int:
        return self.tasks

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` item indices -> ``(T, N)`` item scores (``users`` unused)."""
        return self.scores.to(items.device)[items]

    def select(self, rows: torch.Tensor) -> PopularityAdapted:
        return PopularityAdapted(self.scores, int(rows.shape[0]))

    @classmethod
    def concat(cls, parts: list[PopularityAdapted]) -> PopularityAdapted:
        return cls(parts[0].scores, sum(p.tasks for p in parts))


class PopularityFitted:
    """Item scores ``(n_items,)`` (float64)."""

    def __init__(
        self, table: InteractionTable, scores: torch.Tensor, prior: float = PRIOR_STRENGTH
    ) -> None:
        self.name, self.table, self.scores, self.prior = "popularity", table, scores, prior
        self.training_log = TrainingLog()  # counted, not trained

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> PopularityAdapted:
        return PopularityAdapted(self.scores, support.n_tasks)

    def config(self) -> dict[str, Any]:
        return {"prior_strength": self.prior}

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
        return cls(
            table,
            torch.zeros(table.n_items, dtype=torch.float64),
            float(config.get("prior_strength", PRIOR_STRENGTH)),
        )


class PopularityMethod:
    name = "popularity"

    def fit(self, data: FitData) -> PopularityFitted:
        rows = data.splits.pools[data.splits.train].rows
        s = torch.as_tensor(item_scores(data.table, rows), dtype=torch.float64)
        return PopularityFitted(data.table, s)
