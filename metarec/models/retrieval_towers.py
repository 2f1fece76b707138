"""A two-tower retrieval model whose user tower reads a set: the user's few support items.

* :class:`ItemTower`: an item's side features (:class:`~metarec.models.features.FeatureEmbedding`:
  categorical, multi-valued, numeric, text) and its own id embedding (items seen in training;
  the rest share the "unknown" slot 0) -> an MLP -> an embedding ``v_i (dim,)`` and a bias
  ``b_i``. ``forward(items, drop)`` maps the items flagged in ``drop`` to the unknown slot, as
  DropoutNet (Volkovs et al., NeurIPS 2017) does in training, so the tower learns to place an
  item from its features alone: a cold item is scored through the same path.
  A categorical value that no training item carries (a new director, a later release year) is
  mapped to the padding code 0 (:func:`forget_unseen_codes`): its embedding would otherwise be
  its random initial value.
* :class:`SetUserTower`: a task's support set ``{(v_s, r_s)}`` (item embeddings from the item
  tower, ratings centred on the scale's midpoint and divided by its half-width; 1 for implicit
  feedback) -> ``x_s = ReLU(W [v_s, r_s v_s, r_s])`` pooled over the set (mean, or attention
  with a learned query) -> with an optional second set (a history: the user's source-domain
  items, own weights), the user's side features and ``log(1 + n)`` of each set's size -> an MLP
  -> the user vector ``u (dim,)``.

A task's score of item ``i`` is ``u . v_i + b_i`` (one matmul over the catalogue).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.data.features import FeatureTable
from metarec.models._checks import check_dim, check_sizes
from metarec.models.features import FeatureEmbedding

__all__ = ["ItemTower", "SetUserTower", "set_pool", "forget_unseen_codes"]


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ItemTower(nn.Module):
    """Items ``(...,)`` -> ``(embedding (..., dim), bias (...,))``.

    Args:
        n_items: the index space (slot 0 included).
        dim: the output embedding size.
        hidden: the MLP's hidden widths.
        features: the items' side features, or ``None``.
        known: item indices that keep their own id embedding (``None``: no id embedding: the
            tower sees features only).
        feature_dim: embedding size of each categorical / text feature and of the id.

    Example:
        >>> tower = ItemTower(10, 4, (8,), None, known=np.arange(1, 10))
        >>> v, b = tower(torch.tensor([[1, 2, 3]]))
        >>> tuple(v.shape), tuple(b.shape)
        ((1, 3, 4), (1, 3))
    """

    id_map: torch.Tensor  # buffer (n_items,): own id or 0

    def __init__(
        self,
        n_items: int,
        dim: int,
        hidden: Sequence[int],
        features: FeatureTable | None,
        known: np.ndarray | None,
        feature_dim: int = 32,
    ) -> None:
        super().__init__()
        check_dim(dim, "dim")
        check_dim(feature_dim, "feature_dim")
        hidden = check_sizes(hidden, "hidden", allow_empty=True)
        if features is None and known is None:
            raise ConfigError(
                "ItemTower: no item features and no id embedding (known=None): nothing to embed an "
                "item from; pass known=<the training items> or a table with item features"
            )
        self.features = FeatureEmbedding(features, feature_dim) if features is not None else None
        width = self.features.out_dim if self.features is not None else 0
        self.ids: nn.Embedding | None = None
        idx = np.zeros(n_items, dtype=np.int64)
        if known is not None:
            self.ids = nn.Embedding(n_items, feature_dim)
            nn.init.normal_(self.ids.weight, std=0.1)
            keep = np.zeros(n_items, dtype=bool)
            keep[np.asarray(known, dtype=np.int64)] = True
            keep[0] = False
            idx = np.where(keep, np.arange(n_items), 0)
            width += feature_dim
        self.register_buffer("id_map", torch.from_numpy(idx))
        self.net = _mlp([width, *hidden, dim + 1])
        self.dim = dim

    def forward(
        self, items: torch.Tensor, drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``items (...,)`` [, ``drop (...,)`` bool: hide these items' ids] -> ``((..., dim), (...,))``."""
        parts = []
        if self.features is not None:
            parts.append(self.features(items))
        if self.ids is not None:
            ids = self.id_map[items]
            if drop is not None:
                ids = ids.masked_fill(drop, 0)
            parts.append(self.ids(ids))
        out = self.net(torch.cat(parts, dim=-1))  # (..., dim + 1)
        return out[..., :-1], out[..., -1]

    def has_id(self, items: torch.Tensor) -> torch.Tensor:
        """``(...,)`` bool: the item has its own id embedding."""
        return self.id_map[items] > 0

    def forget_unseen_codes(self, seen_items: np.ndarray) -> None:
        """Map every categorical code that none of ``seen_items`` carries to 0 (padding)."""
        if self.features is not None:
            forget_unseen_codes(self.features, seen_items)


