"""``r2d2-source``: R2-D2 for users cold in a target domain who bring a source-domain history.

The model of :mod:`~metarec.methods.learners.r2d2` (a shared body over user and item features, a prior
``g``, a basis ``P h``), with the per-user head solved over the user's target support **and**
their source-domain history together. Each row gets the basis plus two offset columns, one per
side: ``phi = [P h, 1, 0]`` on a target row and ``[P h, 0, 1]`` on a source row, so the taste
coefficients on ``P h`` are shared across domains while each domain keeps its own offset. Source
rows enter with the weight ``omega = sigmoid(a)`` (``a`` meta-learned: how far a source rating
speaks for the target):

``w_u = argmin_w sum_{target s} (r_s - g_s - phi_s^T w)^2
+ omega sum_{source h} (r_h - g_h - phi_h^T w)^2 + sum_j lambda_j w_j^2``

(with implicit feedback the weighted logistic head of :func:`~metarec.methods.learners.r2d2.logistic_head`
over the history's positives and as many sampled source-domain negatives). A user with no target
shot is scored from the history alone (the target offset stays 0). Meta-training runs on
*simulated cold users*, the warm users' target-domain tasks of meta-train, as
:mod:`~metarec.methods.learners.metabridge` does; the histories are drawn from the meta-train source rows
only (``history_len`` per user, a seeded random subset). Before meta-training, the body is
pre-trained for ``pretrain_epochs`` epochs on every meta-train row of both domains with a free
head per user (:func:`~metarec.methods.learners.r2d2.pretrain_body`; the heads are then discarded), so
the item representation also learns from the rows no episode covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.config.objective import RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.relevance import ranking_objective
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.crossdomain.data import cross_domain_view, user_history_rows
from metarec.methods.learners._encode import task_entity
from metarec.methods.learners._loop import (
    LearnerMethod,
    defaults_and_sampler,
    learner_loader,
    parse_settings,
)
from metarec.methods.learners.content_bias import ContentBiasMethod
from metarec.methods.learners.metabridge import target_episodes
from metarec.methods.learners.r2d2 import (
    R2D2,
    R2D2Settings,
    logistic_head,
    pretrain_body,
    ridge_head,
)

__all__ = ["SourceR2D2Settings", "SourceR2D2", "make_r2d2_source"]


@dataclass(frozen=True)
class SourceR2D2Settings(R2D2Settings):
    """:class:`~metarec.methods.learners.r2d2.R2D2Settings` plus the history.

    Fields (besides those of :class:`~metarec.methods.learners.r2d2.R2D2Settings`, whose
    ``pretrain_epochs`` defaults to 3 here: ml1m-cross-genre meta-val MAE 0.7236 without, 0.7130
    with 1, 0.6903 with 3, 0.6967 with 8 epochs, quick budget):
        history_len: source-domain rows kept per user (200: ml1m-cross-genre meta-val MAE 0.7236
            against 0.7325 with 50, quick budget).
        source_weight: initial weight ``omega`` of a source row (then learned), in ``(0, 1)``.
    """

    history_len: int = 200
    pretrain_epochs: int = 3
    source_weight: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.history_len < 1:
            raise ConfigError(f"history_len={self.history_len}: must be >= 1; e.g. history_len=200")
        if not 0.0 < self.source_weight < 1.0:
            raise ConfigError(
                f"source_weight={self.source_weight}: must be in (0, 1); e.g. source_weight=0.5"
            )


class SourceR2D2(R2D2):
    """The model of the module docstring; ``adapt`` returns the heads ``w (T, rank + 2)``.

    Buffers ``hist_items`` / ``hist_targets`` / ``hist_mask`` ``(n_users, H)``: each user's
    source-domain rows (with implicit feedback, ``H = 2 * history_len``: the positives, then as
    many sampled source-domain negatives).
    """

    hist_items: torch.Tensor
    hist_targets: torch.Tensor
    hist_mask: torch.Tensor

    def __init__(self, table: InteractionTable, s: SourceR2D2Settings, **kw: Any) -> None:
        super().__init__(table, s, **kw)
        self.log_ridge = nn.Parameter(torch.full((s.rank + 2,), float(np.log(s.ridge))))
        w = s.source_weight
        self.source_logit = nn.Parameter(torch.tensor(float(np.log(w / (1.0 - w)))))
        h = s.history_len * (1 if self.explicit else 2)
        self.register_buffer("hist_items", torch.zeros(table.n_users, h, dtype=torch.int64))
        self.register_buffer("hist_targets", torch.zeros(table.n_users, h))
        self.register_buffer("hist_mask", torch.zeros(table.n_users, h, dtype=torch.bool))

    def set_history(self, items: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> None:
        """Fill the history buffers (``(n_users, H)`` each)."""
        with torch.no_grad():
            self.hist_items.copy_(items)
            self.hist_targets.copy_(targets)
            self.hist_mask.copy_(mask)

    def query_parts(
        self, users: torch.Tensor, items: torch.Tensor, drop: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, [P h, 1, 0])`` of target-domain rows."""
        g, phi = self.parts(users, items, drop)
        return g, torch.cat([phi, torch.zeros_like(phi[..., :1])], dim=-1)

    def row_parts(
        self, users: torch.Tensor, items: torch.Tensor, source: torch.Tensor, drop: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, phi)`` of table rows: ``[P h, 1, 0]`` on target rows, ``[P h, 0, 1]`` on source rows."""
        g, phi = self.parts(users, items, drop)
        zero = torch.zeros_like(phi[..., :1])
        tgt = torch.cat([phi, zero], -1)
        src = torch.cat([phi[..., :-1], zero, phi[..., -1:]], -1)
        return g, torch.where(source.unsqueeze(-1), src, tgt)

    def history_parts(
        self, user: torch.Tensor, drop: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, [P h, 0, 1])`` of the users' history rows: ``(T,) -> (T, H), (T, H, rank + 2)``."""
        hi = self.hist_items[user]
        g, phi = self.parts(user.unsqueeze(1).expand_as(hi), hi, drop)
        return g, torch.cat([phi[..., :-1], torch.zeros_like(phi[..., :1]), phi[..., -1:]], -1)

    def solve(self, s: EpisodeSet, drop: float = 0.0) -> torch.Tensor:
        """The heads ``(T, rank + 2)`` of the support ``s`` and each task's user history."""
        user = task_entity(s.users, s.mask)  # (T,)
        g_h, phi_h = self.history_parts(user, drop)
        g_t, phi_t = self.query_parts(s.users, s.items, drop)
        g, phi = torch.cat([g_t, g_h], 1), torch.cat([phi_t, phi_h], 1)
        y = torch.cat([s.targets.to(g.dtype), self.hist_targets[user].to(g.dtype)], 1)
        mask = torch.cat([s.mask, self.hist_mask[user]], 1)
        omega = torch.sigmoid(self.source_logit).to(g.dtype)
        weight = torch.cat([torch.ones_like(g_t), omega.expand_as(g_h)], 1)
        lam = self.log_ridge.exp()
        if self.explicit:
            return ridge_head(phi, y - g, mask, lam, weight)
        return logistic_head(phi, g, y, mask, lam, self.newton_steps, weight)


