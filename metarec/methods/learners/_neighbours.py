"""Item-item cosine neighbourhoods over meta-train rows, for a model that adds a neighbourhood term.

``K[i, j] = sum_u x_ui x_uj / (sqrt(n_i) sqrt(n_j))`` over the meta-train users ``u`` (``x``: 0/1
interactions, ``n_i``: item ``i``'s meta-train count), for every table item ``i`` (rows: support
and history items of any domain) and every catalogue item ``j`` (columns). A task's
neighbourhood score of ``j`` is ``sum_{i in set} w_i K[i, j]`` (item-kNN; Sarwar et al. 2001), as
in Koren's integrated model (KDD 2008), where a factor model and a neighbourhood model are added.

A meta-train user's own rows are inside ``K``: when such a user is a training task, every pair of
their support item and held-out item co-occurs at least through them, which would teach a model
to trust ``K`` more than it deserves for a cold user. :meth:`Neighbours.own_share` is that user's
own share of the scores, ``sum_{i in set} w_i x_ui x_uj / (sqrt(n_i) sqrt(n_j))``, to subtract
(leave-one-user-out).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["Neighbours"]

_DENSE_LIMIT = 40_000_000  # entries of K kept dense (160 MB in float32)


class Neighbours:
    """``K`` (see the module docstring) over the interactions ``(users, items)`` (table
    indices; a repeated pair counts once), rows every item of ``n_items``, columns ``catalogue``.

    Attributes:
        inv_norm: ``(n_items,)`` ``1 / sqrt(n_i)`` (0 for items without a row).
        K: ``(n_items, C)``, dense or sparse (COO) when dense would exceed 40M entries.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        n_users: int,
        n_items: int,
        catalogue: np.ndarray,
    ) -> None:
        n, C = n_items, int(catalogue.shape[0])
        column = np.full(n, -1, dtype=np.int64)
        column[catalogue] = np.arange(C)
        key = np.unique(users.astype(np.int64) * n + items)  # one entry per (user, item)
        users, items = key // n, key % n
        counts = np.bincount(items, minlength=n).astype(np.float64)
        inv = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
        self.inv_norm = torch.from_numpy(inv.astype(np.float32))
        self.column = torch.from_numpy(column)
        vals = torch.from_numpy(inv[items].astype(np.float32))
        X = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([items, users])),
            vals,
            (n, n_users),
            check_invariants=True,
        ).coalesce()  # (n_items, n_users)
        inc = column[items] >= 0
        Xc = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([users[inc], column[items[inc]]])),
            vals[torch.from_numpy(inc)],
            (n_users, C),
            check_invariants=True,
        ).coalesce()  # (n_users, C)
        with warnings.catch_warnings():  # torch's sparse-by-sparse product goes through CSR
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            K = torch.sparse.mm(X, Xc).coalesce()  # (n_items, C)
        self.K = K.to_dense() if n * C <= _DENSE_LIMIT else K
        self.n_catalogue = C

    def typical_top(self) -> float:
        """The mean over items with neighbours of their largest ``K`` entry (a scale)."""
        K = self.K
        if K.is_sparse:
            idx, val = K.indices(), K.values()
            top = torch.zeros(K.shape[0]).scatter_reduce(0, idx[0], val, "amax")
        else:
            top = K.max(dim=1).values
        top = top[top > 0]
        return float(top.mean()) if top.numel() else 1.0

    def scores(
        self, items: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """``sum_l w_l K[items_l]``: ``items, weights, mask (B, L) -> (B, C)``."""
        B = items.shape[0]
        b = torch.arange(B)[:, None].expand_as(items)[mask]
        A = torch.sparse_coo_tensor(
            torch.stack([b, items[mask]]),
            weights[mask].float(),
            (B, self.K.shape[0]),
            check_invariants=True,
        ).coalesce()  # (B, n_items)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            out = torch.sparse.mm(A, self.K)
        return out.to_dense() if out.is_sparse else out

    def own_share(
        self,
        items: torch.Tensor,
        weights: torch.Tensor,
        mask: torch.Tensor,
        own: torch.Tensor,
        own_items: torch.Tensor,
    ) -> torch.Tensor:
        """The task user's own share of :meth:`scores` (see the module docstring): ``items,
        weights, mask (B, L)``; ``own (B, C)`` bool: the catalogue items the user has in the
        rows ``K`` was built from; ``own_items (B, L)`` bool: which set entries are such rows
        -> ``(B, C)``."""
        w = torch.where(mask & own_items, weights.float(), torch.zeros_like(weights.float()))
        s = (w * self.inv_norm[items]).sum(dim=1, keepdim=True)  # (B, 1)
        col_inv = torch.zeros(self.n_catalogue)
        known = self.column >= 0
        col_inv[self.column[known]] = self.inv_norm[known]
        return own.float() * s * col_inv[None, :]
