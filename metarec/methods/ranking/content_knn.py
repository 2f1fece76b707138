"""``content-knn``: items ranked by the similarity of their content to the support items, so cold
items (no interaction anywhere in meta-train) are ranked from their attributes and text.

Each ranked item's content vector concatenates one block per side feature of the table's
:class:`~metarec.data.features.FeatureTable`: a categorical or multi-valued feature (MovieLens:
genre, director, actors, rating, year) as indicators of its values, optionally IDF-weighted
(``log(n / df_v)`` over the items that have features), L2-normalised within the block; a text
feature as its embedding, L2-normalised, times the text weight. The concatenation is
L2-normalised, and ``sim(i, j)`` is the cosine of two items' vectors (an item without features
has similarity 0 to everything). A task with support ``S`` scores item ``i`` as the sum of its
``m`` largest similarities to the support items,
``score(i) = sum of the top-m of {sim(i, j) : j in S}`` (``m = None``: all of them) — no gradient step.

``m``, the IDF weighting and the text weight (when the table has text) are chosen on meta-val
(``ndcg@10_all`` at the scenario's shots) from :data:`SUPPORT_NEIGHBOURS` x ``(True, False)`` x
:data:`TEXT_WEIGHTS`. The similarities are a dense ``n x n`` matrix over the ranked items,
limited to ``max_items`` items.
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
from metarec.methods.ranking._itemitem import sum_dense_rows
from metarec.train.log import TrainingLog

__all__ = [
    "SUPPORT_NEIGHBOURS",
    "TEXT_WEIGHTS",
    "ContentKNNSettings",
    "content_similarity",
    "ContentKNNMethod",
    "ContentKNNFitted",
    "make_content_knn",
]

SUPPORT_NEIGHBOURS = (1, 3, None)
"""How many of the most similar support items each candidate sums (``None``: all)."""
TEXT_WEIGHTS = (0.5, 1.0, 2.0)
"""Text block weights tried on meta-val (tables with text features)."""


@dataclass(frozen=True)
class ContentKNNSettings:
    """``[learners.content-knn]``.

    Fields:
        support_neighbours: the ``m`` tried on meta-val (``"none"``: every support item).
        idf: IDF weightings tried (``[true, false]``).
        text_weights: text block weights tried (when the table has text features).
        max_items: refuse more ranked items than this (the dense similarity matrix).
    """

    support_neighbours: tuple[int | None, ...] = SUPPORT_NEIGHBOURS
    idf: tuple[bool, ...] = (True, False)
    text_weights: tuple[float, ...] = TEXT_WEIGHTS
    max_items: int = 15_000

    def __post_init__(self) -> None:
        check_grid("content-knn", "support_neighbours", self.support_neighbours, 1)
        check_grid("content-knn", "text_weights", self.text_weights, 0)
        if not self.idf:
            raise ConfigError("learners.content-knn.idf=[]: give [true], [false] or [true, false]")


def content_similarity(
    table: InteractionTable, items: np.ndarray, *, idf: bool = True, text_weight: float = 1.0
) -> torch.Tensor:
    """``sim(i, j)``, the cosine of the content vectors of ``items`` (see the module docstring):
    ``float64 (n, n)``, 0 in the rows and columns of items without features. Built block by
    block (one feature's indicators at a time), never the whole concatenated vector.

    Raises:
        ConfigError: the table has no item features.
    """
    f = table.item_features
    if f is None or (not f.categorical and not f.text):
        raise ConfigError(
            "content-knn: the table has no item features; load categorical or text item features "
            "(MovieLens: data.melu_extra = true, data.item_text = [...]) or use itemknn / ease"
        )
    n = items.shape[0]
    present = torch.from_numpy(f.present[items])
    sims = torch.zeros(n, n, dtype=torch.float64)
    sq = torch.zeros(n, dtype=torch.float64)  # squared norm of the concatenated vector
    for name in sorted(f.categorical):
        vals = f.categorical[name][items]  # (n, L), 0 = none
        x = torch.zeros(n, len(f.vocabs[name]) + 1, dtype=torch.float64)
        rows = np.repeat(np.arange(n), vals.shape[1])
        x[torch.from_numpy(rows), torch.from_numpy(vals.reshape(-1).astype(np.int64))] = 1.0
        x[:, 0] = 0.0
        if idf:
            df = x[present].sum(dim=0)
            n_present = max(int(present.sum()), 1)
            x = x * torch.where(
                df > 0, torch.log(n_present / df.clamp(min=1.0)), torch.zeros_like(df)
            )
        x = _normalise(x)
        sims += x @ x.T
        sq += x.square().sum(dim=1)
    for name in sorted(f.text):
        x = text_weight * _normalise(torch.from_numpy(f.text[name][items]).double())
        sims += x @ x.T
        sq += x.square().sum(dim=1)
    norm = sq.sqrt()
    den = torch.outer(norm, norm)
    return torch.where(den > 0, sims / den.clamp(min=1e-300), torch.zeros_like(sims))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm (zero rows stay zero)."""
    n = x.norm(dim=1, keepdim=True)
    return torch.where(n > 0, x / n.clamp(min=1e-300), torch.zeros_like(x))


class ContentKNNFitted:
    """Dense content similarities over the ranked items."""

    score_kind = "rank"  # its scores order items; they are not ratings (never clipped)

    def __init__(
        self,
        table: InteractionTable,
        items: torch.Tensor,
        sims: torch.Tensor,
        *,
        support_neighbours: int | None,
        idf: bool,
        text_weight: float,
        tuning: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.table = "content-knn", table
        self.training_log = TrainingLog()  # closed form; tuning sets it (meta-val score)
        self.items, self.sims = items, sims
        self.support_neighbours, self.idf, self.text_weight = support_neighbours, idf, text_weight
        self.tuning = tuning or {}

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> ItemScoresAdapted:
        task, item = support_lists(support, self.table.feedback)
        pos = positions(self.items, item)
        T, m = support.n_tasks, self.support_neighbours
        if m is None:
            rows = sum_dense_rows(task, pos, T, self.sims)
        else:
            ok = pos >= 0
            task, pos = task[ok], pos[ok]
            counts = torch.bincount(task, minlength=T)
            width = max(int(counts.max()) if counts.numel() else 0, 1)
            slot = torch.arange(task.shape[0]) - torch.repeat_interleave(
                torch.cumsum(counts, 0) - counts, counts
            )
            stack = torch.full((T, width, self.items.shape[0]), -torch.inf)  # (T, |S|, n)
            stack[task, slot] = self.sims[pos]
            top = torch.topk(stack, min(m, width), dim=1).values
            rows = torch.where(torch.isinf(top), torch.zeros_like(top), top).sum(dim=1)
        full = torch.zeros(T, self.table.n_items, dtype=torch.float32)
        full[:, self.items] = rows.float()
        return ItemScoresAdapted(full)

    def config(self) -> dict[str, Any]:
        return {
            "support_neighbours": self.support_neighbours,
            "idf": self.idf,
            "text_weight": self.text_weight,
            "n_items": int(self.items.shape[0]),
            "tuning": self.tuning,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"items": self.items, "sims": self.sims}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        n = int(self.items.shape[0])
        load_tensors(self, state, {"items": (n,), "sims": (n, n)})

    @classmethod
    def build(
        cls, name: str, config: Mapping[str, Any], table: InteractionTable
    ) -> ContentKNNFitted:
        """An empty shell of ``config`` (fill it with :meth:`load_state_dict`)."""
        n = int(config.get("n_items", 0))
        m = config.get("support_neighbours")
        return cls(
            table,
            torch.zeros(n, dtype=torch.long),
            torch.zeros(n, n),
            support_neighbours=None if m is None else int(m),
            idf=bool(config.get("idf", True)),
            text_weight=float(config.get("text_weight", 1.0)),
            tuning=config.get("tuning"),
        )


class ContentKNNMethod:
    """``content-knn`` (see the module docstring)."""

    name = "content-knn"

    def __init__(
        self, settings: ContentKNNSettings | None = None, protocol: Protocol | None = None
    ) -> None:
        self.settings = settings or ContentKNNSettings()
        self.protocol = protocol or Protocol.of(None)

    def fit(self, data: FitData) -> ContentKNNFitted:
        table, st = data.table, self.settings
        items = universe(table, data.splits)
        if items.shape[0] > st.max_items:
            raise ConfigError(
                f"content-knn: {items.shape[0]} ranked items exceed learners.content-knn.max_items={st.max_items} "
                "(a dense item x item similarity matrix); raise max_items if memory allows "
                f"({4 * items.shape[0] ** 2 / 2**20:,.0f} MiB in float32)"
            )
        has_text = bool(table.item_features is not None and table.item_features.text)
        weights = st.text_weights if has_text else (1.0,)
        cache: dict[tuple[bool, float], torch.Tensor] = {}
        items_t = torch.from_numpy(items)

        def build(point: Mapping[str, Any]) -> ContentKNNFitted:
            key = (point["idf"], point["text_weight"])
            if key not in cache:
                cache[key] = content_similarity(
                    table, items, idf=key[0], text_weight=key[1]
                ).float()
            return ContentKNNFitted(
                table,
                items_t,
                cache[key],
                support_neighbours=point["support_neighbours"],
                idf=key[0],
                text_weight=key[1],
            )

        grid = [
            {"support_neighbours": m, "idf": i, "text_weight": w}
            for i in st.idf
            for w in weights
            for m in st.support_neighbours
        ]
        best, log = tune("content-knn", grid, build, data, self.protocol)
        best.tuning = log
        return best


def make_content_knn(scenario: Any = None, **settings: Any) -> ContentKNNMethod:
    """``content-knn`` over the scenario's protocol; ``settings``: see :class:`ContentKNNSettings`."""
    return ContentKNNMethod(
        parse(ContentKNNSettings, "content-knn", scenario, settings), Protocol.of(scenario)
    )
