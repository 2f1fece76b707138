"""Graph methods for cross-domain cold-start users: LightGCN over the joint graph, and a
BiTGCF-style model whose shared users bridge the domains' graphs.

Both train on a :class:`~metarec.methods.crossdomain.data.CrossDomainView`'s rows only (meta-train:
every user's source rows, warm users' target rows), so the graph holds no evaluation edge.
Scores are MF-like, ``s(u, i) = <h_u, h_i> + b_u + b_i + c_d`` with ``h`` the propagated
embeddings; the cold-start *user vector* is ``[h_u, b_u]`` (target side), so the shared
few-shot adaptation of :mod:`metarec.methods.crossdomain.evaluate` (``"+adapt"``) applies unchanged.

* ``lightgcn``: one graph over users and the items of every domain (users are shared nodes);
  a cold user is connected through their source items and reaches target items over two hops.
* ``bitgcf`` (after Liu et al., CIKM 2020, "Cross Domain Recommendation via Bi-directional
  Transfer Graph Collaborative Filtering Networks"): each domain has its own graph and its own
  user embeddings; at every layer (layer 0 included) the shared users' two embeddings are
  mixed, ``h_t <- a_t h_t + (1 - a_t) h_s`` and ``h_s <- a_s h_s + (1 - a_s) h_t`` with
  ``a_d(u) = deg_d(u) / (deg_s(u) + deg_t(u))`` (one half for a user with no edge). A cold
  user has no target edge (``a_t = 0``), so their target embedding is their source one carried
  across; a warm user mixes both in proportion to their activity. All source domains form one
  source graph.

:class:`GraphScorer` holds the propagated embeddings (recomputed by :meth:`GraphScorer.refresh`
after each epoch, so meta-val selection and evaluation read the weights being selected).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from metarec.methods.crossdomain._train import Validate, point_loss, train_selected
from metarec.methods.crossdomain.data import CrossDomainView, RowBatches
from metarec.methods.crossdomain.settings import CrossDomainConfig
from metarec.models.base import seeded
from metarec.models.graph.propagate import (
    Graph,
    bipartite_graph,
    propagate_sparse,
    sparse_adjacency,
)

__all__ = [
    "N_LAYERS",
    "BATCH_SCALE",
    "GraphCF",
    "GraphScorer",
    "fit_lightgcn",
    "fit_bitgcf",
    "view_graph",
]

N_LAYERS = 2
"""LightGCN layers of the cross-domain graph methods."""
BATCH_SCALE = 4
"""Training positives per step: ``BATCH_SCALE * config.batch_size`` (every step propagates over
the whole graph, the cost of a step; larger steps keep an epoch's cost near the MF methods')."""


def view_graph(view: CrossDomainView, rows: np.ndarray) -> Graph:
    """User-item graph of table ``rows`` (which must be the view's training rows or a part)."""
    t = view.table
    return bipartite_graph(t.users[rows], t.items[rows], t.n_users, t.n_items)


class GraphCF(nn.Module):
    """LightGCN (``bidirectional=False``) or BiTGCF-style (``True``) embeddings of a view.

    Parameters: ``user (n_graphs, n_users, d)`` (one table per domain graph), ``item (n_items,
    d)``, ``user_bias (n_users,)``, ``item_bias (n_items,)``, ``domain_bias (n_domains,)``.
    """

    share: torch.Tensor  # buffer (2, n_users, 1), only when bidirectional
    item_map: torch.Tensor  # buffer (n_items,) int64

    def __init__(
        self,
        view: CrossDomainView,
        dim: int,
        *,
        bidirectional: bool,
        n_layers: int = N_LAYERS,
        seed: int = 0,
    ) -> None:
        super().__init__()
        t = view.table
        self.n_users, self.target, self.n_layers, self.bidirectional = (
            t.n_users,
            view.target,
            n_layers,
            bidirectional,
        )
        if bidirectional:  # graph 0: source domains, graph 1: target domain
            self.graphs = [view_graph(view, view.source_rows), view_graph(view, view.target_rows)]
            deg = torch.stack([g.degree[: t.n_users] for g in self.graphs]).to(
                torch.get_default_dtype()
            )  # (2, U)
            tot = deg.sum(0)
            share = torch.where(tot > 0, deg / tot.clamp_min(1), torch.full_like(deg, 0.5))
            self.register_buffer("share", share.unsqueeze(-1))  # (2, U, 1): a_s, a_t
        else:
            self.graphs = [view_graph(view, view.train_rows)]
        self._adj = [
            sparse_adjacency(g) for g in self.graphs
        ]  # CSR, rebuilt never: the graph is fixed
        mu = float(t.ratings[view.train_rows].mean()) if view.train_feedback == "explicit" else 0.0
        with seeded(seed):
            self.user = nn.Parameter(torch.randn(len(self.graphs), t.n_users, dim) * 0.1)
            self.item = nn.Parameter(torch.randn(t.n_items, dim) * 0.1)
        self.user_bias = nn.Parameter(torch.zeros(t.n_users))
        self.item_bias = nn.Parameter(torch.zeros(t.n_items))
        self.domain_bias = nn.Parameter(torch.full((t.n_domains,), mu))
        self.register_buffer("item_map", view.item_map.clone())

    @classmethod
    def shell(
        cls,
        *,
        n_users: int,
        n_items: int,
        n_table_items: int,
        n_domains: int,
        dim: int,
        target: int,
        bidirectional: bool,
    ) -> GraphCF:
        """An untrained model of these sizes without its graphs (a saved run's skeleton, filled
        by ``load_state_dict``; it scores through :class:`GraphScorer`'s saved embeddings and is
        not trained further)."""
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.n_users, m.target, m.n_layers, m.bidirectional = n_users, target, N_LAYERS, bidirectional
        m.graphs, m._adj = [], []
        if bidirectional:
            m.register_buffer("share", torch.zeros(2, n_users, 1))
        m.user = nn.Parameter(torch.zeros(2 if bidirectional else 1, n_users, dim))
        m.item = nn.Parameter(torch.zeros(n_items, dim))
        m.user_bias = nn.Parameter(torch.zeros(n_users))
        m.item_bias = nn.Parameter(torch.zeros(n_items))
        m.domain_bias = nn.Parameter(torch.zeros(n_domains))
        m.register_buffer("item_map", torch.zeros(n_table_items, dtype=torch.int64))
        return m

    def _mix(self, hs: torch.Tensor, ht: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_s, a_t = self.share[0], self.share[1]
        return a_s * hs + (1 - a_s) * ht, a_t * ht + (1 - a_t) * hs

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users (n_graphs, n_users, d), items (n_items, d))`` after propagation; the last
        user table is the target side."""
        nu = self.n_users
        if not self.bidirectional:
            x = propagate_sparse(self._adj[0], torch.cat([self.user[0], self.item]), self.n_layers)
            return x[:nu].unsqueeze(0), x[nu:]
        # per layer: each domain's graph, then the shared users' embeddings mixed across domains
        us, ut = self._mix(self.user[0], self.user[1])
        hs, ht = torch.cat([us, self.item]), torch.cat([ut, self.item])
        total_s, total_t = hs, ht
        for _ in range(self.n_layers):
            hs, ht = (
                _layer(self._adj[0], hs),
                _layer(self._adj[1], ht),
            )  # one layer in each domain's graph
            us, ut = self._mix(hs[:nu], ht[:nu])
            hs, ht = torch.cat([us, hs[nu:]]), torch.cat([ut, ht[nu:]])
            total_s, total_t = total_s + hs, total_t + ht
        # items belong to one domain: an item's edges are all in its own domain's graph
        items = (total_s[nu:] + total_t[nu:]) / (self.n_layers + 1) - self.item / (
            self.n_layers + 1
        )
        return torch.stack([total_s[:nu], total_t[:nu]]) / (self.n_layers + 1), items

    def score_rows(
        self,
        u: torch.Tensor,
        i: torch.Tensor,
        d: torch.Tensor,
        users: torch.Tensor,
        items: torch.Tensor,
    ) -> torch.Tensor:
        """Training scores of rows ``(users, items, domains)`` ``(B,)`` from :meth:`embed`'s output."""
        side = (d == self.target).long() if self.bidirectional else torch.zeros_like(d)
        im = self.item_map[i]
        hu = users[side, u]  # (B, d)
        return (
            (hu * items[im]).sum(-1) + self.user_bias[u] + self.item_bias[im] + self.domain_bias[d]
        )


def _layer(adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return propagate_sparse(adj, h, 1) * 2 - h  # (h + Â h) / 2 -> Â h


class GraphScorer(nn.Module):
    """Cold-start scorer over a :class:`GraphCF`'s propagated target-side embeddings.

    ``user_vectors(users (T,)) -> (T, d + 1)`` (``[h_u, b_u]``); ``score(v (T, d + 1), items
    (T, N)) -> (T, N)``; items without training rows score through slot 0 (zero vector and bias).
    """

    users: torch.Tensor  # buffer (n_users, d)
    items: torch.Tensor  # buffer (n_items, d)

    def __init__(self, model: GraphCF, *, refresh: bool = True) -> None:
        super().__init__()
        self.model = model
        d = model.item.shape[1]
        self.register_buffer("users", torch.zeros(model.n_users, d))
        self.register_buffer("items", torch.zeros(model.item.shape[0], d))
        if refresh:  # a saved run's skeleton has no graph: its embeddings come with its weights
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the propagated embeddings from the current weights."""
        u, i = self.model.embed()
        self.users.copy_(u[-1])
        self.items.copy_(i)
        self.items[0] = 0.0

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.users[users], self.model.user_bias[users].unsqueeze(-1)], dim=-1)

    def score(self, uvec: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        m = self.model
        i = m.item_map[items]
        q, b = self.items[i], m.item_bias[i]  # (..., d), (...)
        d = q.shape[-1]
        if q.dim() == uvec.dim() + 1:  # (T, N, d) against (T, d + 1)
            uvec = uvec.unsqueeze(-2)
        return (uvec[..., :d] * q).sum(-1) + uvec[..., d] + b + m.domain_bias[m.target]


def _fit(
    view: CrossDomainView, cfg: CrossDomainConfig, seed: int, validate_for: Any, bidirectional: bool
) -> tuple[GraphScorer, dict]:
    model = GraphCF(view, cfg.embedding_dim, bidirectional=bidirectional, seed=seed)
    scorer = GraphScorer(model)
    rows = view.train_rows
    # each step propagates over the whole graph, so a step takes BATCH_SCALE times more rows
    batches = RowBatches(
        view,
        rows,
        batch_size=cfg.batch_size * BATCH_SCALE,
        negatives=cfg.train_negatives,
        seed=seed,
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def run_epoch(_: int) -> float:
        total, n = 0.0, 0
        for u, i, y, d in batches.epoch():
            users, items = model.embed()
            pred = model.score_rows(u, i, d, users, items)
            side = (d == model.target).long() if bidirectional else torch.zeros_like(d)
            reg = (
                model.user[side, u].square().sum(-1)
                + model.item[model.item_map[i]].square().sum(-1)
            ).mean()
            loss = point_loss(pred, y, view.train_feedback) + cfg.l2 * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()), n + 1
        scorer.refresh()
        return total / max(n, 1)

    validate: Validate = validate_for(scorer)
    log = train_selected(
        run_epoch,
        [scorer],
        epochs=cfg.mf_epochs + cfg.epochs,
        validate=validate,
        patience=cfg.patience,
    )
    log["n_edges"] = [g.n_edges for g in model.graphs]
    return scorer, log


def fit_lightgcn(
    view: CrossDomainView, cfg: CrossDomainConfig, seed: int, make_validate: Any
) -> tuple[GraphScorer, dict]:
    """Train LightGCN on the view's joint graph for ``mf_epochs + epochs`` epochs (one stage,
    the budget of a two-stage bridge), keeping the best epoch on meta-val."""
    return _fit(view, cfg, seed, make_validate, bidirectional=False)


def fit_bitgcf(
    view: CrossDomainView, cfg: CrossDomainConfig, seed: int, make_validate: Any
) -> tuple[GraphScorer, dict]:
    """Train the BiTGCF-style model (module docstring) like :func:`fit_lightgcn`."""
    return _fit(view, cfg, seed, make_validate, bidirectional=True)
