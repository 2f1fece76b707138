"""Top-k ranking with deterministic ties: best score first, equal scores by lower column first.

    vals, cols = top_k(scores, 10)     # scores (B, C) -> vals (B, 10), cols (B, 10)

The answer is that of a stable descending sort of each row (``torch.sort(..., stable=True)``)
cut at ``k``, but costs one ``torch.topk`` of ``k + 1`` instead of a full sort of the
catalogue: the top-k set is exact whenever the k-th score is strictly above the next one, and
the rows where it is not (a tie across the cut, a NaN) are sorted in full.
"""

from __future__ import annotations

import torch

__all__ = ["top_k"]

_SORT_MAX = 2048  # rows up to this long are simply sorted


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best entries of each row of ``scores (B, C)``: ``(values (B, k'), columns (B, k'))``
    with ``k' = min(k, C)``, best first, ties broken by the lower column.

    Example:
        >>> top_k(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), 2)
        (tensor([[3., 3.]]), tensor([[1, 2]]))
    """
    if scores.dim() != 2:
        raise ValueError(f"scores: expected a (B, C) tensor, got shape {tuple(scores.shape)}")
    k = min(int(k), scores.shape[1])
    if k <= 0:
        empty = scores.new_empty(scores.shape[0], 0)
        return empty, torch.empty_like(empty, dtype=torch.long)
    if scores.shape[1] <= _SORT_MAX:  # a short row: one stable sort costs less than the steps below
        vals, cols = torch.sort(scores, dim=1, descending=True, stable=True)
        return vals[:, :k], cols[:, :k]
    # one more than asked: the set is exact when the k-th is strictly above the (k+1)-th (no
    # tie across the cut; a NaN ranks above everything, as in torch.sort, and compares False)
    n = min(k + 1, scores.shape[1])
    vals, cols = torch.topk(scores, n, dim=1, largest=True, sorted=True)
    exact = vals[:, k - 1] > vals[:, k] if n > k else torch.ones_like(vals[:, 0], dtype=torch.bool)
    vals, cols = vals[:, :k], cols[:, :k]
    # within the set: by column, then (stable) by score, descending
    by_col = torch.sort(cols, dim=1).values
    order = torch.sort(scores.gather(1, by_col), dim=1, descending=True, stable=True).indices
    cols = by_col.gather(1, order)
    vals = scores.gather(1, cols)
    if not bool(exact.all()):
        rows = torch.nonzero(~exact).squeeze(1)
        full_vals, full_cols = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        vals[rows], cols[rows] = full_vals[:, :k], full_cols[:, :k]
    return vals, cols
