"""k-shot catalogue-ranking tasks for a meta-learner that ranks: training draws and fixed meta-val sets.

A user's interactions over a *catalogue* (``C`` items, columns ``0..C-1``) become a task by a
random split: ``k`` of them form the support (their items and ratings are the model's input),
the user's other relevant interactions are the positives to rank above the rest of the
catalogue, and the support is excluded from the candidates. :class:`UserLists` holds the
users' lists padded to one width and draws a training batch with a support size per task
(:meth:`UserLists.draw`); :func:`fixed_tasks` pins meta-val tasks (one seeded order per user; the
first ``k`` entries are the support at every ``k``, as a bench's pinned query sets are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metarec.data.table import InteractionTable
from metarec.episodes.splits import MetaSplits

__all__ = [
    "UserLists",
    "TaskBatch",
    "fixed_tasks",
    "log_uniform_shots",
    "relevance",
    "domain_rows",
    "history_rows",
]


def relevance(table: InteractionTable, threshold: float | None) -> np.ndarray:
    """Per table row: is the interaction relevant? Implicit feedback: every positive; explicit:
    a rating >= ``threshold`` (``None``: ``low + 0.75 (high - low)`` of the rating scale, 4 on
    1..5)."""
    if table.feedback == "implicit":
        return table.ratings > 0
    if threshold is None:
        lo, hi = table.rating_scale or (float(table.ratings.min()), float(table.ratings.max()))
        threshold = lo + 0.75 * (hi - lo)
    return table.ratings >= threshold


def domain_rows(table: InteractionTable, splits: MetaSplits) -> tuple[np.ndarray, np.ndarray]:
    """``(target, source)`` meta-train rows: the target domain is the most common one among the
    evaluation pools' rows (every row is a target row when the table has one domain)."""
    rows = splits.pools[splits.train].rows
    evals = [p.rows for name, p in splits.pools.items() if name != splits.train and len(p)]
    if len(np.unique(table.domains[rows])) < 2 or not evals:
        return rows, rows[:0]
    target = int(np.bincount(table.domains[np.concatenate(evals)]).argmax())
    in_target = table.domains[rows] == target
    return rows[in_target], rows[~in_target]


def history_rows(
    table: InteractionTable, rows: np.ndarray, length: int, seed: int = 0
) -> np.ndarray:
    """Each table user's rows among ``rows`` (at most ``length``, a seeded random subset):
    ``int64 (n_users, length)``, ``-1`` at padding."""
    rng = np.random.default_rng([seed, 5])
    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[np.lexsort((rng.random(rows.shape[0]), table.users[rows]))]
    users = table.users[rows]
    counts = np.bincount(users, minlength=table.n_users)
    rank = np.arange(rows.shape[0]) - (np.cumsum(counts) - counts)[users]
    keep = rank < length
    out = np.full((table.n_users, length), -1, dtype=np.int64)
    out[users[keep], rank[keep]] = rows[keep]
    return out


