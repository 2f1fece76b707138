"""Sparse graph propagation: symmetric-normalised adjacency over an edge list, LightGCN layers.

A :class:`Graph` is an undirected graph stored as both directions of each edge,
``src -> dst`` with weight ``1 / sqrt(deg(src) deg(dst))`` (the symmetric normalisation
``D^-1/2 A D^-1/2`` of LightGCN, He et al., SIGIR 2020). :func:`propagate` computes the LightGCN
output, the mean of the layer outputs

``X_final = 1/(L+1) * sum_{l=0..L} Â^l X``

in one of two ways, the same ``O(E d)`` arithmetic:

* :func:`propagate`: gather rows at ``src``, add them into ``dst`` (``index_add``). It runs under
  :func:`torch.func.vmap` and :func:`torch.func.grad` (the meta-learners' inner loop), where
  ``torch.sparse`` products fail ("expand is unsupported for Sparse tensors"); the
  meta-learnable :class:`~metarec.models.graph.lightgcn.LightGCN` uses it.
* :func:`propagate_sparse`: ``torch.sparse`` CSR products, with the backward ``Â g`` (``Â`` is
  symmetric). Several times faster on one CPU thread and without the ``(E, d)`` gathered
  intermediate; the cross-domain graph methods (plain autograd) use it.

``benchmarks/graph_propagation.py`` measures both on ML-1M and the largest Amazon pair. PyTorch
Geometric is not needed: its message passing is the same gather/scatter as :func:`propagate`.

Node indexing of a user-item graph (:func:`bipartite_graph`): users ``0..n_users-1``, then items
``n_users..n_users+n_items-1``; further node types (attribute values) follow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError

__all__ = [
    "Graph",
    "normalized_graph",
    "bipartite_graph",
    "spmm",
    "propagate",
    "propagate_sparse",
    "sparse_adjacency",
    "dense_adjacency",
]


@dataclass(frozen=True)
class Graph:
    """A normalised undirected graph as a directed edge list (both directions stored).

    Attributes:
        src, dst: ``int64 (E,)`` endpoints; ``weight``: ``float (E,)``.
        n_nodes: number of nodes.
        degree: ``int64 (n_nodes,)`` number of distinct neighbours.
    """

    src: torch.Tensor
    dst: torch.Tensor
    weight: torch.Tensor
    n_nodes: int
    degree: torch.Tensor

    @property
    def n_edges(self) -> int:
        """Undirected edges (half the stored directed ones)."""
        return int(self.src.shape[0]) // 2


def normalized_graph(
    a: np.ndarray, b: np.ndarray, n_nodes: int, *, dtype: torch.dtype | None = None
) -> Graph:
    """The graph with undirected edges ``(a[k], b[k])``, duplicates merged, self-loops refused.

    Args:
        a, b: ``int (E,)`` node indices in ``[0, n_nodes)``.
        n_nodes: number of nodes (isolated nodes keep degree 0 and receive nothing).
        dtype: weight dtype (default: torch's default dtype).

    Raises:
        ConfigError: an index out of range or a self-loop.
    """
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    if a.shape != b.shape:
        raise ConfigError(
            f"normalized_graph: a has {a.shape[0]} endpoints and b {b.shape[0]}; pass one pair per edge"
        )
    for arg, x in (("a", a), ("b", b)):
        if x.size and (x.min() < 0 or x.max() >= n_nodes):
            raise ConfigError(
                f"normalized_graph: {arg} holds node {int(x.min() if x.min() < 0 else x.max())} "
                f"outside [0, {n_nodes}); pass n_nodes covering every node"
            )
    if np.any(a == b):
        raise ConfigError(
            "normalized_graph: self-loop (a[k] == b[k]); LightGCN layers exclude them: drop those pairs"
        )
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(lo * n_nodes + hi)
    lo, hi = pairs // n_nodes, pairs % n_nodes
    src, dst = np.concatenate([lo, hi]), np.concatenate([hi, lo])
    deg = np.bincount(src, minlength=n_nodes)
    w = 1.0 / np.sqrt(deg[src].astype(np.float64) * deg[dst])
    dt = dtype or torch.get_default_dtype()
    return Graph(
        torch.from_numpy(src),
        torch.from_numpy(dst),
        torch.from_numpy(w).to(dt),
        int(n_nodes),
        torch.from_numpy(deg),
    )


def bipartite_graph(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    *,
    n_extra: int = 0,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> Graph:
    """User-item graph (users first, then items; :func:`normalized_graph`).

    Args:
        users, items: ``int (E,)`` one pair per interaction (build it from meta-train rows only).
        n_users, n_items: index-space sizes.
        n_extra, extra: further nodes after the items and undirected edges ``(node, node)`` among
            all nodes (e.g. item-attribute edges, :func:`metarec.models.graph.attributes.attribute_edges`).
    """
    a = np.asarray(users, dtype=np.int64)
    b = np.asarray(items, dtype=np.int64) + n_users
    if extra is not None:
        a, b = np.concatenate([a, extra[0]]), np.concatenate([b, extra[1]])
    return normalized_graph(a, b, n_users + n_items + n_extra)


def spmm(graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """One layer, ``Â x``: ``(n_nodes, d) -> (n_nodes, d)`` by gather/scatter (``vmap``-safe)."""
    w = graph.weight.to(x.dtype).unsqueeze(-1)  # (E, 1)
    return torch.zeros_like(x).index_add(0, graph.dst, x[graph.src] * w)


def propagate(graph: Graph, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN propagation: ``(n_nodes, d) -> (n_nodes, d)``, the mean of ``Â^l x``, ``l = 0..L``."""
    if n_layers < 0:
        raise ConfigError(f"n_layers={n_layers!r}: must be >= 0 (0 = no propagation)")
    h, total = x, x
    for _ in range(n_layers):
        h = spmm(graph, h)  # (n_nodes, d)
        total = total + h
    return total / (n_layers + 1)


def sparse_adjacency(graph: Graph, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``Â`` as a ``torch.sparse`` CSR matrix ``(n_nodes, n_nodes)``."""
    idx = torch.stack([graph.dst, graph.src])
    w = graph.weight if dtype is None else graph.weight.to(dtype)
    coo = torch.sparse_coo_tensor(
        idx, w, (graph.n_nodes, graph.n_nodes), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():  # torch flags CSR support as beta; sparse @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


class _SymmetricSpmm(torch.autograd.Function):
    """``Â x`` with the backward ``Â g`` (``Â`` is symmetric: no transposed copy is built)."""

    @staticmethod
    def forward(ctx: Any, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adj @ g


def propagate_sparse(graph: Graph | torch.Tensor, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """:func:`propagate` through ``torch.sparse`` CSR products (``graph``: a :class:`Graph` or
    its :func:`sparse_adjacency`, which must be symmetric, as every :class:`Graph` is). Faster
    and lighter than :func:`propagate` outside the meta-learners' transforms, but not usable
    under ``vmap``/``grad``."""
    adj = sparse_adjacency(graph, x.dtype) if isinstance(graph, Graph) else graph
    if adj.dtype != x.dtype:
        adj = adj.to(x.dtype)
    h, total = x, x
    for _ in range(n_layers):
        h = _SymmetricSpmm.apply(adj, h)
        total = total + h
    return total / (n_layers + 1)


def dense_adjacency(graph: Graph, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``Â`` as a dense ``(n_nodes, n_nodes)`` matrix (tests and small graphs)."""
    out = torch.zeros(graph.n_nodes, graph.n_nodes, dtype=dtype)
    out[graph.dst, graph.src] = graph.weight.to(dtype)
    return out