def histories(
    data: FitData, length: int, ranking: RankingObjective | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(items, targets, mask)`` ``(n_users, H)``: each user's meta-train source rows (at most
    ``length``); with implicit feedback (or ratings trained to rank, ``ranking``: their relevance
    labels) followed by ``length`` sampled source-domain negatives (items of the source domain(s)
    the user has no meta-train row with), label 0."""
    t = data.table
    view = cross_domain_view(t, data.splits)
    rows = user_history_rows(view, view.source_rows, length, seed=data.seed)
    mask = rows >= 0
    items = np.where(mask, t.items[np.maximum(rows, 0)], 0)
    targets = np.where(mask, t.ratings[np.maximum(rows, 0)], 0.0).astype(np.float32)
    if ranking is not None:
        targets = ((targets >= ranking.relevance - 1e-9) & mask).astype(np.float32)
    if t.feedback != "explicit" or ranking is not None:
        rng = np.random.default_rng(data.seed + 7)
        pool = np.unique(t.items[view.source_rows])
        neg = pool[rng.integers(0, pool.shape[0], size=items.shape)]
        seen = np.zeros(items.shape, dtype=bool)  # a sampled item that is a positive is dropped
        for j in range(items.shape[1]):
            seen |= neg == items[:, j : j + 1]
        neg_mask = mask & ~seen  # one negative per real positive
        items = np.concatenate([items, np.where(neg_mask, neg, 0)], 1)
        pos = targets if ranking is not None else np.ones_like(targets) * mask
        targets = np.concatenate([pos, np.zeros_like(targets)], 1)
        mask = np.concatenate([mask, neg_mask], 1)
    return (
        torch.from_numpy(items.astype(np.int64)),
        torch.from_numpy(targets.astype(np.float32)),
        torch.from_numpy(mask),
    )


def make_r2d2_source(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``r2d2-source`` (see the module docstring) with :class:`SourceR2D2Settings` overrides."""
    defaults, scfg = defaults_and_sampler(scenario, SourceR2D2Settings)
    s = parse_settings(SourceR2D2Settings, "r2d2-source", settings, defaults, scenario)

    def objective(table: Any) -> RankingObjective | None:
        return ranking_objective(scenario, table)

    def build(data: FitData, st: SourceR2D2Settings) -> SourceR2D2:
        t, rows = data.table, data.splits.pools[data.splits.train].rows
        rank = objective(t)
        model = SourceR2D2(t, st, known_items=t.items[rows], ranking=rank)
        model.set_history(*histories(data, st.history_len, rank))
        if model.uses_prior:
            cb = ContentBiasMethod(method.sampler).fit(data)
            assert cb.cold_bias is not None  # set by fit
            model.set_prior(cb.mu + cb.bias.float(), cb.mu + cb.cold_bias.float())
        return model

    def pretrain(model: SourceR2D2, data: FitData, st: SourceR2D2Settings) -> dict[str, Any]:
        view = cross_domain_view(data.table, data.splits)
        rows = np.concatenate([view.source_rows, view.target_rows])
        source = np.arange(rows.shape[0]) < view.source_rows.shape[0]
        return pretrain_body(model, data, rows, source, st)

    method = LearnerMethod(
        "r2d2-source",
        build,
        s,
        scfg,
        pretrain=pretrain,
        episodes=target_episodes,
        objective=objective,
    )
    return method


def _shell(table: Any, s: SourceR2D2Settings, shape: Any) -> SourceR2D2:
    return SourceR2D2(table, s, ranking=shape.get("ranking"))


register_method(
    "r2d2-source",
    make_r2d2_source,
    loader=learner_loader(SourceR2D2Settings, _shell),
    tags=MethodTags(feedback=("explicit",), source_history=True, family="learner", ranks=True),
    replace=True,
)
