"""Id-embedding recommenders: GMF, NeuMF (He et al., WWW 2017) and a two-tower dot product.

Cold ids. Each model keeps boolean buffers ``known_users`` ``(n_users,)`` and ``known_items``
``(n_items,)``, set from the meta-train table with :meth:`IdModel.set_known`. An index that is
not known (and index 0, the encoders' unknown slot) is mapped to 0 and embedded by a learned,
shared ``unknown`` vector instead of its table row. The default inner loop adapts the user-side
``unknown`` vector(s) and the head, so a cold user's embedding starts from a meta-learned
initialisation and is fitted to the task's support set. For user-level tasks (meta-test users
disjoint from meta-train users) call ``set_known(users=[], items=train.items)``: every task user
is then cold, during meta-training as at test time, and the unknown embedding is meta-learned.
Before ``set_known`` every index but 0 counts as known. Items are never cold during meta-training
(its sampled negatives come from the meta-train items too), so the item-side ``unknown`` vector
keeps its small random initialisation: an item unseen in training scores like an item with a
near-zero id embedding, neither first nor last by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarec._errors import ConfigError
from metarec.data.features import FeatureTable
from metarec.models._checks import check_dim, check_dropout, check_sizes
from metarec.models.base import RecModel, seeded
from metarec.models.features import FeatureEmbedding

__all__ = ["IdConfig", "IdEmbedding", "IdModel", "GMF", "NeuMF", "TwoTower"]


@dataclass(frozen=True)
class IdConfig:
    """Sizes of the id models.

    Args:
        embedding_dim: id embedding size (GMF, NeuMF's two parts, TwoTower).
        hidden: NeuMF's MLP tower widths; TwoTower's tower widths (the last is the dot size).
            Unused by GMF.
        features: TwoTower only: add side-feature embeddings to the tower inputs.
        dropout: dropout in the MLP layers.
        seed: initialisation seed (the global RNG is left untouched).
    """

    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 32)
    features: bool = False
    dropout: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", check_sizes(self.hidden, "hidden"))
        check_dim(self.embedding_dim, "embedding_dim")
        check_dropout(self.dropout)


class IdEmbedding(nn.Module):
    """Id table plus a shared unknown vector: ``idx (...,) -> (..., dim)``; index 0 -> ``unknown``.

    Parameters: ``weight`` ``(n, dim)`` (row 0 unused) and ``unknown`` ``(dim,)``.
    """

    def __init__(self, n: int, dim: int, init_std: float = 0.1) -> None:
        super().__init__()
        weight = torch.randn(n, dim) * init_std
        weight[0] = 0.0
        self.weight = nn.Parameter(weight)
        self.unknown = nn.Parameter(torch.randn(dim) * init_std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        vecs = F.embedding(idx, self.weight)  # (..., dim)
        return torch.where((idx == 0).unsqueeze(-1), self.unknown, vecs)


class IdModel(RecModel):
    """Base of the id models: the known-id buffers and the cold-id mapping."""

    known_users: torch.Tensor  # buffer (n_users,) bool
    known_items: torch.Tensor  # buffer (n_items,) bool

    def __init__(self, n_users: int, n_items: int, adapt: Sequence[str] | None) -> None:
        super().__init__(adapt)
        for arg, n in (("n_users", n_users), ("n_items", n_items)):
            if not isinstance(n, int) or n < 2:
                raise ConfigError(
                    f"{arg}={n!r}: needs the unknown slot plus at least one id; pass len(encoder) >= 2"
                )
        self.register_buffer("known_users", torch.arange(n_users) > 0)  # (n_users,) bool
        self.register_buffer("known_items", torch.arange(n_items) > 0)  # (n_items,) bool

    def set_known(self, users: Any = None, items: Any = None) -> IdModel:
        """Mark exactly these user/item indices as known (``None`` leaves that side as it is).

        Args:
            users, items: encoded indices seen in meta-training (any int array-like;
                duplicates and 0 are fine). An empty array makes every id of that side cold.
        """
        for arg, idx, buf in (
            ("users", users, self.known_users),
            ("items", items, self.known_items),
        ):
            if idx is None:
                continue
            arr = torch.as_tensor(np.asarray(idx, dtype=np.int64).reshape(-1), device=buf.device)
            if arr.numel() and (int(arr.min()) < 0 or int(arr.max()) >= buf.numel()):
                bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
                raise ConfigError(
                    f"set_known({arg}=...): index {bad} is outside [0, {buf.numel()}); pass encoded "
                    f"indices of the table this model was built from (table.{arg})"
                )
            buf.zero_()
            buf[arr] = True
            buf[0] = False
        return self

    def map_ids(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unknown indices -> 0. ``(..., N), (..., N) -> (..., N), (..., N)``."""
        users = torch.where(self.known_users[users], users, torch.zeros_like(users))
        items = torch.where(self.known_items[items], items, torch.zeros_like(items))
        return users, items

    @classmethod
    def from_table(
        cls, table: Any, config: IdConfig | None = None, *, adapt: Sequence[str] | None = None
    ) -> IdModel:
        """Build over an :class:`~metarec.data.table.InteractionTable`'s index spaces."""
        # IdModel's own constructor takes no config; each concrete subclass's is
        # ``(n_users, n_items, config, *, adapt)``, which is what this calls.
        build: Callable[..., IdModel] = cls
        return build(table.n_users, table.n_items, config, adapt=adapt)


class GMF(IdModel):
    """Generalised matrix factorisation: ``head(u ⊙ i)``. ``(..., N), (..., N) -> (..., N)``.

    Parameters: ``user.{weight,unknown}``, ``item.{weight,unknown}``, ``head.{weight,bias}``.
    Default ``adapt``: ``("user.unknown", "head.*")``.
    """

    adapt = ("user.unknown", "head.*")
    head_patterns = ("head.*",)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        config: IdConfig | None = None,
        *,
        adapt: Sequence[str] | None = None,
    ) -> None:
        super().__init__(n_users, n_items, adapt)
        self.config = config = config or IdConfig()
        with seeded(config.seed):
            self.user = IdEmbedding(n_users, config.embedding_dim)
            self.item = IdEmbedding(n_items, config.embedding_dim)
            self.head = nn.Linear(config.embedding_dim, 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users, items = self.map_ids(users, items)
        return self.head(self.user(users) * self.item(items)).squeeze(-1)  # (..., N)


class NeuMF(IdModel):
    """NeuMF: a GMF part and an MLP part over separate embeddings, joined by a linear head.

    Parameters: ``{user,item}_{gmf,mlp}.{weight,unknown}``, ``mlp.<i>.{weight,bias}``,
    ``head.{weight,bias}``. Default ``adapt``: the user-side unknown vectors and the head.
    """

    adapt = ("user_gmf.unknown", "user_mlp.unknown", "head.*")
    head_patterns = ("head.*",)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        config: IdConfig | None = None,
        *,
        adapt: Sequence[str] | None = None,
    ) -> None:
        super().__init__(n_users, n_items, adapt)
        self.config = config = config or IdConfig()
        d = config.embedding_dim
        with seeded(config.seed):
            self.user_gmf, self.item_gmf = IdEmbedding(n_users, d), IdEmbedding(n_items, d)
            self.user_mlp, self.item_mlp = IdEmbedding(n_users, d), IdEmbedding(n_items, d)
            self.mlp = _layers((2 * d, *config.hidden))
            self.head = nn.Linear(d + config.hidden[-1], 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users, items = self.map_ids(users, items)
        gmf = self.user_gmf(users) * self.item_gmf(items)  # (..., N, d)
        x = torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1)  # (..., N, 2d)
        x = _run(self.mlp, x, self.config.dropout, self.training, last_act=True)  # (..., N, h)
        return self.head(torch.cat([gmf, x], dim=-1)).squeeze(-1)  # (..., N)


