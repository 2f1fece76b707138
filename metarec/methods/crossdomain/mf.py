"""Biased matrix factorisation on one domain: the embedding model the bridges map between.

``r(u, i) = <p_u, q_i> + b_u + b_i + mu`` (a rating for explicit feedback, a logit for
implicit). The *user vector* is ``v_u = [p_u, b_u]`` (``dim + 1`` values) and
``score(v, i) = <v, [q_i, 1]> + b_i + mu``, so a bridge that maps user vectors carries the user's
bias too. Items without training rows are scored through slot 0: a zero vector and bias, never
trained (sampled training negatives come from the training rows' items), so an unseen item scores
``b_u + mu``, between the known items rather than systematically first or last.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metarec.methods.crossdomain._train import Validate, point_loss, train_selected
from metarec.methods.crossdomain.data import CrossDomainView, RowBatches
from metarec.models.base import seeded

__all__ = ["MF", "new_mf", "fit_mf"]


class MF(nn.Module):
    """Biased MF over a table's index spaces (see the module docstring).

    Args:
        n_users, n_items: index-space sizes (slot 0 included).
        dim: embedding size ``d``; user vectors have ``d + 1`` values.
        item_map: ``int64 (n_items,)`` mapping unknown items to 0 (default: identity).
        mu: initial global bias (the mean training rating for explicit feedback).
        seed: initialisation seed (the global RNG is untouched).

    Parameters: ``user (n_users, d)``, ``user_bias (n_users,)``, ``item (n_items, d)``,
    ``item_bias (n_items,)``, ``mu ()``.
    """

    item_map: torch.Tensor  # buffer (n_items,) int64

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        *,
        item_map: torch.Tensor | None = None,
        mu: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        with seeded(seed):
            self.user = nn.Parameter(torch.randn(n_users, dim) * 0.1)
            self.item = nn.Parameter(torch.randn(n_items, dim) * 0.1)
        with torch.no_grad():
            self.item[0] = 0.0
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.mu = nn.Parameter(torch.tensor(float(mu)))
        self.register_buffer(
            "item_map", torch.arange(n_items) if item_map is None else item_map.clone()
        )

    @property
    def user_dim(self) -> int:
        return self.dim + 1

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``[p_u, b_u]``: ``(...,) -> (..., d + 1)``."""
        return torch.cat([self.user[users], self.user_bias[users].unsqueeze(-1)], dim=-1)

    def score(self, uvec: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, d + 1), (T, N) -> (T, N)``; also ``(B, d + 1), (B,) -> (B,)`` row-wise."""
        i = self.item_map[items]
        q, b = self.item[i], self.item_bias[i]  # (..., d), (...)
        if q.dim() == uvec.dim() + 1:  # (T, N, d) against (T, d + 1)
            uvec = uvec.unsqueeze(-2)
        return (uvec[..., : self.dim] * q).sum(-1) + uvec[..., self.dim] + b + self.mu

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score(self.user_vectors(users), items)


def new_mf(view: CrossDomainView, rows: np.ndarray, *, dim: int, seed: int) -> MF:
    """An :class:`MF` over ``view``'s table; ``mu`` starts at the mean rating of ``rows`` (explicit)."""
    t = view.table
    mu = float(t.ratings[rows].mean()) if view.train_feedback == "explicit" and len(rows) else 0.0
    return MF(t.n_users, t.n_items, dim, item_map=view.item_map, mu=mu, seed=seed)


def fit_mf(
    view: CrossDomainView,
    rows: np.ndarray,
    *,
    dim: int,
    epochs: int,
    batch_size: int,
    lr: float,
    l2: float,
    negatives: int,
    seed: int,
    validate: Validate | None = None,
    patience: int | None = None,
    model: MF | None = None,
) -> tuple[MF, dict]:
    """Train an :class:`MF` on table ``rows`` of one domain (or several, merged) with Adam.

    Loss per batch: MSE (explicit) or BCE with ``negatives`` sampled negatives per positive
    (implicit), plus ``l2 * mean(||p_u||^2 + ||q_i||^2)`` over the batch's rows.

    ``model`` trains an existing instance (so a ``validate`` closure can hold it); by default a
    new :class:`MF` is built by :func:`new_mf`.

    Returns:
        ``(model, log)`` with ``log`` from the epoch loop (validation selection when
        ``validate`` is given).
    """
    model = new_mf(view, rows, dim=dim, seed=seed) if model is None else model
    batches = RowBatches(view, rows, batch_size=batch_size, negatives=negatives, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def run_epoch(_: int) -> float:
        total, n = 0.0, 0
        for u, i, y, _d in batches.epoch():
            pred = model(u, i)
            im = model.item_map[i]
            reg = (model.user[u].square().sum(-1) + model.item[im].square().sum(-1)).mean()
            loss = point_loss(pred, y, view.train_feedback) + l2 * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()), n + 1
        return total / max(n, 1)

    log = train_selected(run_epoch, [model], epochs=epochs, validate=validate, patience=patience)
    return model, log
