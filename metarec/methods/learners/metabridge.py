"""Meta-learners for users cold in a target domain who bring a source-domain history.

Both start from biased MFs (:class:`~metarec.methods.crossdomain.mf.MF`) fitted on the meta-train rows
of each domain (:func:`~metarec.methods.crossdomain.mf.fit_mf`; user vectors ``v = [p_u, b_u]``), and
meta-train on *simulated cold users*: the warm users' target-domain tasks of meta-train (support:
k shots, query: the rest), exactly the shape of a test task.

* ``metabridge`` (TMCDR, Zhu et al., SIGIR 2021): both MFs frozen; a mapping
  ``f_phi(v^s) = v^s + W_2 tanh(W_1 v^s + b_1) + b_2`` from the source to the target user
  space, meta-trained with MAML: per task, ``steps`` gradient steps on ``phi`` with the support
  loss of ``score_t(f_phi(v_u^s), i)``, then the query loss (second order unless
  ``first_order``). A cold user is scored with the mapping adapted on their k shots.
* ``maml-source-init`` / ``reptile-source-init``: MAML / Reptile over the target MF in which the
  cold user's *initial* vector is ``u_0 = enc(history)`` (an MLP of the mean source-MF vector of
  the user's source items) instead of a shared "unknown user" vector; the inner loop adapts the
  user vector, ``u <- u - lr * grad L_support(u)``. MAML back-propagates the query loss after the
  inner steps into the encoder and the target MF (second order). Reptile runs the inner steps on
  support and query, and moves the initialisation towards the result:
  ``L = 1/2 ||u_0 - stopgrad(u')||^2`` for the encoder (its gradient is Reptile's
  ``u_0 - u'``) plus the query loss at ``u'`` for the target MF (first order).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import grad, vmap

from metarec._errors import ConfigError
from metarec.algorithms.losses import LOSSES
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.crossdomain.data import CrossDomainView, cross_domain_view, user_histories
from metarec.methods.crossdomain.mf import MF, fit_mf, new_mf
from metarec.methods.learners._encode import task_entity
from metarec.methods.learners._loop import (
    LearnerMethod,
    TrainSettings,
    defaults_and_sampler,
    learner_loader,
    parse_settings,
)

__all__ = [
    "BridgeSettings",
    "TMCDRBridge",
    "SourceInit",
    "mapping_inner_step",
    "make_metabridge",
    "make_maml_source_init",
    "make_reptile_source_init",
]


@dataclass(frozen=True)
class BridgeSettings(TrainSettings):
    """MF pre-training, the mapping / encoder and the inner loop.

    Fields:
        dim: MF embedding size; mf_epochs, mf_lr, mf_l2, batch_size, negatives: MF training
            (negatives per positive for implicit feedback).
        hidden: width of the mapping / history encoder; history_len: source items per user.
        inner_steps, inner_lr: the inner loop (meta-training and adaptation); first_order:
            drop second-order terms (MAML variants).
    """

    dim: int = 16
    mf_epochs: int = 5
    mf_lr: float = 1e-2
    mf_l2: float = 1e-4
    batch_size: int = 1024
    negatives: int = 4
    hidden: int = 32
    history_len: int = 30
    inner_steps: int = 3
    inner_lr: float = 0.1
    first_order: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("dim", "hidden", "history_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.mf_epochs < 0 or self.inner_steps < 0 or self.negatives < 0:
            raise ConfigError(
                f"mf_epochs={self.mf_epochs}, inner_steps={self.inner_steps}, negatives={self.negatives}: must be >= 0"
            )
        if not (self.mf_lr > 0 and self.inner_lr > 0 and self.mf_l2 >= 0):
            raise ConfigError(
                f"mf_lr={self.mf_lr}, inner_lr={self.inner_lr}: must be > 0 (mf_l2 >= 0)"
            )


def _mapping(phi: dict[str, torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    """``f_phi(v) = v + W_2 tanh(W_1 v + b_1) + b_2``: ``(..., d) -> (..., d)``."""
    return v + torch.tanh(v @ phi["w1"].T + phi["b1"]) @ phi["w2"].T + phi["b2"]


def mapping_inner_step(
    score,
    phi: dict[str, torch.Tensor],
    v: torch.Tensor,
    s: EpisodeSet,
    lr: float,
    loss: str,
    create_graph: bool = True,
) -> dict[str, torch.Tensor]:
    """One MAML inner step of the mapping for one task (``v (d,)``, ``s`` tensors ``(N,)``):
    ``phi - lr * grad_phi L_support(score(f_phi(v), items))``."""

    def support_loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return LOSSES[loss](score(_mapping(p, v), s.items), s.targets, s.mask)

    g = grad(support_loss)(phi)
    if not create_graph:
        g = {k: t.detach() for k, t in g.items()}
    return {k: phi[k] - lr * g[k] for k in phi}


class _CrossDomain(nn.Module):
    hist: torch.Tensor  # buffer int64 (n_users, H): source items per user
    hist_mask: torch.Tensor  # buffer bool (n_users, H)

    def __init__(self, data: FitData | InteractionTable, s: BridgeSettings) -> None:
        """From ``FitData`` (training: the cross-domain view of its splits, MFs initialised on
        meta-train) or from a bare table (an untrained shell of the same sizes, for loading)."""
        super().__init__()
        t = data.table if isinstance(data, FitData) else data
        self.s = s
        self.loss = "mse" if t.feedback == "explicit" else "bce"
        if isinstance(data, FitData):
            self.view: CrossDomainView | None = cross_domain_view(t, data.splits)
            v = self.view
            self.src = new_mf(v, v.source_rows, dim=s.dim, seed=data.seed)
            self.tgt = new_mf(v, v.target_rows, dim=s.dim, seed=data.seed + 1)
            hist, mask = user_histories(v, v.source_rows, s.history_len, seed=data.seed)
        else:
            self.view = None
            self.src, self.tgt = MF(t.n_users, t.n_items, s.dim), MF(t.n_users, t.n_items, s.dim)
            hist = torch.zeros(t.n_users, s.history_len, dtype=torch.int64)
            mask = torch.zeros(t.n_users, s.history_len, dtype=torch.bool)
        self.register_buffer("hist", hist)
        self.register_buffer("hist_mask", mask)

    def _view(self) -> CrossDomainView:
        if self.view is None:
            raise ConfigError(
                f"{type(self).__name__}: this learner was loaded from a run (no training data); "
                "pre-train a new one with fit()"
            )
        return self.view

    def pretrain(self, data: FitData) -> dict[str, Any]:
        s, v = self.s, self._view()
        kw: dict[str, Any] = dict(
            dim=s.dim,
            epochs=s.mf_epochs,
            batch_size=s.batch_size,
            lr=s.mf_lr,
            l2=s.mf_l2,
            negatives=s.negatives,
            seed=data.seed,
        )
        _, log_s = fit_mf(v, v.source_rows, **kw, model=self.src)
        _, log_t = fit_mf(v, v.target_rows, **{**kw, "seed": data.seed + 1}, model=self.tgt)
        for p in self.src.parameters():
            p.requires_grad_(False)
        return {
            "source_mf": log_s.get("history", [])[-1:],
            "target_mf": log_t.get("history", [])[-1:],
        }

    def score_vec(self, u: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.tgt.score(u, items)

    def score(self, ctx: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.tgt.score(ctx, items)


class TMCDRBridge(_CrossDomain):
    """``metabridge`` (see the module docstring)."""

    def __init__(self, data: FitData | InteractionTable, s: BridgeSettings) -> None:
        super().__init__(data, s)
        d = s.dim + 1
        self.phi = nn.ParameterDict(
            {
                "w1": nn.Parameter(torch.randn(s.hidden, d) / d**0.5),
                "b1": nn.Parameter(torch.zeros(s.hidden)),
                "w2": nn.Parameter(torch.zeros(d, s.hidden)),
                "b2": nn.Parameter(torch.zeros(d)),
            }
        )

    def pretrain(self, data: FitData) -> dict[str, Any]:
        log = super().pretrain(data)
        for p in self.tgt.parameters():
            p.requires_grad_(False)
        return log

    def _adapted(self, s: EpisodeSet, steps: int, lr: float, create_graph: bool) -> torch.Tensor:
        v = self.src.user_vectors(task_entity(s.users, s.mask))  # (T, d + 1)

        def one(vt, u, i, y, m):
            phi = dict(self.phi)
            task = EpisodeSet(u, i, y, m)
            for _ in range(steps):
                phi = mapping_inner_step(self.tgt.score, phi, vt, task, lr, self.loss, create_graph)
            return _mapping(phi, vt)

        return vmap(one)(v, s.users, s.items, s.targets, s.mask)

    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> torch.Tensor:
        with torch.enable_grad():
            u = self._adapted(
                support,
                self.s.inner_steps if steps is None else steps,
                lr or self.s.inner_lr,
                False,
            )
        return u.detach()

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        u = self._adapted(
            batch.support, self.s.inner_steps, self.s.inner_lr, not self.s.first_order
        )
        q = batch.query
        return LOSSES[self.loss](self.tgt.score(u, q.items), q.targets, q.mask).mean()


class SourceInit(_CrossDomain):
    """``maml-source-init`` (``reptile=False``) and ``reptile-source-init`` (see the module docstring)."""

    mean_user: torch.Tensor  # buffer (dim + 1,)

    def __init__(
        self, data: FitData | InteractionTable, s: BridgeSettings, *, reptile: bool
    ) -> None:
        super().__init__(data, s)
        self.reptile = reptile
        d = s.dim + 1
        self.enc = nn.Sequential(nn.Linear(d, s.hidden), nn.Tanh(), nn.Linear(s.hidden, d))
        self.register_buffer("mean_user", torch.zeros(d))

    def pretrain(self, data: FitData) -> dict[str, Any]:
        log = super().pretrain(data)
        with torch.no_grad():
            warm = torch.as_tensor(self._view().warm_users)
            self.mean_user.copy_(self.tgt.user_vectors(warm).mean(0))
        return log

    def init_vector(self, users: torch.Tensor) -> torch.Tensor:
        """``u_0 = mean warm user + enc(mean source-MF vector of the history)``: ``(T,) -> (T, d + 1)``."""
        h, m = self.hist[users], self.hist_mask[users]  # (T, H)
        vec = torch.cat(
            [
                self.src.item[self.src.item_map[h]],
                self.src.item_bias[self.src.item_map[h]].unsqueeze(-1),
            ],
            -1,
        )
        w = m.unsqueeze(-1).to(vec.dtype)
        pooled = (vec * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.mean_user + self.enc(pooled)

    def inner(
        self, u: torch.Tensor, s: EpisodeSet, steps: int, lr: float, create_graph: bool
    ) -> torch.Tensor:
        """``steps`` gradient steps of each task's support loss on its user vector ``(T, d + 1)``."""
        for _ in range(steps):
            if not u.requires_grad:
                u = u.detach().requires_grad_(True)
            loss = LOSSES[self.loss](self.tgt.score(u, s.items), s.targets, s.mask).sum()
            (g,) = torch.autograd.grad(loss, u, create_graph=create_graph)
            u = u - lr * g
        return u

    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> torch.Tensor:
        u0 = self.init_vector(task_entity(support.users, support.mask))
        with torch.enable_grad():
            u = self.inner(
                u0.detach(),
                support,
                self.s.inner_steps if steps is None else steps,
                lr or self.s.inner_lr,
                False,
            )
        return u.detach()

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        s, q = batch.support, batch.query
        u0 = self.init_vector(task_entity(s.users, s.mask))
        if not self.reptile:
            u = self.inner(u0, s, self.s.inner_steps, self.s.inner_lr, not self.s.first_order)
            return LOSSES[self.loss](self.tgt.score(u, q.items), q.targets, q.mask).mean()
        both = EpisodeSet(
            torch.cat([s.users, q.users], 1),
            torch.cat([s.items, q.items], 1),
            torch.cat([s.targets, q.targets], 1),
            torch.cat([s.mask, q.mask], 1),
        )
        with torch.enable_grad():
            u = self.inner(u0.detach(), both, self.s.inner_steps, self.s.inner_lr, False).detach()
        pull = 0.5 * (u0 - u).square().sum(-1).mean()
        return pull + LOSSES[self.loss](self.tgt.score(u, q.items), q.targets, q.mask).mean()


