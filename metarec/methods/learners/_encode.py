"""Shared building blocks of the learners: side encoders, masked pooling, small MLPs.

:class:`SideEncoder` embeds a user or item index through its side features
(:class:`~metarec.models.features.FeatureEmbedding`) or, for a side without features, through an
id embedding over the ids seen in meta-train (others share the zero "unknown" slot 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from metarec.data.features import FeatureTable
from metarec.models.features import FeatureEmbedding

__all__ = ["SideEncoder", "masked_mean", "mlp", "task_entity", "unit_targets"]


class SideEncoder(nn.Module):
    """Index ``(...,)`` -> ``(..., out_dim)`` for one entity side (users or items).

    Args:
        features: the side's encoded features, or ``None``.
        n: index-space size (slot 0 included).
        dim: embedding size (per categorical feature, and of the id embedding).
        known: indices that may keep their own id embedding (id mode only); the rest map to 0.
        ids: ``"auto"`` (ids only when the side has no features), ``"always"`` (features and
            ids) or ``"never"`` (features only; width 0 without features).
    """

    id_map: torch.Tensor  # buffer (n,), only when ids are used

    def __init__(
        self,
        features: FeatureTable | None,
        n: int,
        dim: int,
        *,
        known: np.ndarray | None = None,
        ids: str = "auto",
    ) -> None:
        super().__init__()
        self.features = FeatureEmbedding(features, dim) if features is not None else None
        use_ids = ids == "always" or (ids == "auto" and features is None)
        self.ids: nn.Embedding | None = None
        if use_ids:
            self.ids = nn.Embedding(n, dim)
            nn.init.normal_(self.ids.weight, std=0.1)
            with torch.no_grad():
                self.ids.weight[0] = 0.0
            idx = np.arange(n, dtype=np.int64)
            if known is not None:
                keep = np.zeros(n, dtype=bool)
                keep[np.asarray(known, dtype=np.int64)] = True
                idx = np.where(keep, idx, 0)
            self.register_buffer("id_map", torch.from_numpy(idx))
        self.out_dim = (self.features.out_dim if self.features is not None else 0) + (
            dim if use_ids else 0
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.features is not None:
            parts.append(self.features(idx))
        if self.ids is not None:
            parts.append(self.ids(self.id_map[idx]))
        if not parts:
            return torch.zeros(*idx.shape, 0, dtype=torch.get_default_dtype(), device=idx.device)
        return torch.cat(parts, dim=-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real entries of a set: ``(T, N, D), (T, N) -> (T, D)`` (zeros for an empty set).

    ``out[t] = sum_n mask[t, n] x[t, n] / max(1, sum_n mask[t, n])``.
    """
    m = mask.unsqueeze(-1).to(x.dtype)  # (T, N, 1)
    return (x * m).sum(-2) / m.sum(-2).clamp_min(1.0)


def mlp(sizes: Sequence[int], *, last_act: bool = False) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` over ``sizes`` (ReLU after the last one too with ``last_act``)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def task_entity(idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The entity of each task: ``(T, N) -> (T,)``, its first real entry; for an empty task
    the largest index of its row (serving pads a user's empty support with the user's index,
    the samplers with 0, so an empty task keeps its user, or gets the unknown slot 0)."""
    first = mask.to(torch.int64).argmax(dim=1)  # (T,)
    ent = idx.gather(1, first.unsqueeze(1)).squeeze(1)
    return torch.where(mask.any(dim=1), ent, idx.max(dim=1).values)


def unit_targets(y: torch.Tensor, scale: tuple[float, float] | None) -> torch.Tensor:
    """Targets as encoder inputs: ratings mapped to ``[0, 1]`` by the scale; labels unchanged."""
    if scale is None:
        return y
    lo, hi = scale
    return (y - lo) / (hi - lo)
