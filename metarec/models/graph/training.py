"""The meta-learnable LightGCN in a run: its meta-train graph when training, the same graph back
when loading.

Training (:func:`set_training_graph`, called by :func:`metarec.train.loop.build_training_model`)
gives :class:`~metarec.models.graph.lightgcn.LightGCN` one user-item edge per meta-train row, beside the
item-attribute edges; rows of meta-val and meta-test tasks never enter the graph. The graph is
part of the model's buffers (``edge_src``, ``edge_dst``, ``edge_weight``), so every checkpoint
holds it, but its size is the number of meta-train edges, which a model rebuilt from a run's
encoders alone cannot know. Loading (:func:`restore_graph`, called by the run loader before the
weights are matched) therefore reads the user-item pairs back from the checkpoint's edge
buffers, rebuilds the graph from them with :meth:`~metarec.models.graph.lightgcn.LightGCN.set_graph`
(the attribute edges come from the run's saved features), and checks that the rebuilt edges
equal the saved ones, so the checkpoint then loads exactly, with no data at serving time.

Other models pass through both functions unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.models.graph.lightgcn import LightGCN

__all__ = ["set_training_graph", "restore_graph", "user_item_pairs"]

_EDGES = ("edge_src", "edge_dst", "edge_weight")


def set_training_graph(model: Any, table: Any, rows: np.ndarray) -> None:
    """Give a :class:`LightGCN` the user-item edges of the meta-train ``rows`` of ``table``
    (``splits.pools[splits.train].rows``); any other model is left as it is."""
    if isinstance(model, LightGCN):
        rows = np.asarray(rows, dtype=np.int64)
        model.set_graph(table.users[rows], table.items[rows])


def user_item_pairs(
    src: torch.Tensor, dst: torch.Tensor, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """The user-item edges of a stored graph: ``(users, items)`` ``int64 (E,)``, one per undirected
    edge (the direction user -> item), attribute edges left out."""
    s, d = src.cpu().numpy(), dst.cpu().numpy()
    keep = (s < n_users) & (d >= n_users) & (d < n_users + n_items)
    return s[keep], d[keep] - n_users


def restore_graph(model: Any, buffers: Mapping[str, Any], where: object) -> None:
    """Rebuild a :class:`LightGCN`'s graph from a checkpoint's ``buffers`` (see the module
    docstring); any other model, or a checkpoint without edge buffers, is left as it is.

    Raises:
        CheckpointError: the saved edges are not a graph of this model (an index out of range,
            unequal lengths, or edges that differ from the graph rebuilt from their user-item
            pairs), naming ``where`` (the checkpoint file).
    """
    if not isinstance(model, LightGCN):
        return
    src, dst, weight = (buffers.get(k) for k in _EDGES)
    if not (
        isinstance(src, torch.Tensor)
        and isinstance(dst, torch.Tensor)
        and isinstance(weight, torch.Tensor)
    ):
        return  # the weight matching names the missing buffer
    bad = _DAMAGED.format(where=str(where))
    if not (src.ndim == dst.ndim == weight.ndim == 1 and src.shape == dst.shape == weight.shape):
        raise CheckpointError(
            f"{bad}: edge_src, edge_dst and edge_weight have shapes {tuple(src.shape)}, {tuple(dst.shape)}, "
            f"{tuple(weight.shape)}; they must be equal-length vectors{_FIX}"
        )
    users, items = user_item_pairs(
        src.long(), dst.long(), model.known_users.numel(), model.known_items.numel()
    )
    try:
        model.set_graph(users, items)
    except ConfigError as e:
        raise CheckpointError(f"{bad}: {e}{_FIX}") from None
    same = (
        torch.equal(model.edge_src.cpu(), src.cpu().long())
        and torch.equal(model.edge_dst.cpu(), dst.cpu().long())
        and torch.allclose(
            model.edge_weight.cpu().double(), weight.cpu().double(), rtol=1e-6, atol=0.0
        )
    )
    if not same:
        raise CheckpointError(
            f"{bad}: the saved edges ({src.numel()}) differ from the graph rebuilt from their "
            f"{users.size} user-item pairs and the run's item attributes ({model.edge_src.numel()} edges){_FIX}"
        )


_DAMAGED = "{where}: the LightGCN graph in the checkpoint is not a graph of this model"
_FIX = (
    "; the run directory is damaged; restore it from a copy, or re-create it with 'metarec train'"
)
