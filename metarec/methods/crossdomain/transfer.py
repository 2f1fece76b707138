"""Transfer through a shared user representation: pre-train + fine-tune, joint training, and
domain-adaptation (DA) regularised joint training.

:class:`SharedUserModel` embeds every user once, ``e_u`` (shared by all domains), maps it
through a user tower to the representation ``z_u = tower(e_u)`` and scores an item of domain
``d`` with that domain's head,

``s_d(u, i) = <z_u * w_d, q_i> + <a_d, z_u> + b_i + c_d``

(items are domain-specific, ``a_d`` gives a per-domain user bias). Cold users have source rows
only, so their ``e_u`` is learned from the source domain; the target head scores them.

* :func:`fit_finetune`: pre-train on the source rows, then fine-tune on the target rows with
  ``freeze="none"`` (everything trains), ``"embeddings"`` (the user embeddings are fixed) or
  ``"all-but-head"`` (user embeddings and tower fixed; the target head, and the target items'
  embeddings and biases, which are new to the target and have nothing to transfer, train).
* :func:`fit_joint`: one model on both domains, ``JointLoss(L_s, L_t)``
  (:class:`~metarec.methods.crossdomain.losses.JointLoss`), optionally ``+ lambda * R(Z_s, Z_t)``
  with ``R`` a regulariser of :data:`~metarec.methods.crossdomain.losses.REGULARISERS`, or DANN's
  domain-adversarial loss. ``Z_s`` are the representations of the distinct users of the step's
  source batch (every user with source rows, the cold users included) and ``Z_t`` those of the
  target batch (warm users only). The target head is fitted on the ``Z_t`` population and
  applied to cold users, who only belong to the ``Z_s`` one; matching the two distributions
  is a covariate-shift correction for the target head.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.methods.crossdomain._train import Validate, point_loss, train_selected
from metarec.methods.crossdomain.data import CrossDomainView, RowBatches, paired_batches
from metarec.methods.crossdomain.losses import (
    DomainDiscriminator,
    JointLoss,
    dann_loss,
    regulariser,
)
from metarec.methods.crossdomain.settings import FREEZE, CrossDomainConfig
from metarec.models.base import seeded

ScorerValidate = Callable[["DomainScorer"], float]
"""Scores a scorer on meta-val (higher is better)."""

__all__ = ["SharedUserModel", "DomainScorer", "fit_finetune", "fit_joint", "FREEZE_PATTERNS"]

FREEZE_PATTERNS: dict[str, tuple[str, ...]] = {
    "none": (),
    "embeddings": ("user",),
    "all-but-head": ("user", "tower."),
}
"""``freeze`` option -> prefixes of the parameter names kept fixed during fine-tuning."""


class SharedUserModel(nn.Module):
    """Shared user embedding and tower; per-domain item embeddings and heads (module docstring).

    Args:
        n_users, n_items, n_domains: index-space sizes (slot 0 included).
        dim: embedding and representation size ``d``; hidden: the tower's hidden width.
        item_map: ``int64 (n_items,)`` mapping items without training rows to slot 0.
        domain_bias: initial ``c_d`` (the mean rating for explicit feedback).
        seed: initialisation seed.

    Parameters: ``user (n_users, d)``, ``tower.{0,2}.{weight,bias}``, ``item (n_items, d)``,
    ``item_bias``, ``head_w``, ``head_a (n_domains, d)``, ``head_b (n_domains,)``.
    """

    item_map: torch.Tensor  # buffer (n_items,) int64

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_domains: int,
        dim: int,
        hidden: int,
        *,
        item_map: torch.Tensor,
        domain_bias: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        with seeded(seed):
            self.user = nn.Parameter(torch.randn(n_users, dim) * 0.1)
            self.tower = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
            self.item = nn.Parameter(torch.randn(n_items, dim) * 0.1)
        with torch.no_grad():
            self.item[0] = 0.0
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.head_w = nn.Parameter(torch.ones(n_domains, dim))
        self.head_a = nn.Parameter(torch.zeros(n_domains, dim))
        self.head_b = nn.Parameter(torch.full((n_domains,), float(domain_bias)))
        self.register_buffer("item_map", item_map.clone())

    @classmethod
    def from_view(cls, view: CrossDomainView, cfg: CrossDomainConfig, seed: int) -> SharedUserModel:
        t = view.table
        mu = float(t.ratings[view.train_rows].mean()) if view.train_feedback == "explicit" else 0.0
        return cls(
            t.n_users,
            t.n_items,
            t.n_domains,
            cfg.embedding_dim,
            cfg.hidden,
            item_map=view.item_map,
            domain_bias=mu,
            seed=seed,
        )

    def represent(self, uvec: torch.Tensor) -> torch.Tensor:
        """``z = tower(e)``: ``(..., d) -> (..., d)``."""
        return self.tower(uvec)

    def head(
        self, z: torch.Tensor, items: torch.Tensor, domains: torch.Tensor | int
    ) -> torch.Tensor:
        """Domain heads: ``z (B, d)`` with ``items (B,)`` -> ``(B,)``, or ``z (T, d)`` with
        ``items (T, N)`` -> ``(T, N)``; ``domains`` an int or per-row ``(B,)`` indices."""
        i = self.item_map[items]
        q, b = self.item[i], self.item_bias[i]
        w, a, c = self.head_w[domains], self.head_a[domains], self.head_b[domains]
        user_bias = (a * z).sum(-1)  # (B,) or (T,)
        if q.dim() == z.dim() + 1:  # (T, N, d) against (T, d); ``domains`` is one int here
            z, user_bias = z.unsqueeze(-2), user_bias.unsqueeze(-1)
        return (z * w * q).sum(-1) + user_bias + b + c

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, domains: torch.Tensor
    ) -> torch.Tensor:
        return self.head(self.represent(self.user[users]), items, domains)

    def embedding_penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``mean(||e_u||^2 + ||q_i||^2)`` over a batch's rows."""
        return (
            self.user[users].square().sum(-1) + self.item[self.item_map[items]].square().sum(-1)
        ).mean()


