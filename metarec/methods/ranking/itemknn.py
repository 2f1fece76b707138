"""``itemknn``: item-based nearest neighbours over meta-train co-occurrence (Sarwar et al., WWW
2001; the shrunk cosine and column-wise neighbourhoods of Aiolli, RecSys 2013, as RecBole's
ItemKNN computes them).

With ``X`` the binary meta-train user x item matrix over the ranked items (the union of the
evaluation catalogues) and ``x_i`` its column ``i``:

* ``sim(i, j) = x_i . x_j / (||x_i|| ||x_j|| + h)`` for ``i != j`` (shrinkage ``h`` damps pairs
  of rare items);
* ``N_K(i)``: the ``K`` items most similar to ``i`` (ties: lower index);
* a task with support ``S`` (its interactions; implicit: its positives) scores item ``i`` as
  ``score(i) = sum_{j in S, j in N_K(i)} sim(i, j)`` — no gradient step: the support is read.

``K`` and ``h`` are chosen on meta-val (``ndcg@10_all`` at the scenario's shots) from the grid
:data:`NEIGHBOURS` x :data:`SHRINKS` (``[learners.itemknn] neighbours = [...]``,
``shrinks = [...]``). The neighbourhoods are kept as ``K`` entries per item, so memory is
``O(n K)`` whatever the catalogue size (co-occurrence is computed as sorted pairs beyond
:data:`~metarec.methods.ranking._itemitem.DENSE_ITEMS` items).

Example:
    >>> fitted = build_method("itemknn", scenario).fit(FitData(table, splits))   # doctest: +SKIP
    >>> fitted.adapt(batch.support).score_catalogue(items)                      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.methods.base import FitData
from metarec.methods.ranking._common import (
    ItemScoresAdapted,
    Protocol,
    check_grid,
    load_tensors,
    parse,
    positions,
    support_lists,
    tune,
    universe,
)
from metarec.methods.ranking._itemitem import cosine_topk, neighbours_by_source, sum_sparse_rows
from metarec.train.log import TrainingLog

__all__ = [
    "NEIGHBOURS",
    "SHRINKS",
    "ItemKNNSettings",
    "ItemKNNMethod",
    "ItemKNNFitted",
    "make_itemknn",
]

NEIGHBOURS = (50, 100, 200, 500, 1000, 2000)
"""Neighbourhood sizes ``K`` tried on meta-val."""
SHRINKS = (0.0, 10.0, 100.0, 500.0, 2000.0)
"""Shrinkages ``h`` tried on meta-val."""


@dataclass(frozen=True)
class ItemKNNSettings:
    """``[learners.itemknn]``: the grid tried on meta-val.

    Fields:
        neighbours: neighbourhood sizes ``K`` (each ``>= 1``).
        shrinks: cosine shrinkages ``h`` (each ``>= 0``).
    """

    neighbours: tuple[int, ...] = NEIGHBOURS
    shrinks: tuple[float, ...] = SHRINKS

    def __post_init__(self) -> None:
        check_grid("itemknn", "neighbours", self.neighbours, 1)
        check_grid("itemknn", "shrinks", self.shrinks, 0)


class ItemKNNFitted:
    """Neighbourhoods as rows by source item over the ranked items (see the module docstring)."""

    score_kind = "rank"  # its scores order items; they are not ratings (never clipped)

    def __init__(
        self,
        table: InteractionTable,
        items: torch.Tensor,
        offsets: torch.Tensor,
        cols: torch.Tensor,
        vals: torch.Tensor,
        *,
        neighbours: int,
        shrink: float,
        tuning: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.table = "itemknn", table
        self.training_log = TrainingLog()  # closed form; tuning sets it (meta-val score)
        self.items, self.offsets, self.cols, self.vals = items, offsets, cols, vals
        self.neighbours, self.shrink, self.tuning = neighbours, shrink, tuning or {}

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> ItemScoresAdapted:
        task, item = support_lists(support, self.table.feedback)
        pos = positions(self.items, item)
        n = self.items.shape[0]
        rows = sum_sparse_rows(task, pos, support.n_tasks, self.offsets, self.cols, self.vals, n)
        full = torch.zeros(support.n_tasks, self.table.n_items, dtype=torch.float32)
        full[:, self.items] = rows
        return ItemScoresAdapted(full)

    def config(self) -> dict[str, Any]:
        return {
            "neighbours": self.neighbours,
            "shrink": self.shrink,
            "n_items": int(self.items.shape[0]),
            "n_weights": int(self.cols.shape[0]),
            "tuning": self.tuning,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"items": self.items, "offsets": self.offsets, "cols": self.cols, "vals": self.vals}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        n, w = int(self.items.shape[0]), int(self.cols.shape[0])
        load_tensors(self, state, {"items": (n,), "offsets": (n + 1,), "cols": (w,), "vals": (w,)})

    @classmethod
    def build(cls, name: str, config: Mapping[str, Any], table: InteractionTable) -> ItemKNNFitted:
        """An empty shell of ``config`` (fill it with :meth:`load_state_dict`)."""
        n, w = int(config.get("n_items", 0)), int(config.get("n_weights", 0))
        z = torch.zeros
        return cls(
            table,
            z(n, dtype=torch.long),
            z(n + 1, dtype=torch.long),
            z(w, dtype=torch.long),
            z(w, dtype=torch.float64),
            neighbours=int(config.get("neighbours", 1)),
            shrink=float(config.get("shrink", 0.0)),
            tuning=config.get("tuning"),
        )


class ItemKNNMethod:
    """``itemknn`` (see the module docstring)."""

    name = "itemknn"

    def __init__(
        self, settings: ItemKNNSettings | None = None, protocol: Protocol | None = None
    ) -> None:
        self.settings = settings or ItemKNNSettings()
        self.protocol = protocol or Protocol.of(None)

    def fit(self, data: FitData) -> ItemKNNFitted:
        table, splits = data.table, data.splits
        items = universe(table, splits)
        rows = splits.pools[splits.train].rows
        pos = np.searchsorted(items, table.items[rows])
        inside = (pos < items.shape[0]) & (
            items[np.minimum(pos, items.shape[0] - 1)] == table.items[rows]
        )
        if not inside.any():
            raise ConfigError(
                "itemknn: no meta-train interaction touches the ranked catalogue; item-item similarity needs "
                "meta-train interactions with those items (use content-knn for cold items)"
            )
        k_max = max(self.settings.neighbours)
        _, by_shrink = cosine_topk(
            table.users[rows][inside], pos[inside], items.shape[0], self.settings.shrinks, k_max
        )
        items_t = torch.from_numpy(items)

        def build(point: Mapping[str, Any]) -> ItemKNNFitted:
            off, cols, vals = neighbours_by_source(by_shrink[point["shrink"]], point["neighbours"])
            return ItemKNNFitted(
                table,
                items_t,
                off,
                cols,
                vals,
                neighbours=point["neighbours"],
                shrink=point["shrink"],
            )

        grid = [
            {"neighbours": k, "shrink": h}
            for h in self.settings.shrinks
            for k in self.settings.neighbours
        ]
        best, log = tune("itemknn", grid, build, data, self.protocol)
        best.tuning = log
        return best


def make_itemknn(scenario: Any = None, **settings: Any) -> ItemKNNMethod:
    """``itemknn`` over the scenario's protocol; ``settings``: ``neighbours``, ``shrinks``."""
    return ItemKNNMethod(
        parse(ItemKNNSettings, "itemknn", scenario, settings), Protocol.of(scenario)
    )
