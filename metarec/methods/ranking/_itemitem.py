"""Item-item machinery of the neighbourhood baselines: co-occurrence counts, shrunk cosine
top-K neighbourhoods, and scoring a support as a sum of item rows.

Everything is numpy / dense torch (no sparse tensor types): co-occurrence is a dense matmul when
the item count is small (``n <= DENSE_ITEMS``) and a sorted list of co-occurring pairs
otherwise (Amazon-sized catalogues are very sparse: a user has a handful of items).
"""

from __future__ import annotations

import numpy as np
import torch

__all__: list[str] = []

DENSE_ITEMS = 12_000
"""Item counts up to this use a dense ``n x n`` co-occurrence matrix."""
_PAIR_CHUNK = 20_000_000


def user_lists(users: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, column) pairs sorted by user: ``(users, cols)``."""
    n = int(cols.max()) + 1 if cols.size else 1
    keys = np.unique(users.astype(np.int64) * n + cols)
    return keys // n, keys % n


def gram_dense(users: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """``X^T X`` of the binary user x column matrix: ``float64 (n, n)`` (diagonal: item counts)."""
    u, c = user_lists(users, cols)
    if u.size == 0:
        return np.zeros((n, n))
    _, r = np.unique(u, return_inverse=True)
    n_rows = int(r.max()) + 1
    if n_rows * n <= 50_000_000:  # a dense X fits: one matmul (counts are exact in float32)
        x = torch.zeros(n_rows, n, dtype=torch.float32)
        x[torch.from_numpy(r), torch.from_numpy(c)] = 1.0
        return (x.T @ x).double().numpy()
    g = np.zeros(n * n)
    for ki, kj in _pair_chunks(r, c):
        g += np.bincount(ki * n + kj, minlength=n * n)
    return g.reshape(n, n)


def gram_pairs(
    users: np.ndarray, cols: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The off-diagonal non-zeros of ``X^T X``: ``(i, j, count)`` sorted by ``(j, i)``, and the
    diagonal through :func:`np.bincount` of the caller."""
    u, c = user_lists(users, cols)
    _, r = np.unique(u, return_inverse=True)
    keys_all: list[np.ndarray] = []
    for ki, kj in _pair_chunks(r, c):
        off = ki != kj
        keys_all.append(kj[off] * n + ki[off])
    if not keys_all:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0)
    keys, counts = np.unique(np.concatenate(keys_all), return_counts=True)
    return keys % n, keys // n, counts.astype(np.float64)


def _pair_chunks(r: np.ndarray, c: np.ndarray):
    """``(i, j)`` for every ordered pair of columns of each row, in chunks of rows (bounded memory)."""
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if r.size else np.zeros(0, np.int64)
    lens = np.diff(np.r_[starts, r.size])
    sq = lens.astype(np.int64) ** 2
    cum = np.cumsum(sq)
    lo = 0
    while lo < starts.size:
        hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + _PAIR_CHUNK, side="right"))
        hi = max(hi, lo + 1)
        s, ln = starts[lo:hi], lens[lo:hi]
        # every (a, b) within each row: row-major over a, then b
        rep = np.repeat(ln, ln)  # each a repeated, per row
        a_idx = np.repeat(s, ln) + _arange_within(ln)
        a_rep = np.repeat(a_idx, rep)
        b_start = np.repeat(np.repeat(s, ln), rep)
        b_idx = b_start + _arange_within(rep)
        yield c[a_rep], c[b_idx]
        lo = hi