class TwoTower(IdModel):
    """Dot product of a user tower and an item tower, plus a global bias.

    Each tower maps ``[id embedding, side-feature embedding (config.features)]`` through MLP
    layers ``config.hidden`` (ReLU between, none after the last). ``(..., N) -> (..., N)``.

    Parameters: ``{user,item}.{weight,unknown}``, ``{user,item}_features.*`` (optional),
    ``{user,item}_tower.<i>.{weight,bias}``, ``bias``. Default ``adapt``:
    ``("user.unknown", "user_tower.*", "bias")``; ANIL's head: the last user-tower layer and bias.
    """

    adapt = ("user.unknown", "user_tower.*", "bias")
    serving_kernel = "two-tower"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        config: IdConfig | None = None,
        *,
        user_features: FeatureTable | None = None,
        item_features: FeatureTable | None = None,
        adapt: Sequence[str] | None = None,
    ) -> None:
        super().__init__(n_users, n_items, adapt)
        self.config = config = config or IdConfig()
        d = config.embedding_dim
        use = config.features
        with seeded(config.seed):
            self.user, self.item = IdEmbedding(n_users, d), IdEmbedding(n_items, d)
            self.user_features = (
                FeatureEmbedding(user_features, d) if use and user_features else None
            )
            self.item_features = (
                FeatureEmbedding(item_features, d) if use and item_features else None
            )
            du = d + (self.user_features.out_dim if self.user_features else 0)
            di = d + (self.item_features.out_dim if self.item_features else 0)
            self.user_tower = _layers((du, *config.hidden))
            self.item_tower = _layers((di, *config.hidden))
            self.bias = nn.Parameter(torch.zeros(()))
        self.head_patterns = (f"user_tower.{len(config.hidden) - 1}.*", "bias")

    @classmethod
    def from_table(
        cls, table: Any, config: IdConfig | None = None, *, adapt: Sequence[str] | None = None
    ) -> TwoTower:
        return cls(
            table.n_users,
            table.n_items,
            config,
            user_features=table.user_features,
            item_features=table.item_features,
            adapt=adapt,
        )

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raw_u, raw_i = users, items
        users, items = self.map_ids(users, items)
        u = [self.user(users)]  # [(..., N, d)]
        i = [self.item(items)]
        if self.user_features is not None:
            u.append(self.user_features(raw_u))  # features are known for cold ids too
        if self.item_features is not None:
            i.append(self.item_features(raw_i))
        p = self.config.dropout, self.training
        u_vec = _run(self.user_tower, torch.cat(u, dim=-1), *p)  # (..., N, h)
        i_vec = _run(self.item_tower, torch.cat(i, dim=-1), *p)  # (..., N, h)
        return (u_vec * i_vec).sum(dim=-1) + self.bias  # (..., N)


def _layers(sizes: tuple[int, ...]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def _run(
    layers: nn.ModuleList, x: torch.Tensor, dropout: float, training: bool, last_act: bool = False
) -> torch.Tensor:
    for k, layer in enumerate(layers):
        x = layer(x)
        if last_act or k < len(layers) - 1:
            x = F.relu(x)
            if dropout:
                x = F.dropout(x, dropout, training)
    return x
