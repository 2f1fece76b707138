"""LightGCN as a meta-learnable model: user-item and item-attribute graphs, items' text.

:class:`LightGCN` embeds every node of a graph over users, items and item attribute values
(:mod:`metarec.models.graph.attributes`), propagates the embeddings with LightGCN layers
(:func:`metarec.models.graph.propagate.propagate`) and scores ``head(u ⊙ i)``, as GMF does. An item's
layer-0 embedding is its id embedding (known items only) plus a learned projection of its text
embeddings (``"text"`` item features), so an item with no interactions is represented by its
text and, after propagation, by its attribute nodes. A cold user (not known, see
:meth:`~metarec.models.id_models.IdModel.set_known`) has no node of its own: it is the learned
``user.unknown`` vector, which the inner loop adapts with the head. Propagation reads only
meta-learned parameters, so inside the meta-learners' ``vmap`` it runs once per call, not per
task.

The graph. At construction it holds the item-attribute edges only (content, no interaction).
:meth:`LightGCN.set_graph` adds user-item edges, which must come from meta-train rows only::

    rows = splits.pools[splits.train].rows
    model.set_graph(table.users[rows], table.items[rows])

Meta-training does this (:func:`metarec.models.graph.training.set_training_graph`), and loading a run
rebuilds the same graph from the checkpoint (:func:`metarec.models.graph.training.restore_graph`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.data.features import FeatureTable
from metarec.models._checks import check_dim
from metarec.models.base import seeded
from metarec.models.graph.attributes import attribute_edges
from metarec.models.graph.propagate import Graph, bipartite_graph, propagate
from metarec.models.id_models import IdEmbedding, IdModel

__all__ = ["GraphConfig", "LightGCN"]


@dataclass(frozen=True)
class GraphConfig:
    """Sizes of :class:`LightGCN`.

    Args:
        embedding_dim: node embedding size.
        n_layers: LightGCN layers (0: no propagation, an id/text GMF).
        attributes: link items to their categorical feature values (the item attribute graph).
        text: add projected text embeddings to the items' layer-0 embeddings.
        seed: initialisation seed (the global RNG is left untouched).
    """

    embedding_dim: int = 32
    n_layers: int = 2
    attributes: bool = True
    text: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_dim(self.embedding_dim, "embedding_dim")
        if (
            isinstance(self.n_layers, bool)
            or not isinstance(self.n_layers, int)
            or self.n_layers < 0
        ):
            raise ConfigError(
                f"n_layers={self.n_layers!r}: must be an int >= 0; pass e.g. n_layers=2"
            )


class LightGCN(IdModel):
    """LightGCN over users, items and item attributes. ``(..., N), (..., N) -> (..., N)``.

    Args:
        n_users, n_items: index-space sizes (slot 0 included).
        config: sizes; see :class:`GraphConfig`.
        item_features: the items' features (attribute nodes, text).
        adapt: inner-loop patterns (default ``("user.unknown", "head.*")``).

    Parameters: ``user.{weight,unknown}``, ``item.{weight,unknown}``, ``attr (n_attr, d)`` (with
    attribute nodes), ``text.<feature>.weight (d, D)`` (with text features), ``head.{weight,bias}``.
    Buffers ``edge_src``, ``edge_dst``, ``edge_weight`` hold the graph.
    """

    edge_src: torch.Tensor  # buffer (E,) int64
    edge_dst: torch.Tensor  # buffer (E,) int64
    edge_weight: torch.Tensor  # buffer (E,)

    adapt = ("user.unknown", "head.*")
    head_patterns = ("head.*",)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        config: GraphConfig | None = None,
        *,
        item_features: FeatureTable | None = None,
        adapt: Sequence[str] | None = None,
    ) -> None:
        super().__init__(n_users, n_items, adapt)
        self.config = config = config or GraphConfig()
        d = config.embedding_dim
        self._attr = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        n_attr = 0
        if config.attributes and item_features is not None and item_features.categorical:
            it, nodes, n_attr = attribute_edges(item_features, offset=n_users + n_items)
            self._attr = (it + n_users, nodes)
        self.n_attr = n_attr
        texts = sorted(item_features.text) if config.text and item_features is not None else []
        with seeded(config.seed):
            self.user, self.item = IdEmbedding(n_users, d), IdEmbedding(n_items, d)
            self.attr = nn.Parameter(torch.randn(n_attr, d) * 0.1) if n_attr else None
            self.text = nn.ModuleDict()
            for k, name in enumerate(texts):
                vecs = torch.as_tensor(item_features.text[name], dtype=torch.get_default_dtype())  # type: ignore[union-attr]
                self.register_buffer(f"text_{k}", vecs)  # (n_items, D)
                self.text[str(k)] = nn.Linear(int(vecs.shape[1]), d, bias=False)
            self.head = nn.Linear(d, 1)
        self.text_features = texts
        self.set_graph(np.zeros(0, np.int64), np.zeros(0, np.int64))

    @classmethod
    def from_table(  # type: ignore[override]
        cls, table: Any, config: GraphConfig | None = None, *, adapt: Sequence[str] | None = None
    ) -> LightGCN:
        """Build over an :class:`~metarec.data.table.InteractionTable` (attribute edges only;
        add meta-train interactions with :meth:`set_graph`)."""
        return cls(
            table.n_users, table.n_items, config, item_features=table.item_features, adapt=adapt
        )

    @property
    def n_nodes(self) -> int:
        return self.known_users.numel() + self.known_items.numel() + self.n_attr

    def set_graph(self, users: Any, items: Any) -> LightGCN:
        """Replace the user-item edges by one edge per pair ``(users[k], items[k])`` (meta-train
        rows only; the item-attribute edges stay). Index 0 (unknown) is skipped."""
        u = np.asarray(users, dtype=np.int64).reshape(-1)
        i = np.asarray(items, dtype=np.int64).reshape(-1)
        nu, ni = self.known_users.numel(), self.known_items.numel()
        if u.shape != i.shape or (
            u.size and (u.min() < 0 or u.max() >= nu or i.min() < 0 or i.max() >= ni)
        ):
            raise ConfigError(
                f"set_graph: need equal-length user and item index arrays within [0, {nu}) and [0, {ni}); got "
                f"{u.size} users and {i.size} items; pass table.users[rows], table.items[rows] of meta-train rows"
            )
        keep = (u > 0) & (i > 0)
        g = bipartite_graph(u[keep], i[keep], nu, ni, n_extra=self.n_attr, extra=self._attr)
        self._set_buffers(g)
        return self

    def _set_buffers(self, g: Graph) -> None:
        dev = self.known_users.device
        self.register_buffer("edge_src", g.src.to(dev))
        self.register_buffer("edge_dst", g.dst.to(dev))
        self.register_buffer("edge_weight", g.weight.to(dev, torch.get_default_dtype()))
        self._degree = g.degree

    @property
    def graph(self) -> Graph:
        """The current graph (for inspection: no evaluation edge may be in it)."""
        return Graph(self.edge_src, self.edge_dst, self.edge_weight, self.n_nodes, self._degree)

    def layer0(self) -> torch.Tensor:
        """Initial node embeddings ``(n_nodes, d)``: users, items (id + text), attributes."""
        users = self.user.weight * self.known_users.unsqueeze(-1).to(self.user.weight.dtype)
        items = self.item.weight * self.known_items.unsqueeze(-1).to(self.item.weight.dtype)
        for k in range(len(self.text_features)):
            items = items + self.text[str(k)](getattr(self, f"text_{k}"))  # (n_items, d)
        parts = [users, items] + ([self.attr] if self.attr is not None else [])
        return torch.cat(parts, dim=0)

    def node_embeddings(self) -> torch.Tensor:
        """Propagated node embeddings ``(n_nodes, d)``."""
        return propagate(self.graph, self.layer0(), self.config.n_layers)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = self.node_embeddings()  # (n_nodes, d)
        nu = self.known_users.numel()
        u = torch.where(
            self.known_users[users].unsqueeze(-1), x[users], self.user.unknown
        )  # (..., N, d)
        i = x[nu + items]  # (..., N, d) cold items: text and attributes only
        return self.head(u * i).squeeze(-1)  # (..., N)