@dataclass
class TaskBatch:
    """A batch of ``B`` k-shot catalogue tasks.

    Attributes:
        users: ``int64 (B,)`` table user indices.
        support: ``int64 (B, K)`` catalogue columns of the support (0 at padding); ``ratings``
            ``(B, K)``; ``mask`` ``bool (B, K)``.
        positives: ``int64 (B, P)`` catalogue columns of the held-out relevant items (0 at
            padding); ``pos_mask`` ``bool (B, P)``.
        own, own_mask: ``(B, L)`` every catalogue column of the user's list (support and
            held-out alike), and which are real.
    """

    users: torch.Tensor
    support: torch.Tensor
    ratings: torch.Tensor
    mask: torch.Tensor
    positives: torch.Tensor
    pos_mask: torch.Tensor
    own: torch.Tensor
    own_mask: torch.Tensor

    def targets(self, n_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(targets (B, C), exclude (B, C))`` bool: the positives and the support as dense rows."""
        B = self.users.shape[0]
        tgt = torch.zeros(B, n_columns, dtype=torch.bool)
        ex = torch.zeros(B, n_columns, dtype=torch.bool)
        rows = torch.arange(B)[:, None]
        tgt[rows.expand_as(self.positives)[self.pos_mask], self.positives[self.pos_mask]] = True
        ex[rows.expand_as(self.support)[self.mask], self.support[self.mask]] = True
        return tgt, ex


def log_uniform_shots(
    lo: int, hi: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per task, ``k = floor(exp(U(log lo, log(hi + 1))))`` clipped to ``[lo, hi]``:
    ``hi (B,)`` the largest size each task allows -> ``int64 (B,)`` (``hi < lo`` gives ``hi``)."""
    top = torch.log(hi.double() + 1.0)
    u = torch.rand(hi.shape[0], generator=generator, dtype=torch.float64)
    k = torch.exp(np.log(lo) + u * (top - np.log(lo)).clamp_min(0.0)).floor().long()
    return torch.minimum(k.clamp_min(lo), hi)


class UserLists:
    """Users' interactions over a catalogue, padded to one width.

    Attributes:
        users: ``int64 (U,)``; ``cols`` ``int64 (U, L)`` catalogue columns (0 at padding; use
            ``lengths``); ``ratings`` ``(U, L)``; ``relevant`` ``bool (U, L)``;
            ``lengths`` ``int64 (U,)``.
    """

    def __init__(
        self,
        table: InteractionTable,
        rows: np.ndarray,
        column: np.ndarray,
        relevant: np.ndarray,
        max_len: int | None = None,
        seed: int = 0,
    ) -> None:
        """Lists of the table ``rows`` whose item has a column (``column[item] >= 0``), one entry
        per (user, item); a list longer than ``max_len`` keeps a seeded random ``max_len``."""
        c = column[table.items[rows]]
        rows = rows[c >= 0]
        rng = np.random.default_rng([seed, 3])
        order = np.lexsort((rng.random(rows.shape[0]), table.users[rows]))
        rows = rows[order]
        u, col = table.users[rows], column[table.items[rows]]
        key = u.astype(np.int64) * (int(column.max()) + 1) + col
        _, first = np.unique(key, return_index=True)  # one entry per (user, item)
        rows = rows[np.sort(first)]
        u = table.users[rows]
        users, start, counts = np.unique(u, return_index=True, return_counts=True)
        rank = np.arange(rows.shape[0]) - np.repeat(start, counts)
        keep = rank < (max_len or counts.max(initial=1))
        width = int(min(counts.max(initial=1), max_len or counts.max(initial=1)))
        pos = np.searchsorted(users, u)
        self.users = torch.from_numpy(users.astype(np.int64))
        self.lengths = torch.from_numpy(np.minimum(counts, width).astype(np.int64))
        self.cols = torch.zeros(len(users), width, dtype=torch.long)
        self.ratings = torch.zeros(len(users), width)
        self.relevant = torch.zeros(len(users), width, dtype=torch.bool)
        p, r, rk = pos[keep], rows[keep], rank[keep]
        self.cols[p, rk] = torch.from_numpy(column[table.items[r]])
        self.ratings[p, rk] = torch.from_numpy(table.ratings[r].astype(np.float32))
        self.relevant[p, rk] = torch.from_numpy(relevant[r])

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def draw(
        self,
        idx: torch.Tensor,
        shots: tuple[int, int],
        generator: torch.Generator,
        max_positives: int | None = None,
    ) -> TaskBatch:
        """The tasks of users ``idx (B,)``: a support of ``k`` random entries (``k`` log-uniform
        in ``shots``, at most ``length - 1``), the other relevant entries as positives (at most
        ``max_positives``, a random subset)."""
        n = self.lengths[idx]  # (B,)
        L = self.cols.shape[1]
        keys = torch.rand(idx.shape[0], L, generator=generator)
        keys = keys.masked_fill(torch.arange(L)[None, :] >= n[:, None], 2.0)  # padding last
        order = keys.argsort(dim=1)  # (B, L)
        cols = self.cols[idx].gather(1, order)
        rat = self.ratings[idx].gather(1, order)
        rel = self.relevant[idx].gather(1, order)
        k = log_uniform_shots(shots[0], torch.minimum(n - 1, torch.tensor(shots[1])), generator)
        K = int(k.max())
        pos = torch.arange(L)[None, :]
        mask = pos[:, :K] < k[:, None]
        held = (pos >= k[:, None]) & (pos < n[:, None]) & rel  # (B, L)
        if max_positives is not None:
            rank = held.long().cumsum(dim=1)
            held &= rank <= max_positives
        P = max(int(held.sum(dim=1).max()), 1)
        # the held-out positives first (stable), then cut to P columns
        porder = (~held).long().argsort(dim=1, stable=True)[:, :P]
        return TaskBatch(
            users=self.users[idx],
            support=torch.where(mask, cols[:, :K], 0),
            ratings=torch.where(mask, rat[:, :K], 0.0),
            mask=mask,
            positives=cols.gather(1, porder),
            pos_mask=held.gather(1, porder),
            own=cols,
            own_mask=pos < n[:, None],
        )


def fixed_tasks(lists: UserLists, shots: list[int], n: int, seed: int) -> list[TaskBatch]:
    """Pinned tasks of at most ``n`` users (those with more than ``max(shots)`` entries and a
    relevant one after them): one seeded order per user; at each ``k`` of ``shots`` the first
    ``k`` entries are the support and the relevant ones after ``max(shots)`` the positives, so
    every ``k`` ranks the same positives. Returns one batch per ``k``."""
    g = torch.Generator().manual_seed(seed)
    kmax = max(shots)
    L = lists.cols.shape[1]
    keys = torch.rand(len(lists), L, generator=g)
    keys = keys.masked_fill(torch.arange(L)[None, :] >= lists.lengths[:, None], 2.0)
    order = keys.argsort(dim=1)
    rel = lists.relevant.gather(1, order)
    ok = (lists.lengths > kmax) & rel[:, kmax:].any(dim=1)
    chosen = torch.nonzero(ok).flatten()
    chosen = chosen[torch.randperm(chosen.shape[0], generator=g)[:n]].sort().values
    order, rel = order[chosen], rel[chosen]
    cols = lists.cols[chosen].gather(1, order)
    rat = lists.ratings[chosen].gather(1, order)
    held = rel.clone()
    held[:, :kmax] = False
    P = max(int(held.sum(dim=1).max()) if chosen.numel() else 1, 1)
    porder = (~held).long().argsort(dim=1, stable=True)[:, :P]
    out = []
    for k in shots:
        out.append(
            TaskBatch(
                users=lists.users[chosen],
                support=cols[:, :k],
                ratings=rat[:, :k],
                mask=torch.ones(chosen.shape[0], k, dtype=torch.bool),
                positives=cols.gather(1, porder),
                pos_mask=held.gather(1, porder),
                own=cols,
                own_mask=torch.arange(L)[None, :] < lists.lengths[chosen][:, None],
            )
        )
    return out