def _arange_within(lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(n)`` for each ``n`` of ``lens``."""
    total = int(lens.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)


Neighbourhoods = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(offsets (n + 1,), neighbours, sims)``: per item ``i``, its neighbours
``neighbours[offsets[i]:offsets[i + 1]]`` with positive similarity, best first (ties: lower index)."""


def cosine_topk(
    users: np.ndarray,
    cols: np.ndarray,
    n: int,
    shrinks: tuple[float, ...],
    k: int,
    *,
    dense_items: int = DENSE_ITEMS,
) -> tuple[np.ndarray, dict[float, Neighbourhoods]]:
    """Shrunk cosine neighbourhoods of ``n`` columns of the binary user x column matrix ``X``.

    ``sim(i, j) = x_i . x_j / (||x_i|| ||x_j|| + h)`` for ``i != j`` (``x_i``: column ``i``; 0 when
    either column is empty). For every column ``i`` and shrink ``h``: its (at most) ``k`` most
    similar other columns with a positive similarity, best first, ties by lower index.

    Returns:
        ``(norms (n,), {h: neighbourhoods})`` (see :data:`Neighbourhoods`).
    """
    u, c = user_lists(users, cols)
    norms = np.sqrt(np.bincount(c, minlength=n).astype(np.float64))
    out: dict[float, Neighbourhoods] = {}
    if n <= dense_items:
        g = gram_dense(u, c, n)
        np.fill_diagonal(g, 0.0)
        den = np.outer(norms, norms)
        for h in shrinks:
            sim = np.divide(g, den + h, out=np.zeros_like(g), where=(den + h) > 0)
            out[h] = _dense_topk(sim, k)
        return norms, out
    i, j, cnt = gram_pairs(u, c, n)
    for h in shrinks:
        den = norms[i] * norms[j] + h
        sim = np.divide(cnt, den, out=np.zeros_like(cnt), where=den > 0)
        out[h] = _sparse_topk(j, i, sim, n, k)
    return norms, out


def _dense_topk(sim: np.ndarray, k: int) -> Neighbourhoods:
    """Row ``i`` of ``sim``: its ``k`` largest positive entries (ties: lower index)."""
    s = torch.from_numpy(sim)
    kk = min(k, s.shape[1])
    v_t, i_t = torch.sort(s, dim=1, descending=True, stable=True)  # ties: lower index first
    vals, idx = v_t[:, :kk].numpy(), i_t[:, :kk].numpy()
    keep = vals > 0
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    return offsets, idx[keep].astype(np.int64), vals[keep]


def _sparse_topk(
    row: np.ndarray, col: np.ndarray, val: np.ndarray, n: int, k: int
) -> Neighbourhoods:
    """Per ``row`` the ``k`` largest positive ``val`` (ties: lower ``col``)."""
    keep = val > 0
    row, col, val = row[keep], col[keep], val[keep]
    o = np.lexsort((col, -val, row))
    row, col, val = row[o], col[o], val[o]
    start = np.searchsorted(row, np.arange(n))
    sel = (np.arange(row.size) - start[row]) < k
    row, col, val = row[sel], col[sel], val[sel]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n))]).astype(np.int64)
    return offsets, col.astype(np.int64), val


def neighbours_by_source(
    nbh: Neighbourhoods, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The item-item weights ``W[j, i] = sim(i, j)`` for ``j`` among the first ``k`` neighbours of
    ``i``, as rows by source item ``j`` (CSR arrays): ``(offsets (n + 1,), cols, vals)``, so that a
    support's scores are the sum of its items' rows."""
    offsets, nbr, sim = nbh
    n = offsets.shape[0] - 1
    lens = np.diff(offsets)
    rank = np.arange(nbr.shape[0]) - np.repeat(offsets[:-1], lens)
    sel = rank < k
    src = nbr[sel]
    dst = np.repeat(np.arange(n), lens)[sel]
    val = sim[sel]
    o = np.lexsort((dst, src))
    src, dst, val = src[o], dst[o], val[o]
    out = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))]).astype(np.int64)
    return torch.from_numpy(out), torch.from_numpy(dst.astype(np.int64)), torch.from_numpy(val)


def sum_sparse_rows(
    task: torch.Tensor,
    item: torch.Tensor,
    n_tasks: int,
    offsets: torch.Tensor,
    cols: torch.Tensor,
    vals: torch.Tensor,
    n_out: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``out[t] = sum_{j in support of t} W[j]`` for CSR rows ``W`` (``item``: row indices, ``-1``
    ignored): ``(n_tasks, n_out)``. Cost: the support's total row length, not ``n_out``."""
    ok = item >= 0
    task, item = task[ok], item[ok]
    starts = offsets[item]
    lens = offsets[item + 1] - starts
    total = int(lens.sum())
    out = torch.zeros(n_tasks, n_out, dtype=dtype)
    if total == 0:
        return out
    within = torch.arange(total) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
    idx = torch.repeat_interleave(starts, lens) + within
    rows = torch.repeat_interleave(task, lens)
    out.index_put_((rows, cols[idx]), vals[idx].to(dtype), accumulate=True)
    return out


def sum_dense_rows(
    task: torch.Tensor, item: torch.Tensor, n_tasks: int, weights: torch.Tensor
) -> torch.Tensor:
    """``out[t] = sum_{j in support of t} weights[j]`` (``item``: row indices, ``-1`` ignored):
    ``(n_tasks, weights.shape[1])``, one ``embedding_bag`` (no ``(T, |S|, n)`` intermediate)."""
    ok = item >= 0
    task, item = task[ok], item[ok]
    order = torch.argsort(task, stable=True)
    task, item = task[order], item[order]
    counts = torch.bincount(task, minlength=n_tasks)
    offsets = torch.cumsum(counts, 0) - counts
    return torch.nn.functional.embedding_bag(item, weights, offsets, mode="sum")