class DomainScorer(nn.Module):
    """A :class:`SharedUserModel` seen from one domain: a cold-start scorer whose user vector is
    the shared embedding ``e_u``."""

    def __init__(self, model: SharedUserModel, domain: int) -> None:
        super().__init__()
        self.model, self.domain = model, int(domain)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.model.user[users]

    def score(self, uvec: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.represent(uvec), items, self.domain)


def _train_rows(
    model: SharedUserModel,
    batches: RowBatches,
    opt: torch.optim.Optimizer,
    cfg: CrossDomainConfig,
    feedback: str,
) -> float:
    total, k = 0.0, 0
    for u, i, y, d in batches.epoch():
        loss = point_loss(model(u, i, d), y, feedback) + cfg.l2 * model.embedding_penalty(u, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, k = total + float(loss.detach()), k + 1
    return total / max(k, 1)


def fit_finetune(
    view: CrossDomainView,
    cfg: CrossDomainConfig,
    seed: int,
    *,
    validate: ScorerValidate | None = None,
    freeze: str | None = None,
) -> tuple[DomainScorer, dict]:
    """Pre-train on the source rows (``cfg.mf_epochs``), fine-tune on the target rows
    (``cfg.epochs``, best by ``validate(scorer)`` on meta-val) with ``freeze`` (default ``cfg.freeze``); the frozen
    parameters get ``requires_grad=False``."""
    freeze = cfg.freeze if freeze is None else freeze
    if freeze not in FREEZE:
        raise ConfigError(f"freeze={freeze!r}: must be one of {FREEZE}")
    model = SharedUserModel.from_view(view, cfg, seed)
    scorer = DomainScorer(model, view.target)
    src = RowBatches(
        view, view.source_rows, batch_size=cfg.batch_size, negatives=cfg.train_negatives, seed=seed
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    pre = train_selected(
        lambda _e: _train_rows(model, src, opt, cfg, view.train_feedback),
        [model],
        epochs=cfg.mf_epochs,
    )
    fixed = FREEZE_PATTERNS[freeze]
    for n, p in model.named_parameters():
        if any(n.startswith(f) for f in fixed):
            p.requires_grad_(False)
    tgt = RowBatches(
        view,
        view.target_rows,
        batch_size=cfg.batch_size,
        negatives=cfg.train_negatives,
        seed=seed + 1,
    )
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    fine = train_selected(
        lambda _e: _train_rows(model, tgt, opt, cfg, view.train_feedback),
        [model],
        epochs=cfg.epochs,
        validate=_bind(validate, scorer),
        patience=cfg.patience,
    )
    return scorer, {"pretrain": pre, "finetune": fine, "freeze": freeze}


def fit_joint(
    view: CrossDomainView,
    cfg: CrossDomainConfig,
    seed: int,
    *,
    validate: ScorerValidate | None = None,
    reg: str | None = None,
    dann: bool = False,
) -> tuple[DomainScorer, dict]:
    """Joint training on both domains, optionally DA-regularised (``reg``) or adversarial
    (``dann``); ``cfg.epochs`` epochs, the best on meta-val kept.

    ``validate(scorer)`` scores the model on meta-val after each epoch.

    Per step: ``J(L_s, L_t) + l2 * penalty + da_weight * R(Z_s, Z_t)`` (``reg``) or
    ``+ BCE_domain(D(GRL_lambda(Z_s)), D(GRL_lambda(Z_t)))`` (``dann``, with
    ``lambda = dann_weight * (2 / (1 + exp(-10 p)) - 1)`` ramped over training progress ``p``,
    Ganin et al.'s schedule).
    """
    if reg is not None and dann:
        raise ConfigError("fit_joint: pass reg=... or dann=True, not both")
    reg_fn = regulariser(reg) if reg is not None else None
    model = SharedUserModel.from_view(view, cfg, seed)
    scorer = DomainScorer(model, view.target)
    joint = JointLoss(
        2, None if cfg.uncertainty else cfg.joint_weights, uncertainty=cfg.uncertainty
    )
    with seeded(seed + 7):
        disc = DomainDiscriminator(cfg.embedding_dim, cfg.hidden) if dann else None
    params = [*model.parameters(), *joint.parameters(), *(disc.parameters() if disc else [])]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    src, tgt = paired_batches(
        view, batch_size=cfg.batch_size, negatives=cfg.train_negatives, seed=seed
    )
    gen = torch.Generator().manual_seed(seed)
    total_steps = max(1, cfg.epochs * len(src))
    state = {"step": 0}

    def users_rep(users: torch.Tensor) -> torch.Tensor:
        uniq = torch.unique(users)
        if uniq.shape[0] > cfg.reg_samples:
            uniq = uniq[torch.randperm(uniq.shape[0], generator=gen)[: cfg.reg_samples]]
        return model.represent(model.user[uniq])  # (n, d)

    def run_epoch(_: int) -> float:
        total, k = 0.0, 0
        for (us, is_, ys, ds), (ut, it, yt, dt) in zip(src.epoch(), tgt.epoch()):
            ls = point_loss(model(us, is_, ds), ys, view.train_feedback)
            lt = point_loss(model(ut, it, dt), yt, view.train_feedback)
            loss = joint(ls, lt) + cfg.l2 * 0.5 * (
                model.embedding_penalty(us, is_) + model.embedding_penalty(ut, it)
            )
            if reg_fn is not None or disc is not None:
                zs, zt = users_rep(us), users_rep(ut)
                if zs.shape[0] >= 2 and zt.shape[0] >= 2:
                    if reg_fn is not None:
                        kw = {"generator": gen} if reg == "sliced_wasserstein" else {}
                        loss = loss + cfg.da_weight * reg_fn(zs, zt, **kw)
                    elif (
                        disc is not None
                    ):  # always, given the test above; spelled out for the type checker
                        p = state["step"] / total_steps
                        lam = cfg.dann_weight * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
                        loss = loss + dann_loss(disc, zs, zt, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            total, k = total + float(loss.detach()), k + 1
        return total / max(k, 1)

    log = train_selected(
        run_epoch,
        [model, joint, *([disc] if disc else [])],
        epochs=cfg.epochs,
        validate=_bind(validate, scorer),
        patience=cfg.patience,
    )
    log["joint_weights"] = joint.weights.tolist()
    return scorer, log


def _bind(validate: ScorerValidate | None, scorer: DomainScorer) -> Validate | None:
    return None if validate is None else (lambda: validate(scorer))