def target_episodes(data: FitData) -> FitData:
    """``data`` with meta-train restricted to target-domain tasks (the simulated cold users)."""
    view = cross_domain_view(data.table, data.splits)
    pool = data.splits.pools[data.splits.train]
    keep = (pool.units % data.table.n_domains) == view.target
    if not keep.any():
        raise ConfigError(
            "splits: meta-train has no target-domain task of a warm user; lower protocol.beta"
        )
    pools = {**data.splits.pools, data.splits.train: pool.filter(keep)}
    return dataclasses.replace(data, splits=dataclasses.replace(data.splits, pools=pools))


def _pretrain(model: _CrossDomain, data: FitData, s: BridgeSettings) -> dict[str, Any]:
    return model.pretrain(data)


def _make(name: str, build, scenario: Any, settings: dict[str, Any]) -> LearnerMethod:
    defaults, scfg = defaults_and_sampler(scenario, BridgeSettings)
    if scenario is not None:
        defaults.update(
            inner_steps=scenario.algorithm.inner_steps, first_order=scenario.algorithm.first_order
        )
    s = parse_settings(BridgeSettings, name, settings, defaults, scenario)
    return LearnerMethod(name, build, s, scfg, pretrain=_pretrain, episodes=target_episodes)


def make_metabridge(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``metabridge`` (TMCDR) with :class:`BridgeSettings` overrides."""
    return _make("metabridge", lambda d, s: TMCDRBridge(d, s), scenario, settings)


def make_maml_source_init(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``maml-source-init`` with :class:`BridgeSettings` overrides."""
    return _make(
        "maml-source-init", lambda d, s: SourceInit(d, s, reptile=False), scenario, settings
    )


def make_reptile_source_init(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``reptile-source-init`` with :class:`BridgeSettings` overrides."""
    return _make(
        "reptile-source-init", lambda d, s: SourceInit(d, s, reptile=True), scenario, settings
    )


_SHELLS = {
    "metabridge": lambda t, s, shape: TMCDRBridge(t, s),
    "maml-source-init": lambda t, s, shape: SourceInit(t, s, reptile=False),
    "reptile-source-init": lambda t, s, shape: SourceInit(t, s, reptile=True),
}
for _name, _factory in (
    ("metabridge", make_metabridge),
    ("maml-source-init", make_maml_source_init),
    ("reptile-source-init", make_reptile_source_init),
):
    register_method(
        _name,
        _factory,
        loader=learner_loader(BridgeSettings, _SHELLS[_name]),
        tags=MethodTags(source_history=True, inner_loop=True, family="learner"),
        replace=True,
    )
