"""``ease``: EASE^R, the closed-form item-item autoencoder (Steck, WWW 2019).

With ``X`` the binary meta-train user x item matrix over the kept items (below):

``P = (X^T X + lambda I)^{-1}``, ``B = I - P diag(1 / diag(P))``, i.e. ``B_ij = -P_ij / P_jj``
for ``i != j`` and ``B_ii = 0`` (the solution of ``min_B ||X - X B||^2 + lambda ||B||^2`` with a
zero diagonal). A task with support ``S`` scores item ``i`` as ``score(i) = sum_{j in S} B_ji``:
the support, read as one row of ``X``, times ``B`` — no gradient step.

**Memory.** ``B`` is dense: ``n^2`` numbers, and the fit holds about ``32 n^2`` bytes (the Gram
matrix, the Cholesky factor and the inverse in float64, the best and the current ``B``). The
kept items are the ``max_items`` (default :data:`MAX_ITEMS`) ranked items with the most
meta-train interactions (at least one; ties: lower index). MovieLens catalogues (under 4,000
items) are kept whole; on the Amazon pairs (30,000 to 50,000 items per domain) the long tail of
items with one or two meta-train interactions is left out: such items are ranked after every
kept item (their score is the task's lowest kept score minus 1), which costs little, since
their rows of ``B`` are nearly zero at the chosen ``lambda``. A ``max_items`` whose solve would
need more than ``memory_mb`` is refused with the limit named; ``itemknn`` (sparse
neighbourhoods) ranks a whole catalogue of any size.

``lambda`` is chosen on meta-val (``ndcg@10_all`` at the scenario's shots) from :data:`LAMBDAS`
(``[learners.ease] lambdas = [...]``).
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
from metarec.methods.ranking._itemitem import gram_dense, sum_dense_rows
from metarec.train.log import TrainingLog

__all__ = [
    "LAMBDAS",
    "MAX_ITEMS",
    "EASESettings",
    "ease_weights",
    "EASEMethod",
    "EASEFitted",
    "make_ease",
    "make_ease_source",
]

LAMBDAS = (1.0, 10.0, 100.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0)
"""L2 strengths ``lambda`` tried on meta-val."""
MAX_ITEMS = 10_000
"""Items kept by default (the most interacted in meta-train)."""


@dataclass(frozen=True)
class EASESettings:
    """``[learners.ease]``.

    Fields:
        lambdas: L2 strengths tried on meta-val (each ``> 0``).
        max_items: the most-interacted items kept in ``B``.
        memory_mb: refuse a solve needing more than this (about ``32 * max_items^2`` bytes: the
            Gram matrix, the Cholesky factor and the inverse in float64, two ``B`` in float32).
    """

    lambdas: tuple[float, ...] = LAMBDAS
    max_items: int = MAX_ITEMS
    memory_mb: float = 4096.0

    def __post_init__(self) -> None:
        check_grid("ease", "lambdas", self.lambdas, 0, strict=True)
        if self.max_items < 1:
            raise ConfigError(f"learners.ease.max_items={self.max_items}: must be >= 1; e.g. 10000")
        need = 32 * self.max_items**2 / 2**20
        if need > self.memory_mb:
            fit = int((self.memory_mb * 2**20 / 32) ** 0.5)
            raise ConfigError(
                f"learners.ease.max_items={self.max_items}: the dense EASE solve needs about "
                f"{need:,.0f} MiB (32 bytes x {self.max_items}^2), over "
                f"learners.ease.memory_mb={self.memory_mb:g}; set max_items <= {fit} (the "
                "most-interacted items), or rank the whole catalogue with itemknn (sparse "
                "neighbourhoods)"
            )


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """``B = I - P diag(1 / diag(P))`` with ``P = (G + lambda I)^{-1}``, zero diagonal, for a Gram
    matrix ``G = X^T X`` (``float64 (n, n)``); computed in float64 through a Cholesky inverse."""
    g = torch.from_numpy(np.asarray(gram, dtype=np.float64)).clone()
    g.diagonal().add_(lam)
    chol = torch.linalg.cholesky(g)
    del g
    p = torch.cholesky_inverse(chol)
    del chol
    p /= -torch.diagonal(p).clone().unsqueeze(0)
    p.fill_diagonal_(0.0)
    return p.numpy()


class EASEFitted:
    """``B`` over the kept items (see the module docstring)."""

    score_kind = "rank"  # its scores order items; they are not ratings (never clipped)

    def __init__(
        self,
        table: InteractionTable,
        items: torch.Tensor,
        weights: torch.Tensor,
        *,
        lam: float,
        tuning: dict[str, Any] | None = None,
        ranked: int | None = None,
        history: tuple[torch.Tensor, torch.Tensor] | None = None,
        name: str = "ease",
    ) -> None:
        self.name, self.table = name, table
        self.training_log = TrainingLog()  # closed form; tuning sets it (meta-val score)
        self.items, self.weights = items, weights
        self.lam, self.tuning, self.ranked = lam, tuning or {}, ranked
        # ease-source: each table user's meta-train source-domain items (CSR over table items)
        self.hist_ptr: torch.Tensor | None = None if history is None else history[0]
        self.hist_items: torch.Tensor | None = None if history is None else history[1]

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> ItemScoresAdapted:
        task, item = support_lists(support, self.table.feedback)
        if self.hist_ptr is not None and self.hist_items is not None:  # + the source history
            task, item = _with_history(support, task, item, self.hist_ptr, self.hist_items)
        kept = sum_dense_rows(task, positions(self.items, item), support.n_tasks, self.weights)
        floor = (
            (kept.min(dim=1, keepdim=True).values - 1.0)
            if kept.shape[1]
            else torch.zeros(support.n_tasks, 1)
        )
        full = floor.expand(support.n_tasks, self.table.n_items).clone()
        full[:, self.items] = kept
        return ItemScoresAdapted(full)

    def config(self) -> dict[str, Any]:
        return {
            "lambda": self.lam,
            "n_items": int(self.items.shape[0]),
            "ranked_items": self.ranked,
            "tuning": self.tuning,
            "history": None if self.hist_items is None else int(self.hist_items.shape[0]),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {"items": self.items, "weights": self.weights}
        if self.hist_ptr is not None and self.hist_items is not None:
            out |= {"hist_ptr": self.hist_ptr, "hist_items": self.hist_items}
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        n = int(self.items.shape[0])
        shapes: dict[str, tuple[int, ...] | None] = {"items": (n,), "weights": (n, n)}
        if self.hist_items is not None:
            shapes |= {"hist_ptr": (self.table.n_users + 1,), "hist_items": None}
        load_tensors(self, state, shapes)

    @classmethod
    def build(cls, name: str, config: Mapping[str, Any], table: InteractionTable) -> EASEFitted:
        """An empty shell of ``config`` (fill it with :meth:`load_state_dict`)."""
        n = int(config.get("n_items", 0))
        return cls(
            table,
            torch.zeros(n, dtype=torch.long),
            torch.zeros(n, n),
            lam=float(config.get("lambda", 1.0)),
            tuning=config.get("tuning"),
            ranked=config.get("ranked_items"),
            history=(
                None
                if config.get("history") is None
                else (
                    torch.zeros(table.n_users + 1, dtype=torch.long),
                    torch.zeros(int(config["history"]), dtype=torch.long),
                )
            ),
            name=name,
        )


def _with_history(
    support: EpisodeSet,
    task: torch.Tensor,
    item: torch.Tensor,
    ptr: torch.Tensor,
    hist: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(task, item)`` of the support plus each task user's source-domain history items."""
    first = support.mask.float().argmax(dim=1)
    user = support.users.cpu().gather(1, first[:, None]).squeeze(1)
    ts, its = [task], [item]
    for t, u in enumerate(user.tolist()):
        if bool(support.mask[t].any()) and 0 <= u < ptr.shape[0] - 1:
            h = hist[ptr[u] : ptr[u + 1]]
            ts.append(torch.full_like(h, t))
            its.append(h)
    return torch.cat(ts), torch.cat(its)


