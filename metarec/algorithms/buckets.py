"""Grouping a meta-batch's tasks by support size, so that each group is padded only to its own
longest task.

Tasks of a meta-batch run together as ``(T, N)`` tensors padded to the longest support set; with
MeLU's protocol (support = every non-query rating) the lengths spread widely and padding can be
over half of the arithmetic. :func:`bucket_tasks` sorts the tasks by support size and cuts the
sorted order into at most ``max_buckets`` contiguous groups that minimise the padded area
``sum_b |b| * max_len(b)`` (exact, by dynamic programming over the cut points); each group is
then run at its own width. The meta-gradient is a sum over tasks, so grouping changes only the
float summation order.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["bucket_tasks", "padded_cells"]


def bucket_tasks(lengths: torch.Tensor, max_buckets: int) -> list[torch.Tensor]:
    """Index groups ``[int64 (T_b,)]`` covering ``range(T)``, each sorted by length.

    Args:
        lengths: ``(T,)`` support sizes.
        max_buckets: at most this many groups (1: one group, all tasks in length order).

    Example:
        >>> [b.tolist() for b in bucket_tasks(torch.tensor([5, 1, 5, 2]), 2)]
        [[1, 3], [0, 2]]
    """
    lens = lengths.detach().to("cpu", torch.int64).numpy()
    order = np.argsort(lens, kind="stable")
    T = order.shape[0]
    k = max(1, min(int(max_buckets), T))
    if T == 0:
        return []
    srt = lens[order]
    cuts = _best_cuts(srt, k)
    idx = torch.from_numpy(order.copy()).to(lengths.device)
    return [idx[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def padded_cells(lengths: torch.Tensor, groups: list[torch.Tensor]) -> int:
    """``sum_b |b| * max_len(b)``: the padded support cells the groups cost."""
    return int(sum(len(g) * int(lengths[g].max()) for g in groups if len(g)))


def _best_cuts(srt: np.ndarray, k: int) -> list[int]:
    """Cut points ``0 = c_0 < ... < c_m = T`` (m <= k) of sorted lengths minimising
    ``sum_j (c_j - c_{j-1}) * srt[c_j - 1]``."""
    T = srt.shape[0]
    j = np.arange(1, T + 1)  # group end (exclusive)
    i = np.arange(T)  # group start
    # cost[i, j-1]: a group srt[i:j] (i < j) costs (j - i) * srt[j - 1]
    cost = np.where(
        i[:, None] < j[None, :], (j[None, :] - i[:, None]) * srt[None, :].astype(np.float64), np.inf
    )
    best = cost[0].copy()  # best[j-1]: one group covering srt[:j]
    back = [np.zeros(T, dtype=np.int64)]
    for _ in range(1, k):
        # a new last group srt[i:j] after the best split of srt[:i] (i >= 1)
        total = np.concatenate([[np.inf], best[:-1]])[:, None] + cost  # (i, j-1)
        arg = np.argmin(total, axis=0)
        cand = total[arg, np.arange(T)]
        better = cand < best
        best = np.where(better, cand, best)
        back.append(np.where(better, arg, -1))
    # walk back from j = T through the levels
    cuts, end, level = [T], T, k - 1
    while end > 0:
        while level > 0 and back[level][end - 1] < 0:
            level -= 1
        start = int(back[level][end - 1]) if level > 0 else 0
        cuts.append(start)
        end, level = start, level - 1
    return sorted(set(cuts))
