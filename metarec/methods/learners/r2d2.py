"""``r2d2``: a meta-learned rating model whose per-user head is solved in closed form.

R2-D2 (Bertinetto et al., "Meta-learning with differentiable closed-form solvers", ICLR 2019)
meta-learns a representation across tasks and adapts each task by a ridge regression on it,
solved exactly and differentiated through. Here a task is a user and the representation is
over (user, item) pairs:

* a shared body ``h = MLP([x_u, x_i])`` over the user's side features and the item's side
  features plus, optionally, the item's own id embedding (items seen in meta-train; others get
  the shared "unknown" slot, and during meta-training each item's id is dropped to that slot with
  probability ``id_dropout``, so the model learns to place cold items from their features);
* a prior prediction ``g(u, i) = mu + b_i + v^T h + c`` (the rating without the support) and a
  basis ``phi(u, i) = [P h, 1]`` of ``rank + 1`` functions (the constant is the user's offset).
  With ``prior="content"`` (explicit feedback) ``mu + b_i`` is the fixed item prior of
  :mod:`~metarec.methods.learners.content_bias` (a meta-train item's shrunk mean rating, a cold item's
  content prediction, selected on meta-val) and ``v, c`` start at 0, so meta-training starts from
  that baseline and learns what it misses; an item whose id is dropped gets its out-of-fold
  content prediction instead of its mean, as a cold item would. With ``prior="none"`` the
  network learns ``g`` alone (``mu + b_i = 0``);
* adaptation: the head ``w_u`` that fits the support's residuals,
  ``w_u = argmin_w sum_s (r_s - g_s - phi_s^T w)^2 + sum_j lambda_j w_j^2
  = (Phi^T Phi + diag(lambda))^-1 Phi^T (r - g)`` (explicit feedback), one small linear solve per
  user; with implicit feedback the head is the L2-regularised logistic regression of the labels
  on ``phi`` with offset ``g``, ``newton_steps`` Newton steps from ``w = 0``;
* prediction: ``r̂(u, i) = g(u, i) + phi(u, i)^T w_u``.

The body, ``v``, ``P`` and the ridge strengths ``lambda = exp(log_lambda)`` (one per basis
function, learned) are meta-trained on the query loss after the solve, so the model learns the
features that a few ratings can fit. Adaptation is one forward pass and a ``(rank + 1)``-square
solve (``steps``/``lr`` are ignored); an empty support gives ``w = 0``, the prior ``g``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarec._errors import ConfigError
from metarec.algorithms.losses import set_loss_of
from metarec.config.objective import RankingObjective
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.episodes.relevance import ranking_objective
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.learners._encode import SideEncoder, mlp
from metarec.methods.learners._loop import (
    LearnerMethod,
    TrainSettings,
    defaults_and_sampler,
    learner_loader,
    parse_settings,
)
from metarec.methods.learners.content_bias import ContentBiasMethod

__all__ = ["R2D2Settings", "R2D2", "ridge_head", "logistic_head", "random_shots", "make_r2d2"]


@dataclass(frozen=True)
class R2D2Settings(TrainSettings):
    """Settings of ``r2d2`` (the outer loop's budget: :class:`TrainSettings`).

    Fields:
        dim: embedding size of each side feature and of the item id.
        hidden: widths of the shared body.
        rank: number of learned basis functions of the per-user head (plus the constant).
        ridge: initial ridge strength of every basis function (then learned; 3 was better than
            1 and 10 on ml1m-melu meta-val).
        item_ids: give meta-train items their own id embedding besides their features.
        id_dropout: probability that meta-training hides an item's id (0: never).
        newton_steps: Newton steps of the logistic head (implicit feedback only).
        prior: ``"content"`` (the content-bias item prior under ``g``; explicit feedback, else
            ignored) or ``"none"``.
        pretrain_epochs: epochs of supervised pre-training of the body before meta-training, on
            every meta-train row, with a free head per user (an embedding, then discarded); 0:
            none (on ml1m-melu meta-val 3 epochs gave 0.7710 / 0.7440 / 0.7286 at 1 / 5 shots /
            the full support, against 0.7641 / 0.7383 / 0.7251 without).
        pretrain_lr: Adam rate of that pre-training.
        vary_shots: meta-train each task on a random part of its support (``k`` of its ``n``
            entries, ``k`` log-uniform in ``1..n``: :func:`random_shots`), so the learned ridge
            strengths suit every support size from one rating up, not only the scenario's
            (ml1m-melu meta-val MAE at 1 / 5 shots / the full support: 0.797 / 0.759 / 0.738
            without, 0.776 / 0.743 / 0.728 with ``k`` uniform, 0.764 / 0.738 / 0.725
            log-uniform; ``ridge=3``, ``benchmarks/learners_tune.py``).
    """

    dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    rank: int = 16
    ridge: float = 3.0
    item_ids: bool = True
    id_dropout: float = 0.2
    newton_steps: int = 2
    prior: str = "content"
    vary_shots: bool = True
    pretrain_epochs: int = 0
    pretrain_lr: float = 3e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1 or not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"dim={self.dim}, hidden={list(self.hidden)}: sizes must be >= 1; e.g. hidden=[64, 64]"
            )
        if self.rank < 0:
            raise ConfigError(f"rank={self.rank}: must be >= 0 (0: the offset only); e.g. rank=16")
        if not (self.ridge > 0 and math.isfinite(self.ridge)):
            raise ConfigError(f"ridge={self.ridge}: must be a finite number > 0; e.g. ridge=3.0")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ConfigError(
                f"id_dropout={self.id_dropout}: must be in [0, 1); e.g. id_dropout=0.2"
            )
        if self.prior not in ("content", "none"):
            raise ConfigError(
                f"prior={self.prior!r}: must be 'content' or 'none'; e.g. prior='content'"
            )
        if self.pretrain_epochs < 0 or not self.pretrain_lr > 0:
            raise ConfigError(
                f"pretrain_epochs={self.pretrain_epochs}, pretrain_lr={self.pretrain_lr}: need epochs >= 0 "
                "and a rate > 0; e.g. pretrain_epochs=1, pretrain_lr=0.003"
            )
        if self.newton_steps < 1:
            raise ConfigError(
                f"newton_steps={self.newton_steps}: must be >= 1; e.g. newton_steps=2"
            )


def ridge_head(
    phi: torch.Tensor,
    resid: torch.Tensor,
    mask: torch.Tensor,
    lam: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-task (weighted) ridge regression over the real entries:
    ``phi (T, N, R), resid (T, N), mask (T, N), lam (R,) -> w (T, R)``,
    ``w_t = (Phi_t^T D_t Phi_t + diag(lam))^-1 Phi_t^T D_t resid_t`` with ``D_t`` the diagonal of
    the row weights ``weight (T, N)`` (default 1) and padded rows left out."""
    m = mask.to(phi.dtype)
    if weight is not None:
        m = m * weight.to(phi.dtype)
    m = m.unsqueeze(-1)  # (T, N, 1)
    pm = phi * m
    a = pm.mT @ phi + torch.diag_embed(lam.to(phi.dtype)).expand(phi.shape[0], -1, -1)
    e = torch.where(mask, resid, torch.zeros_like(resid)).unsqueeze(-1)  # (T, N, 1)
    return torch.linalg.solve(a, pm.mT @ e).squeeze(-1)


def logistic_head(
    phi: torch.Tensor,
    offset: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    lam: torch.Tensor,
    steps: int,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-task L2-regularised logistic regression with a fixed offset, ``steps`` Newton steps
    from ``w = 0``: minimises ``sum_s c_s bce(offset_s + phi_s^T w, y_s) + 1/2 sum_j lam_j w_j^2``
    over the real entries (``c_s``: the row weights ``weight (T, N)``, default 1);
    ``phi (T, N, R), offset/labels/mask (T, N), lam (R,) -> w (T, R)``."""
    m = mask.to(phi.dtype)
    if weight is not None:
        m = m * weight.to(phi.dtype)
    y = torch.where(mask, labels.to(phi.dtype), torch.zeros_like(m))
    lam = lam.to(phi.dtype)
    w = phi.new_zeros(phi.shape[0], phi.shape[-1])
    eye = torch.diag_embed(lam).expand(phi.shape[0], -1, -1)
    for _ in range(steps):
        p = torch.sigmoid(offset + (phi @ w.unsqueeze(-1)).squeeze(-1))  # (T, N)
        grad = (phi * ((y - p) * m).unsqueeze(-1)).sum(-2) - lam * w  # minus the gradient
        hess = (phi * (p * (1 - p) * m).unsqueeze(-1)).mT @ phi + eye
        w = w + torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
    return w


def random_shots(mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random part of each task's real entries: ``(T, N) -> (T, N)``, row ``t`` keeping ``k_t``
    of its ``n_t`` real entries, ``k_t = min(n_t, floor((n_t + 1)^u))`` with ``u ~ U(0, 1)`` (so
    ``P(k) ∝ log((k + 1) / k)``: log-uniform, as many one-to-two-shot tasks as ten-to-twenty) and
    the kept entries uniform among the real ones; an empty row stays empty."""
    n = mask.sum(1)  # (T,)
    u = torch.rand(mask.shape[0], generator=generator, device=mask.device)
    k = torch.minimum((u * torch.log1p(n.to(torch.float64))).exp().floor().long(), n)
    k = k.clamp_min(1)  # (T,) in 1..n, log-uniform: P(k) ∝ log((k + 1) / k)
    r = torch.rand(mask.shape, generator=generator, device=mask.device)
    r = torch.where(mask, r, 2.0)  # padded entries last
    rank = r.argsort(1).argsort(1)  # (T, N): each entry's position in its row's random order
    return mask & (rank < k.unsqueeze(1))


class R2D2(nn.Module):
    """The model of the module docstring; ``adapt`` returns the heads ``w (T, rank + 1)``.

    Buffers ``item_prior`` / ``cold_prior`` ``(n_items,)``: ``mu + b_i`` with the item's own bias
    and with its content prediction (zeros with ``prior="none"``; see :meth:`set_prior`).
    """

    item_prior: torch.Tensor
    cold_prior: torch.Tensor

    def __init__(
        self,
        table: Any,
        s: R2D2Settings,
        *,
        known_items: Any = None,
        ranking: RankingObjective | None = None,
    ) -> None:
        super().__init__()
        self.ranking = ranking  # trained to rank: relevance labels, the logistic head
        self.explicit = table.feedback == "explicit" and ranking is None
        self.loss = ranking.loss if ranking is not None else ("mse" if self.explicit else "bce")
        self.id_dropout, self.newton_steps = s.id_dropout, s.newton_steps
        self.vary_shots = s.vary_shots
        self.user_enc = SideEncoder(table.user_features, table.n_users, s.dim, ids="never")
        self.item_enc = SideEncoder(
            table.item_features,
            table.n_items,
            s.dim,
            known=known_items,
            ids="always" if s.item_ids else "auto",
        )
        self.body = mlp([self.user_enc.out_dim + self.item_enc.out_dim, *s.hidden], last_act=True)
        self.prior = nn.Linear(s.hidden[-1], 1)
        self.basis = nn.Linear(s.hidden[-1], s.rank)
        self.log_ridge = nn.Parameter(torch.full((s.rank + 1,), math.log(s.ridge)))
        self.register_buffer("item_prior", torch.zeros(table.n_items))
        self.register_buffer("cold_prior", torch.zeros(table.n_items))
        self.uses_prior = self.explicit and s.prior == "content"
        if self.uses_prior:
            nn.init.zeros_(self.prior.weight)
            nn.init.zeros_(self.prior.bias)
        elif self.explicit and table.rating_scale is not None:
            nn.init.constant_(self.prior.bias, sum(table.rating_scale) / 2)

    def set_prior(self, own: torch.Tensor, cold: torch.Tensor) -> None:
        """Fill the item priors ``mu + b_i``: ``own`` (the item's own bias) and ``cold`` (its
        content prediction), both ``(n_items,)``."""
        with torch.no_grad():
            self.item_prior.copy_(own)
            self.cold_prior.copy_(cold)

    # ------------------------------------------------------------------ pieces
    def items(self, idx: torch.Tensor, hide: torch.Tensor | None = None) -> torch.Tensor:
        """Item encodings ``(T, N) -> (T, N, F)``; ``hide`` ``(T, N)``: entries whose id is hidden."""
        enc = self.item_enc
        if enc.ids is None or hide is None:
            return enc(idx)
        ids = enc.ids(torch.where(hide, 0, enc.id_map[idx]))
        return ids if enc.features is None else torch.cat([enc.features(idx), ids], dim=-1)

    def parts(
        self, users: torch.Tensor, items: torch.Tensor, drop: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, phi)``: the prior ``(T, N)`` and the basis ``(T, N, rank + 1)``; ``drop``: the
        probability of treating each entry's item as cold (meta-training)."""
        hide = torch.rand(items.shape, device=items.device) < drop if drop > 0.0 else None
        h = self.body(torch.cat([self.user_enc(users), self.items(items, hide)], dim=-1))
        phi = torch.cat([self.basis(h), torch.ones_like(h[..., :1])], dim=-1)
        g = self.prior(h).squeeze(-1)
        if self.uses_prior:
            base = self.item_prior[items]
            if hide is not None:
                base = torch.where(hide, self.cold_prior[items], base)
            g = g + base.to(g.dtype)
        return g, phi

    def solve(self, s: EpisodeSet, drop: float = 0.0) -> torch.Tensor:
        """The heads ``w (T, rank + 1)`` of the support ``s``."""
        g, phi = self.parts(s.users, s.items, drop)
        lam = self.log_ridge.exp()
        if self.explicit:
            return ridge_head(phi, s.targets.to(g.dtype) - g, s.mask, lam)
        return logistic_head(phi, g, s.targets, s.mask, lam, self.newton_steps)

    # ------------------------------------------------------------------ learner protocol
    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> torch.Tensor:
        return self.solve(support)

    def query_parts(
        self, users: torch.Tensor, items: torch.Tensor, drop: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, phi)`` of the rows a head is applied to (here :meth:`parts`)."""
        return self.parts(users, items, drop)

    def row_parts(
        self, users: torch.Tensor, items: torch.Tensor, source: torch.Tensor, drop: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, phi)`` of table rows (``source``: which rows are of a source domain; unused here)."""
        return self.parts(users, items, drop)

    def score(self, ctx: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        g, phi = self.query_parts(users, items)
        return g + (phi @ ctx.unsqueeze(-1)).squeeze(-1)

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        q, s = batch.query, batch.support
        if self.vary_shots:
            s = s.with_mask(random_shots(s.mask))
        w = self.solve(s, self.id_dropout)
        g, phi = self.query_parts(q.users, q.items, self.id_dropout)
        pred = g + (phi @ w.unsqueeze(-1)).squeeze(-1)
        return set_loss_of(self.loss, pred, q).mean()


def pretrain_body(
    model: R2D2, data: FitData, rows: np.ndarray, source: np.ndarray, s: R2D2Settings
) -> dict[str, Any]:
    """``s.pretrain_epochs`` epochs of supervised training of ``model``'s body over the table rows
    ``rows`` (``source``: which are of a source domain): each row is predicted as
    ``g + phi^T e_u`` with a free per-user head ``e_u`` (zero-initialised, L2 1e-4, discarded
    afterwards); squared error on ratings, or logistic loss against one sampled negative item
    per row with implicit feedback (trained to rank on ratings: the row's relevance label against
    that negative). Returns ``{"pretrain_loss": last epoch's mean}``."""
    if s.pretrain_epochs == 0 or rows.size == 0:
        return {}
    t = data.table
    gen = torch.Generator().manual_seed(data.seed)
    heads = nn.Embedding(t.n_users, int(model.log_ridge.shape[0]))
    nn.init.zeros_(heads.weight)
    opt = torch.optim.Adam([*model.parameters(), *heads.parameters()], lr=s.pretrain_lr)
    users = torch.as_tensor(t.users[rows])
    items = torch.as_tensor(t.items[rows])
    y = torch.as_tensor(t.ratings[rows], dtype=torch.get_default_dtype())
    if model.ranking is not None:  # relevance labels
        y = (y >= model.ranking.relevance - 1e-9).to(y.dtype)
    src = torch.as_tensor(source)
    pool = torch.as_tensor(np.unique(t.items[rows]))
    model.train()
    last = float("nan")
    for _ in range(s.pretrain_epochs):
        total, n = 0.0, 0
        for b in torch.randperm(rows.shape[0], generator=gen).split(1024):
            u, e = users[b], heads(users[b])
            g, phi = model.row_parts(u, items[b], src[b], model.id_dropout)
            pred = g + (phi * e).sum(-1)
            if model.explicit:
                loss = (pred - y[b]).square().mean()
            else:
                neg = pool[torch.randint(0, pool.shape[0], (b.shape[0],), generator=gen)]
                gn, pn = model.row_parts(u, neg, src[b], model.id_dropout)
                both = torch.cat([pred, gn + (pn * e).sum(-1)])
                pos = y[b] if model.ranking is not None else torch.ones_like(pred)
                lab = torch.cat([pos, torch.zeros_like(pred)])
                loss = F.binary_cross_entropy_with_logits(both, lab)
            reg = 1e-4 * e.square().sum(-1).mean()
            opt.zero_grad()
            (loss + reg).backward()
            opt.step()
            total, n = total + float(loss.detach()) * b.shape[0], n + b.shape[0]
        last = total / max(n, 1)
    return {"pretrain_loss": last}


def make_r2d2(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``r2d2`` from a scenario (budget: ``train.steps``/``outer_lr``, ``algorithm.meta_batch``,
    ``model.embedding_dim``) and :class:`R2D2Settings` overrides."""
    defaults, scfg = defaults_and_sampler(scenario, R2D2Settings)
    s = parse_settings(R2D2Settings, "r2d2", settings, defaults, scenario)

    def objective(table: Any) -> RankingObjective | None:
        return ranking_objective(scenario, table)

    def build(data: FitData, st: R2D2Settings) -> R2D2:
        t, rows = data.table, data.splits.pools[data.splits.train].rows
        model = R2D2(t, st, known_items=t.items[rows], ranking=objective(t))
        if model.uses_prior:  # the content-bias prior, selected on meta-val with our tasks
            cb = ContentBiasMethod(method.sampler).fit(data)
            assert cb.cold_bias is not None  # set by fit
            model.set_prior(cb.mu + cb.bias.float(), cb.mu + cb.cold_bias.float())
        return model

    def pretrain(model: R2D2, data: FitData, st: R2D2Settings) -> dict[str, Any]:
        rows = data.splits.pools[data.splits.train].rows
        return pretrain_body(model, data, rows, np.zeros(rows.shape[0], dtype=bool), st)

    method = LearnerMethod("r2d2", build, s, scfg, pretrain=pretrain, objective=objective)
    return method


def _shell(table: Any, s: R2D2Settings, shape: Any) -> R2D2:
    return R2D2(table, s, ranking=shape.get("ranking"))


register_method(
    "r2d2",
    make_r2d2,
    loader=learner_loader(R2D2Settings, _shell),
    tags=MethodTags(family="learner", ranks=True),
    replace=True,
)