def forget_unseen_codes(features: FeatureEmbedding, seen: np.ndarray) -> None:
    """In place: every categorical code of ``features`` that none of the entities ``seen``
    carries becomes 0 (padding: it contributes nothing), so that a value met only after training
    (a new director, a later year, an unseen zip code) is not read through its untrained
    embedding."""
    idx = torch.as_tensor(np.asarray(seen, dtype=np.int64))
    with torch.no_grad():
        for key in features._keys:
            codes = getattr(features, f"codes_{key}")  # (n_entities, L)
            used = torch.zeros(int(codes.max()) + 1, dtype=torch.bool)
            used[codes[idx].flatten()] = True
            codes.masked_fill_(~used[codes], 0)


def set_pool(
    x: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor | None = None
) -> torch.Tensor:
    """Pool a padded set: ``x (T, N, D), mask (T, N)`` -> ``(T, D)``; the mean of the real entries,
    or with ``logits (T, N)`` their softmax-weighted sum; an empty set gives zeros."""
    if logits is None:
        m = mask.unsqueeze(-1).to(x.dtype)
        return (x * m).sum(-2) / m.sum(-2).clamp_min(1.0)
    a = torch.softmax(logits.masked_fill(~mask, -torch.inf), dim=-1)  # (T, N)
    a = torch.where(mask, a, torch.zeros_like(a))  # an empty set: NaN -> 0
    return (a.unsqueeze(-1) * x).sum(-2)


class _SetEncoder(nn.Module):
    """``(v (T, N, d), r (T, N), mask)`` -> ``(T, hidden)``: ``ReLU(W [v, r v, r])`` pooled."""

    def __init__(self, dim: int, hidden: int, pool: str) -> None:
        super().__init__()
        self.lin = nn.Linear(2 * dim + 1, hidden)
        self.attn = nn.Linear(hidden, 1) if pool == "attention" else None

    def forward(self, v: torch.Tensor, r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        r = r.to(v.dtype).unsqueeze(-1)  # (T, N, 1)
        x = torch.relu(self.lin(torch.cat([v, r * v, r], dim=-1)))  # (T, N, hidden)
        return set_pool(x, mask, None if self.attn is None else self.attn(x).squeeze(-1))


class SetUserTower(nn.Module):
    """A task's support set (and optional history set) -> the user vector ``(T, dim)``.

    Args:
        dim: the item tower's embedding size (and the output size).
        hidden: width of the set encodings and of the MLP's hidden layer.
        pool: ``"mean"`` or ``"attention"``.
        history: encode a second set (the user's source-domain history).
        user_features: the users' side features, or ``None``.
        feature_dim: embedding size of each user feature.

    Example:
        >>> tower = SetUserTower(4, 8, "mean")
        >>> u = tower(torch.randn(2, 3, 4), torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool))
        >>> tuple(u.shape)
        (2, 4)
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        pool: str = "mean",
        *,
        history: bool = False,
        user_features: FeatureTable | None = None,
        feature_dim: int = 16,
    ) -> None:
        super().__init__()
        check_dim(dim, "dim")
        check_dim(hidden, "hidden")
        if pool not in ("mean", "attention"):
            raise ConfigError(f"pool={pool!r}: must be 'mean' or 'attention'; e.g. pool='mean'")
        self.support = _SetEncoder(dim, hidden, pool)
        self.history = _SetEncoder(dim, hidden, pool) if history else None
        self.user_features = (
            FeatureEmbedding(user_features, feature_dim) if user_features is not None else None
        )
        width = hidden * (2 if history else 1) + (2 if history else 1)
        width += self.user_features.out_dim if self.user_features is not None else 0
        self.net = _mlp([width, hidden, dim])

    def forward(
        self,
        v: torch.Tensor,
        r: torch.Tensor,
        mask: torch.Tensor,
        history: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``v (T, N, dim), r (T, N), mask (T, N)``; ``history``: the same triple ``(T, H, ...)``;
        ``users (T,)`` (with user features) -> ``(T, dim)``."""
        parts = [self.support(v, r, mask), torch.log1p(mask.sum(-1, keepdim=True).to(v.dtype))]
        if self.history is not None:
            if history is None:
                raise ValueError("SetUserTower(history=True): pass history=(v, r, mask)")
            hv, hr, hm = history
            parts += [self.history(hv, hr, hm), torch.log1p(hm.sum(-1, keepdim=True).to(v.dtype))]
        if self.user_features is not None:
            if users is None:
                raise ValueError("SetUserTower(user_features=...): pass users (T,)")
            parts.append(self.user_features(users))
        return self.net(torch.cat(parts, dim=-1))  # (T, dim)
