"""LWA and NLBA: class-conditioned amortised adaptation for implicit feedback.

After Vartak et al., "A Meta-Learning Perspective on Cold-Start Recommendations for Items"
(NeurIPS 2017), with tasks as users: the support set holds the user's positives (label 1) and
negatives (label 0, sampled or observed). Items are embedded ``F(i)`` (an MLP over their side
features, or an id embedding when there are none). The *class representations* of a task are

``R_c = sum_j 1[y_j = c] m_j F(i_j) / max(1, sum_j 1[y_j = c] m_j)``, ``c in {0, 1}``

(zero for a class with no support entry; ``m_j`` the mask).

* **LWA** (linear weight adaptation): a logistic regression whose weight vector is generated
  from the class representations, ``w = W_0 R_0 + W_1 R_1``; ``logit(i) = w . F(i) + b``.
* **NLBA** (non-linear bias adaptation): an MLP with shared weights whose hidden biases are
  generated, ``b_l = V_l0 G_0 + V_l1 G_1`` (``G_c`` the class representations of a second
  item embedding ``G``); ``logit(i) = w^T relu(... relu(A_1 F(i) + b_1) ...) + b``.

Adaptation is one forward pass over the support (``steps``/``lr`` are ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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

__all__ = ["LWASettings", "LWA", "NLBA", "class_representations", "make_lwa", "make_nlba"]


@dataclass(frozen=True)
class LWASettings(TrainSettings):
    """Fields: ``dim`` (feature / id embedding size), ``item_dim`` (size of ``F(i)``),
    ``hidden`` (NLBA's hidden widths)."""

    dim: int = 32
    item_dim: int = 32
    hidden: tuple[int, ...] = (64, 32)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1 or self.item_dim < 1 or not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"dim={self.dim}, item_dim={self.item_dim}, hidden={list(self.hidden)}: sizes must be >= 1"
            )


def class_representations(
    x: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R_0, R_1)``: masked class means ``(T, N, D), (T, N), (T, N) -> (T, D) x2``."""
    pos = (mask & (labels > 0.5)).unsqueeze(-1).to(x.dtype)
    neg = (mask & (labels <= 0.5)).unsqueeze(-1).to(x.dtype)
    r1 = (x * pos).sum(-2) / pos.sum(-2).clamp_min(1.0)
    r0 = (x * neg).sum(-2) / neg.sum(-2).clamp_min(1.0)
    return r0, r1


class _ClassConditioned(nn.Module):
    def __init__(self, table: Any, s: LWASettings, known_items: Any) -> None:
        super().__init__()
        if table.feedback != "implicit":
            raise ConfigError(
                f"{type(self).__name__.lower()}: needs implicit feedback (positives and negatives), the table is "
                f"{table.feedback!r}; use an implicit scenario (e.g. tasks/amazon-sport-cloth.toml) or 'tanp'/'mamo'"
            )
        self.item_enc = SideEncoder(table.item_features, table.n_items, s.dim, known=known_items)
        self.embed = mlp([self.item_enc.out_dim, s.item_dim])

    def items(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embed(self.item_enc(idx))

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        ctx = self.adapt(batch.support)
        q = batch.query
        return LOSSES["bce"](self.score(ctx, q.users, q.items), q.targets, q.mask).mean()

    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> Any:  # pragma: no cover
        raise NotImplementedError

    def score(
        self, ctx: Any, users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class LWA(_ClassConditioned):
    """Linear weight adaptation (see the module docstring)."""

    def __init__(self, table: Any, s: LWASettings, *, known_items: Any = None) -> None:
        super().__init__(table, s, known_items)
        self.w0 = nn.Linear(s.item_dim, s.item_dim, bias=False)
        self.w1 = nn.Linear(s.item_dim, s.item_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(()))

    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> torch.Tensor:
        r0, r1 = class_representations(self.items(support.items), support.targets, support.mask)
        return self.w0(r0) + self.w1(r1)  # (T, D): the task's weight vector

    def score(self, ctx: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.items(items) * ctx.unsqueeze(1)).sum(-1) + self.bias


class NLBA(_ClassConditioned):
    """Non-linear bias adaptation (see the module docstring)."""

    def __init__(self, table: Any, s: LWASettings, *, known_items: Any = None) -> None:
        super().__init__(table, s, known_items)
        self.embed_g = mlp([self.item_enc.out_dim, s.item_dim])
        sizes = [s.item_dim, *s.hidden]
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.v0 = nn.ModuleList(nn.Linear(s.item_dim, h) for h in s.hidden)
        self.v1 = nn.ModuleList(nn.Linear(s.item_dim, h, bias=False) for h in s.hidden)
        self.out = nn.Linear(sizes[-1], 1)

    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> list[torch.Tensor]:
        g0, g1 = class_representations(
            self.embed_g(self.item_enc(support.items)), support.targets, support.mask
        )
        return [
            v0(g0) + v1(g1) for v0, v1 in zip(self.v0, self.v1, strict=True)
        ]  # per layer (T, H_l)

    def score(
        self, ctx: list[torch.Tensor], users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        h = self.items(items)
        for layer, b in zip(self.layers, ctx, strict=True):
            h = F.relu(layer(h) + b.unsqueeze(1))
        return self.out(h).squeeze(-1)


def _builder(cls: type[_ClassConditioned]):
    def build(data: FitData, s: LWASettings) -> _ClassConditioned:
        t, rows = data.table, data.splits.pools[data.splits.train].rows
        return cls(t, s, known_items=t.items[rows])

    return build


def make_lwa(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``lwa`` from a scenario (budget, ``model.embedding_dim``) and :class:`LWASettings` overrides."""
    defaults, scfg = defaults_and_sampler(scenario, LWASettings)
    return LearnerMethod(
        "lwa",
        _builder(LWA),
        parse_settings(LWASettings, "lwa", settings, defaults, scenario),
        scfg,
    )


def make_nlba(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``nlba`` from a scenario (budget, ``model.embedding_dim``) and :class:`LWASettings` overrides."""
    defaults, scfg = defaults_and_sampler(scenario, LWASettings)
    return LearnerMethod(
        "nlba",
        _builder(NLBA),
        parse_settings(LWASettings, "nlba", settings, defaults, scenario),
        scfg,
    )


def _shell(cls: type[_ClassConditioned]):
    def shell(table: Any, s: LWASettings, shape: Any) -> _ClassConditioned:
        return cls(table, s, known_items=None)

    return shell


_TAGS = MethodTags(feedback=("implicit",), family="learner")
register_method(
    "lwa", make_lwa, loader=learner_loader(LWASettings, _shell(LWA)), tags=_TAGS, replace=True
)
register_method(
    "nlba", make_nlba, loader=learner_loader(LWASettings, _shell(NLBA)), tags=_TAGS, replace=True
)
