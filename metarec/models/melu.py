"""MeLU: a side-feature recommender whose decision layers adapt per task.

After Lee et al., "MeLU: Meta-Learned User Preference Estimator for Cold-Start Recommendation"
(KDD 2019): each user and item categorical feature is embedded (multi-valued features
mean-pooled over their non-padding values), numeric features are appended, the user and item
vectors are concatenated and fed to an MLP (``fc1 64 -> fc2 64 -> linear out``) that outputs a
rating (explicit) or a logit (implicit). Text features (pretrained embeddings of titles or
plots, :mod:`metarec.data.text`) enter as learned projections beside the categorical blocks. The
inner loop adapts the decision layers
(``decision.*`` and ``head.*``); the embeddings are meta-learned only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metarec._errors import ConfigError
from metarec.data.features import FeatureTable
from metarec.models._checks import check_dim, check_dropout, check_sizes
from metarec.models.base import RecModel, seeded
from metarec.models.features import FeatureEmbedding

__all__ = ["MeLUConfig", "MeLU"]


@dataclass(frozen=True)
class MeLUConfig:
    """MeLU sizes (defaults as in the paper).

    Args:
        embedding_dim: size of each categorical feature embedding.
        hidden: widths of the decision layers (``fc1``, ``fc2``, ...).
        dropout: dropout after each decision layer (vmapped with ``randomness='different'``).
        seed: initialisation seed (the global RNG is left untouched).
    """

    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    dropout: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", check_sizes(self.hidden, "hidden"))
        check_dim(self.embedding_dim, "embedding_dim")
        check_dropout(self.dropout)


class MeLU(RecModel):
    """Feature-based MeLU. ``forward(users (..., N), items (..., N)) -> (..., N)``.

    Args:
        user_features, item_features: encoded side features (at least one side needs some).
        config: sizes; see :class:`MeLUConfig`.
        adapt: inner-loop patterns (default ``("decision.*", "head.*")``).

    Parameters: ``user_features.embeddings.<f>.weight``, ``item_features.embeddings.<f>.weight``,
    ``decision.<i>.{weight,bias}``, ``head.{weight,bias}``.

    Example:
        >>> model = MeLU.from_table(table, MeLUConfig())           # doctest: +SKIP
        >>> model(users, items).shape == users.shape                 # doctest: +SKIP
        True
    """

    adapt = ("decision.*", "head.*")
    head_patterns = ("head.*",)
    encode_patterns = ("user_features.*", "item_features.*")
    serving_kernel = "melu"

    def __init__(
        self,
        user_features: FeatureTable | None,
        item_features: FeatureTable | None,
        config: MeLUConfig | None = None,
        *,
        adapt: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(adapt)
        self.config = config = config or MeLUConfig()
        if user_features is None and item_features is None:
            raise ConfigError(
                "MeLU(user_features=None, item_features=None): MeLU scores users and items by "
                "their side features and needs at least one side; load features with "
                "InteractionTable.from_frame(..., item_features=..., item_feature_specs=...) or use "
                "an id model (build_model('gmf', table))"
            )
        with seeded(config.seed):
            self.user_features = (
                FeatureEmbedding(user_features, config.embedding_dim) if user_features else None
            )
            self.item_features = (
                FeatureEmbedding(item_features, config.embedding_dim) if item_features else None
            )
            width = sum(
                f.out_dim for f in (self.user_features, self.item_features) if f is not None
            )
            if width == 0:
                raise ConfigError(
                    "MeLU: the feature tables hold no categorical, numeric or text feature; pass "
                    "feature specs when building the InteractionTable"
                )
            sizes = (width, *config.hidden)
            self.decision = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            )
            self.head = nn.Linear(sizes[-1], 1)

    @classmethod
    def from_table(
        cls, table: Any, config: MeLUConfig | None = None, *, adapt: tuple[str, ...] | None = None
    ) -> MeLU:
        """Build from an :class:`~metarec.data.table.InteractionTable`'s side features."""
        return cls(table.user_features, table.item_features, config, adapt=adapt)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.decide(self.encode(users, items))

    def encode(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The decision-layer input, user and item feature blocks: ``(..., N) x2 -> (..., N, F)``."""
        parts = []
        if self.user_features is not None:
            parts.append(self.user_features(users))  # (..., N, Fu)
        if self.item_features is not None:
            parts.append(self.item_features(items))  # (..., N, Fi)
        return torch.cat(parts, dim=-1)  # (..., N, F)

    def decide(self, x: torch.Tensor) -> torch.Tensor:
        """Decision layers and output: ``(..., N, F) -> (..., N)``."""
        for layer in self.decision:
            x = F.relu(layer(x))
            if self.config.dropout:
                x = F.dropout(x, self.config.dropout, self.training)
        return self.head(x).squeeze(-1)  # (..., N)