def source_history(
    table: InteractionTable, rows: np.ndarray, target: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each table user's distinct items among meta-train ``rows`` outside the ``target`` items,
    as CSR ``(ptr (n_users + 1,), items)``."""
    keep = ~np.isin(table.items[rows], target)
    key = np.unique(
        table.users[rows][keep].astype(np.int64) * table.n_items + table.items[rows][keep]
    )
    users, items = key // table.n_items, key % table.n_items
    ptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=table.n_users))])
    return torch.from_numpy(ptr).long(), torch.from_numpy(items).long()


class EASEMethod:
    """``ease`` (see the module docstring)."""

    name = "ease"

    def __init__(
        self,
        settings: EASESettings | None = None,
        protocol: Protocol | None = None,
        *,
        history: bool = False,
    ) -> None:
        self.settings = settings or EASESettings()
        self.protocol = protocol or Protocol.of(None)
        self.history = history
        self.name = "ease-source" if history else "ease"

    def fit(self, data: FitData) -> EASEFitted:
        table, splits = data.table, data.splits
        ranked = universe(table, splits)
        rows = splits.pools[splits.train].rows
        all_counts = np.bincount(table.items[rows], minlength=table.n_items)
        counts = all_counts[ranked]
        order = np.lexsort((ranked, -counts))  # most interacted first, ties: lower index
        keep = order[counts[order] > 0][: self.settings.max_items]
        if keep.size == 0:
            raise ConfigError(
                f"{self.name}: no ranked item has a meta-train interaction; EASE learns item-item "
                "weights from meta-train (use content-knn for cold items)"
            )
        items = np.sort(ranked[keep])
        history = None
        if self.history:  # the source domains' items share the budget of max_items
            if np.unique(table.domains).size < 2:
                raise ConfigError(
                    "ease-source: the table has one domain, so a user has no source-domain "
                    "history; use ease, or a two-domain scenario (e.g. "
                    "tasks/ml1m-cross-genre-ranking.toml)"
                )
            src = np.setdiff1d(np.flatnonzero(all_counts > 0), ranked)
            src = src[np.lexsort((src, -all_counts[src]))][
                : max(self.settings.max_items - len(items), 0)
            ]
            items = np.sort(np.concatenate([items, src]))
            history = source_history(table, rows, ranked)
        pos = np.searchsorted(items, table.items[rows])
        inside = (pos < items.shape[0]) & (
            items[np.minimum(pos, items.shape[0] - 1)] == table.items[rows]
        )
        gram = gram_dense(table.users[rows][inside], pos[inside], items.shape[0])
        items_t = torch.from_numpy(items)

        def build(point: Mapping[str, Any]) -> EASEFitted:
            b = torch.from_numpy(ease_weights(gram, point["lambda"])).float()
            return EASEFitted(
                table,
                items_t,
                b,
                lam=point["lambda"],
                ranked=int(ranked.shape[0]),
                history=history,
                name=self.name,
            )

        best, log = tune(
            self.name,
            [{"lambda": lam} for lam in self.settings.lambdas],
            build,
            data,
            self.protocol,
        )
        best.tuning = log
        return best


def make_ease(scenario: Any = None, **settings: Any) -> EASEMethod:
    """``ease`` over the scenario's protocol; ``settings``: ``lambdas``, ``max_items``, ``memory_mb``."""
    return EASEMethod(parse(EASESettings, "ease", scenario, settings), Protocol.of(scenario))


def make_ease_source(scenario: Any = None, **settings: Any) -> EASEMethod:
    """``ease-source``: EASE^R over the target catalogue and the source domains' items, a cold
    user's row being their target support plus their meta-train source-domain history (the
    cross-domain form of the baseline); settings as ``ease`` (``[learners.ease-source]``)."""
    return EASEMethod(
        parse(EASESettings, "ease-source", scenario, settings), Protocol.of(scenario), history=True
    )
