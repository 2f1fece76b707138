"""Cold item embeddings over a base model: the warm-up baseline, MetaEmb and MWUF (items as tasks).

The **base model** (:class:`WarmupBase`) scores a (user, item) pair as
``logit = MLP([u, e_i, f_i])``: ``u`` the user's side features and id embedding, ``e_i`` the
item's id embedding, ``f_i`` its side features. It is trained on the old items' interactions
(:func:`pretrain_base`, binary cross-entropy); then it is frozen. A new item has no trained
``e_i``; each method gives it an initial embedding and *warms it up* on the item's support
(``steps`` gradient steps of the base loss on ``e_i`` alone, rate ``lr``):

* ``warmup-base``: start from the zero ("unknown") embedding.
* ``metaemb`` (Pan et al., SIGIR 2019): start from ``g(f_i)``, a generator of the item's
  features, trained on old items as cold-start tasks with the two-stage loss
  ``L = alpha * l_a(g) + (1 - alpha) * l_b(g - eta * grad l_a(g))`` (``l_a``, ``l_b`` the base
  loss on two disjoint batches a, b of the item's interactions; second order through the step).
* ``mwuf`` (Zhu et al., SIGIR 2021): start from the mean old-item embedding; after warm-up,
  score with ``e' = e * scale(f_i) + shift(mean_j u_j)`` (meta scaling network of the item's
  features, ``scale = 2 sigmoid(.)``, and meta shifting network of the mean embedding of the
  users in its support), both trained on old items (support a warms ``e`` up, the query b loss
  of ``e'`` trains the two networks).

Every method's scores of *other* items use the base model's embeddings (old items) or the same
cold start (new items). The task's item is read from ``support.items[:, 0]`` (so an empty
support still names it; see :mod:`metarec.episodes.warmup`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.algorithms.losses import masked_bce
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.learners._encode import SideEncoder, mlp
from metarec.methods.learners._loop import (
    LearnerFitted,
    LearnerMethod,
    TrainSettings,
    defaults_and_sampler,
    learner_loader,
    parse_settings,
)
from metarec.methods.learners._warmup_select import select_warm_lr, warmup_val_score

__all__ = [
    "WarmupSettings",
    "WarmupBase",
    "ItemWarmup",
    "MetaEmb",
    "MWUF",
    "pretrain_base",
    "metaemb_loss",
    "make_warmup_base",
    "make_metaemb",
    "make_mwuf",
]


@dataclass(frozen=True)
class WarmupSettings(TrainSettings):
    """Base-model sizes, its pre-training and the warm-up (with the meta-networks' budget).

    Fields:
        dim: embedding size (id and each side feature).
        hidden: widths of the base MLP; meta_hidden: width of the meta-networks.
        pretrain_epochs, pretrain_lr, batch_size: the base model's training on old items.
        warm_steps: warm-up gradient steps on a cold item's embedding.
        warm_lr: their rate; after training, ``fit`` picks it on meta-val from ``warm_lrs``
            (lowest mean logloss over the warm-up phases), the same grid for every method.
        alpha: MetaEmb's weight of the cold-start loss ``l_a``; cold_lr: its step ``eta``.
    """

    steps: int = 300
    dim: int = 16
    hidden: tuple[int, ...] = (64, 32)
    meta_hidden: int = 32
    pretrain_epochs: int = 3
    pretrain_lr: float = 1e-3
    batch_size: int = 1024
    warm_steps: int = 5
    warm_lr: float = 1.0
    warm_lrs: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    alpha: float = 0.1
    cold_lr: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            self.dim < 1
            or self.meta_hidden < 1
            or not self.hidden
            or any(h < 1 for h in self.hidden)
        ):
            raise ConfigError(
                f"dim={self.dim}, hidden={list(self.hidden)}, meta_hidden={self.meta_hidden}: sizes must be >= 1"
            )
        if self.pretrain_epochs < 0 or self.batch_size < 1 or self.warm_steps < 0:
            raise ConfigError(
                f"pretrain_epochs={self.pretrain_epochs}, batch_size={self.batch_size}, warm_steps={self.warm_steps}: "
                "need pretrain_epochs >= 0, batch_size >= 1, warm_steps >= 0"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(
                f"alpha={self.alpha}: MetaEmb's loss weight must lie in [0, 1]; e.g. alpha=0.1"
            )
        if not (self.pretrain_lr > 0 and self.warm_lr > 0 and self.cold_lr > 0):
            raise ConfigError("pretrain_lr, warm_lr and cold_lr must be > 0")


class WarmupBase(nn.Module):
    """``logits(users, items, emb) = MLP([u, emb, f_i])``: ``(...,) x2, (..., dim) -> (...)``."""

    old: torch.Tensor  # buffer (n_items,) bool: items seen in meta-training

    def __init__(
        self, table: Any, s: WarmupSettings, *, known_users: Any, old_items: np.ndarray
    ) -> None:
        super().__init__()
        self.user_enc = SideEncoder(
            table.user_features, table.n_users, s.dim, known=known_users, ids="always"
        )
        self.item_feat = SideEncoder(table.item_features, table.n_items, s.dim, ids="never")
        self.item_id = nn.Embedding(table.n_items, s.dim)
        nn.init.normal_(self.item_id.weight, std=0.1)
        old = torch.zeros(table.n_items, dtype=torch.bool)
        old[torch.as_tensor(old_items, dtype=torch.int64)] = True
        old[0] = False
        self.register_buffer("old", old)
        self.net = mlp([self.user_enc.out_dim + s.dim + self.item_feat.out_dim, *s.hidden, 1])

    def logits(self, users: torch.Tensor, items: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.net(
            torch.cat([self.user_enc(users), emb, self.item_feat(items)], dim=-1)
        ).squeeze(-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.logits(users, items, self.item_id(items))


def pretrain_base(
    base: WarmupBase, table: Any, rows: np.ndarray, s: WarmupSettings, seed: int
) -> dict[str, Any]:
    """Train ``base`` on table ``rows`` (the old items' interactions) with Adam and BCE; then freeze it."""
    rng = np.random.default_rng(seed)
    dev = base.item_id.weight.device
    opt = torch.optim.Adam(base.parameters(), lr=s.pretrain_lr)
    users = torch.from_numpy(table.users.astype(np.int64))
    items = torch.from_numpy(table.items.astype(np.int64))
    y = torch.from_numpy(table.ratings.astype(np.float64))
    losses = []
    for _ in range(s.pretrain_epochs):
        order = rng.permutation(rows)
        total = 0.0
        for i in range(0, order.shape[0], s.batch_size):
            r = torch.from_numpy(order[i : i + s.batch_size])
            u, it, t = users[r].to(dev), items[r].to(dev), y[r].to(dev, base.item_id.weight.dtype)
            loss = nn.functional.binary_cross_entropy_with_logits(base(u, it), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * r.shape[0]
        losses.append(total / max(order.shape[0], 1))
    for p in base.parameters():
        p.requires_grad_(False)
    return {"epoch_loss": losses}


class ItemWarmup(nn.Module):
    """The ``warmup-base`` learner (zero start); :class:`MetaEmb` and :class:`MWUF` override the start."""

    warm_lr: torch.Tensor  # buffer (): the warm-up learning rate

    def __init__(self, base: WarmupBase, s: WarmupSettings) -> None:
        super().__init__()
        self.base, self.s = base, s
        self.register_buffer("warm_lr", torch.tensor(float(s.warm_lr)))  # chosen on meta-val by fit

    # ------------------------------------------------------------------ overridable parts
    def cold_start(self, items: torch.Tensor) -> torch.Tensor:
        """Initial embedding of cold ``items``: ``(...,) -> (..., dim)`` (here zeros)."""
        return torch.zeros(
            *items.shape, self.s.dim, dtype=self.base.item_id.weight.dtype, device=items.device
        )

    def affine(
        self, items: torch.Tensor, users: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(scale, shift)`` of the scored embedding ``e * scale + shift`` of ``items (...)``
        whose support users have the mean embedding ``users (..., du)`` (``None``: ``e`` itself)."""
        return None

    def transform_slots(
        self, e: torch.Tensor, items: torch.Tensor, users: torch.Tensor
    ) -> torch.Tensor:
        """The embeddings scored after warm-up, ``e (..., dim) -> (..., dim)`` (:meth:`affine`)."""
        ab = self.affine(items, users)
        return e if ab is None else e * ab[0] + ab[1]

    def transform(self, e: torch.Tensor, support: EpisodeSet) -> torch.Tensor:
        """:meth:`transform_slots` of each task's item (``support.items[:, 0]``) over all its
        support users: ``(T, dim) -> (T, dim)``."""
        same = support.mask.unsqueeze(1)  # (T, 1, N): every real entry is the task's item's
        users = self.support_users(support, same)[:, 0]
        return self.transform_slots(e, support.items[:, 0], users)

    def support_users(self, s: EpisodeSet, same: torch.Tensor) -> torch.Tensor:
        """Mean embedding of the users of the rows ``same (T, M, N)`` selects (one row set per
        slot): ``-> (T, M, du)`` (zeros for an empty set)."""
        w = same.to(self.base.item_id.weight.dtype)
        return (w @ self.base.user_enc(s.users)) / w.sum(-1, keepdim=True).clamp_min(1.0)

    # ------------------------------------------------------------------ shared
    def default_embedding(self, items: torch.Tensor) -> torch.Tensor:
        """Old items: the base model's embedding; others: :meth:`cold_start`."""
        own = self.base.item_id(items)
        return torch.where(self.base.old[items].unsqueeze(-1), own, self.cold_start(items))

    def support_loss(self, e: torch.Tensor, s: EpisodeSet) -> torch.Tensor:
        """Per-task base loss of embedding ``e (T, dim)`` on ``s``: ``-> (T,)``."""
        emb = e.unsqueeze(1).expand(-1, s.items.shape[1], -1)
        return masked_bce(self.base.logits(s.users, s.items, emb), s.targets, s.mask)

    def warm(
        self, e: torch.Tensor, s: EpisodeSet, steps: int, lr: float, create_graph: bool = False
    ) -> torch.Tensor:
        """``steps`` gradient steps of each task's support loss on its embedding ``e`` (the loss of
        the scored embedding ``transform(e)``, so MWUF warms up through its meta networks):
        ``(T, dim) -> (T, dim)``."""
        for _ in range(steps):
            if not e.requires_grad:
                e = e.detach().requires_grad_(True)
            loss = self.support_loss(self.transform(e, s), s).sum()
            (g,) = torch.autograd.grad(loss, e, create_graph=create_graph)
            e = e - lr * g
        return e

    def slots(self, s: EpisodeSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cold items a support set warms up: ``(first (T, N), lead (T, N), same (T, N, N))``.

        A task may name several items (a user's support in serving) or one (an item's support,
        the warm-up protocol; an empty one still names its item at position 0). Position ``j``
        *names* its item if it is a real entry or ``j = 0``; ``first[t, j]`` is the first naming
        position of item ``s.items[t, j]``; ``lead[t, j]``: ``j`` is that first position and the
        item is cold (not an old item, not the padding index 0): one warmed embedding per cold
        item; ``same[t, j, k]``: ``k`` is a real entry of ``j``'s item.
        """
        names = s.mask.clone()
        names[:, 0] = True
        eq = s.items.unsqueeze(2) == s.items.unsqueeze(1)  # (T, N, N)
        first = (eq & names.unsqueeze(1)).to(torch.int64).argmax(-1)  # (T, N)
        pos = torch.arange(s.items.shape[1], device=s.items.device)
        cold = names & ~self.base.old[s.items] & (s.items != 0)
        return first, cold & (first == pos), eq & s.mask.unsqueeze(1)

    def warm_slots(
        self, s: EpisodeSet, steps: int, lr: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Warm up every cold item of each task on the task's rows of that item (old items keep
        the base model's embedding): ``-> (lead (T, N), e (T, N, dim), users (T, N, du))``, ``e``
        and the mean support-user embedding ``users`` meaningful at the ``lead`` positions.

        Equal to :meth:`warm` of :meth:`cold_start` for a task of one cold item."""
        first, lead, same = self.slots(s)
        own = self.base.item_id(s.items)  # (T, N, dim)
        cold_row = lead.gather(1, first)  # (T, N): the row's item is warmed
        idx = first.unsqueeze(-1).expand_as(own)
        users = self.support_users(s, same)  # (T, N, du)
        e = self.cold_start(s.items)
        ab = self.affine(s.items, users)  # the meta networks, once for every step
        for _ in range(steps):
            e = e.detach().requires_grad_(True)
            scored = e if ab is None else e * ab[0] + ab[1]
            emb = torch.where(cold_row.unsqueeze(-1), scored.gather(1, idx), own)
            loss = masked_bce(self.base.logits(s.users, s.items, emb), s.targets, s.mask)
            (g,) = torch.autograd.grad(loss.sum(), e)
            e = e - lr * g
        return lead, e.detach(), users

    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            lead, e, users = self.warm_slots(
                support,
                self.s.warm_steps if steps is None else steps,
                float(self.warm_lr) if lr is None else lr,
            )
        return support.items, lead, self.transform_slots(e, support.items, users).detach()

    def score(
        self,
        ctx: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        users: torch.Tensor,
        items: torch.Tensor,
    ) -> torch.Tensor:
        """Warmed items use their warmed embedding, the others :meth:`default_embedding`."""
        slot_items, lead, e = ctx  # (T, N), (T, N), (T, N, dim)
        emb = self.default_embedding(items)  # (T, Q, dim)
        match = (items.unsqueeze(2) == slot_items.unsqueeze(1)) & lead.unsqueeze(1)  # (T, Q, N)
        at = match.to(torch.int64).argmax(-1, keepdim=True).expand(-1, -1, e.shape[-1])
        emb = torch.where(match.any(-1, keepdim=True), e.gather(1, at), emb)
        return self.base.logits(users, items, emb)

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        return torch.zeros((), dtype=self.base.item_id.weight.dtype)


def metaemb_loss(
    model: ItemWarmup, e0: torch.Tensor, a: EpisodeSet, b: EpisodeSet, alpha: float, eta: float
) -> torch.Tensor:
    """MetaEmb's two-stage loss ``alpha * mean l_a(e0) + (1 - alpha) * mean l_b(e0 - eta grad l_a(e0))``."""
    la = model.support_loss(e0, a)
    (g,) = torch.autograd.grad(la.sum(), e0, create_graph=True)
    lb = model.support_loss(e0 - eta * g, b)
    return alpha * la.mean() + (1.0 - alpha) * lb.mean()


class MetaEmb(ItemWarmup):
    """MetaEmb: the cold start is ``g(f_i)`` (see the module docstring)."""

    def __init__(self, base: WarmupBase, s: WarmupSettings) -> None:
        super().__init__(base, s)
        self.generator = mlp([base.item_feat.out_dim, s.meta_hidden, s.dim])

    def cold_start(self, items: torch.Tensor) -> torch.Tensor:
        return self.generator(self.base.item_feat(items))

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        e0 = self.cold_start(batch.support.items[:, 0])
        return metaemb_loss(self, e0, batch.support, batch.query, self.s.alpha, self.s.cold_lr)


class MWUF(ItemWarmup):
    """MWUF: mean start, meta scaling and shifting after warm-up (see the module docstring)."""

    mean_old: torch.Tensor  # buffer (dim,)

    def __init__(self, base: WarmupBase, s: WarmupSettings) -> None:
        super().__init__(base, s)
        self.scaling = mlp([base.item_feat.out_dim, s.meta_hidden, s.dim])
        self.shifting = mlp([base.user_enc.out_dim, s.meta_hidden, s.dim])
        for net in (self.scaling, self.shifting):
            out = net[-1]
            assert isinstance(out, nn.Linear)  # mlp() ends in a Linear layer
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
        self.register_buffer("mean_old", torch.zeros(s.dim))

    def set_mean(self) -> None:
        """``mean_old``: the mean old-item embedding of the (trained) base model."""
        with torch.no_grad():
            self.mean_old.copy_(self.base.item_id.weight[self.base.old].mean(0))

    def cold_start(self, items: torch.Tensor) -> torch.Tensor:
        return self.mean_old.expand(*items.shape, -1)

    def affine(self, items: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``e * 2 sigmoid(scale(f_i)) + shift(mean_j u_j)``: ``(scale, shift)``, each ``(..., dim)``."""
        scale = 2.0 * torch.sigmoid(self.scaling(self.base.item_feat(items)))
        return scale, self.shifting(users)

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """An old item as a cold one: from the mean embedding, warm up on support ``a`` through
        the meta networks (the base model frozen), then the loss of the scored embedding on the
        query ``b``; the meta networks' gradient flows through the warm-up steps."""
        a, b = batch.support, batch.query
        e = self.warm(
            self.cold_start(a.items[:, 0]), a, self.s.warm_steps, float(self.warm_lr), True
        )
        return self.support_loss(self.transform(e, a), b).mean()


def _builder(cls: type[ItemWarmup]):
    def build(data: FitData, s: WarmupSettings) -> ItemWarmup:
        t, rows = data.table, data.splits.pools[data.splits.train].rows
        if t.feedback != "implicit":
            raise ConfigError(
                f"{cls.__name__.lower()}: needs click labels (implicit feedback); the table is {t.feedback!r}; "
                "build the table with metarec.episodes.warmup.click_table (tasks/ml1m-item-warmup.toml does)"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(data.seed)
            base = WarmupBase(
                t, s, known_users=np.unique(t.users[rows]), old_items=np.unique(t.items[rows])
            )
            return cls(base, s)

    return build


def _pretrain_for(name: str, k: int | None):
    def pretrain(model: ItemWarmup, data: FitData, s: WarmupSettings) -> dict[str, Any]:
        """The base model on the old items; for MWUF also the mean start and the warm-up rate
        the meta networks train at: chosen on meta-val before they train (identity networks),
        as :func:`select_warm_lr` picks it after."""
        rows = data.splits.pools[data.splits.train].rows
        log = pretrain_base(model.base, data.table, rows, s, data.seed)
        if isinstance(model, MWUF):
            model.set_mean()
            shell = LearnerFitted(name, data.table, model, s, {})
            shell.k = k
            model.eval()
            log["warm_lr_before"] = select_warm_lr(shell, data)
        return log

    return pretrain


def _make(
    name: str, cls: type[ItemWarmup], scenario: Any, settings: dict[str, Any], steps: int | None
) -> LearnerMethod:
    defaults, scfg = defaults_and_sampler(scenario, WarmupSettings)
    defaults.pop("dim", None)
    if steps is not None:
        defaults["steps"] = steps
    s = parse_settings(WarmupSettings, name, settings, defaults, scenario)
    return LearnerMethod(
        name,
        _builder(cls),
        s,
        scfg,
        pretrain=_pretrain_for(name, scfg.n_support),
        select=select_warm_lr,
        validate=warmup_val_score,
        val_metric="neg_logloss",
    )


def _shell(cls: type[ItemWarmup]):
    def shell(table: Any, s: WarmupSettings, shape: Any) -> ItemWarmup:
        base = WarmupBase(table, s, known_users=None, old_items=np.zeros(0, dtype=np.int64))
        return cls(base, s)

    return shell


def make_warmup_base(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``warmup-base``: the base model, cold items warmed up from zero (no meta-training)."""
    settings.setdefault("steps", 0)
    return _make("warmup-base", ItemWarmup, scenario, settings, None)


def make_metaemb(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``metaemb`` with :class:`WarmupSettings` overrides (budget from the scenario)."""
    return _make("metaemb", MetaEmb, scenario, settings, None)


def make_mwuf(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``mwuf`` with :class:`WarmupSettings` overrides (budget from the scenario)."""
    return _make("mwuf", MWUF, scenario, settings, None)


for _name, _cls, _factory in (
    ("warmup-base", ItemWarmup, make_warmup_base),
    ("metaemb", MetaEmb, make_metaemb),
    ("mwuf", MWUF, make_mwuf),
):
    register_method(
        _name,
        _factory,
        loader=learner_loader(WarmupSettings, _shell(_cls)),
        tags=MethodTags(
            feedback=("implicit",),
            units=("item",),
            item_features=True,
            inner_loop=True,
            family="learner",
        ),
        replace=True,
    )
