"""The no-adaptation baseline every learner is compared with in its tests and quick benchmark.

:class:`FeatureGlobal` is one MLP over the same side encoders (:class:`~metarec.methods.learners._encode.SideEncoder`)
trained on every meta-train query, ignoring the support: ``adapt`` returns the shared model for
every task. ``make_feature_global(scenario, **settings)`` builds it as a
:class:`~metarec.methods.Method` (registered as ``feature-global``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.algorithms.losses import LOSSES
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.learners._encode import SideEncoder, mlp
from metarec.methods.learners._loop import (
    LearnerMethod,
    TrainSettings,
    defaults_and_sampler,
    learner_loader,
    parse_settings,
)

__all__ = ["GlobalSettings", "FeatureGlobal", "make_feature_global"]


@dataclass(frozen=True)
class GlobalSettings(TrainSettings):
    """Fields: ``dim`` (feature embedding size), ``hidden`` (MLP widths)."""

    dim: int = 32
    hidden: tuple[int, ...] = (64, 64)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1 or not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"dim={self.dim}, hidden={list(self.hidden)}: sizes must be >= 1; e.g. hidden=[64, 64]"
            )


class FeatureGlobal(nn.Module):
    """``score(users, items) = MLP([user features, item features])``, the same for every task."""

    def __init__(self, table: Any, s: GlobalSettings, *, known_items: Any = None) -> None:
        super().__init__()
        self.loss = "mse" if table.feedback == "explicit" else "bce"
        self.user_enc = SideEncoder(table.user_features, table.n_users, s.dim, ids="never")
        self.item_enc = SideEncoder(table.item_features, table.n_items, s.dim, known=known_items)
        self.net = mlp([self.user_enc.out_dim + self.item_enc.out_dim, *s.hidden, 1])
        if table.feedback == "explicit" and table.rating_scale is not None:
            out = self.net[-1]
            assert isinstance(out, nn.Linear)  # mlp() ends in a Linear layer
            nn.init.constant_(out.bias, sum(table.rating_scale) / 2)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.user_enc(users), self.item_enc(items)], dim=-1)).squeeze(-1)

    def adapt(self, support: EpisodeSet, steps: int | None = None, lr: float | None = None) -> None:
        return None

    def score(self, ctx: None, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self(users, items)

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        both = [batch.support, batch.query]
        u = torch.cat([s.users for s in both], 1)
        i = torch.cat([s.items for s in both], 1)
        y = torch.cat([s.targets for s in both], 1)
        m = torch.cat([s.mask for s in both], 1)
        return LOSSES[self.loss](self(u, i), y, m).mean()


def _build(data: FitData, s: GlobalSettings) -> FeatureGlobal:
    t, rows = data.table, data.splits.pools[data.splits.train].rows
    return FeatureGlobal(t, s, known_items=t.items[rows])


def make_feature_global(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``feature-global`` (see the module docstring) with :class:`GlobalSettings` overrides."""
    defaults, scfg = defaults_and_sampler(scenario, GlobalSettings)
    return LearnerMethod(
        "feature-global",
        _build,
        parse_settings(GlobalSettings, "feature-global", settings, defaults, scenario),
        scfg,
    )


def _shell(table: Any, s: GlobalSettings, shape: Any) -> FeatureGlobal:
    return FeatureGlobal(table, s)


register_method(
    "feature-global",
    make_feature_global,
    loader=learner_loader(GlobalSettings, _shell),
    tags=MethodTags(family="learner"),
    replace=True,
)
