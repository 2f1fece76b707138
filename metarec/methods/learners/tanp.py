"""TaNP: a task-adaptive neural process for cold-start users (amortised; no inner gradient steps).

After Lin et al., "Task-adaptive Neural Process for User Cold-Start Recommendation" (WWW 2021).
A task is a user; each support interaction ``j`` is the pair ``s_j = [x_j, y_j]`` of the
user/item feature vector ``x_j`` and its target ``y_j`` (ratings mapped to ``[0, 1]``).

* **encoder** (deterministic path): ``r = mean_j h(s_j)`` over the real support entries;
* **latent path**: ``(mu, log sigma) = heads(mean_j g(s_j))``; training samples
  ``z ~ N(mu_T, sigma_T)`` from the support *and* query (the posterior) and adds
  ``kl_weight * KL(N(mu_T, sigma_T) || N(mu_C, sigma_C))`` against the support-only prior;
  adaptation uses ``z = mu_C``;
* **task identity and customisation**: ``o = mean_j t(s_j)``; soft assignment to ``K``
  learned cluster centres ``c_k`` by a Student-t kernel (one degree of freedom),
  ``a_k = q_k / sum_k' q_k'`` with ``q_k = (1 + ||o - c_k||^2)^-1``; the cluster-enhanced task
  embedding ``o' = o + sum_k a_k m_k`` (learned memory ``m_k``) is what modulates the decoder;
* **clustering regulariser** (training): over the ``T`` tasks of a meta-batch, the sharpened
  target ``p_tk = (a_tk^2 / f_k) / sum_k' (a_tk'^2 / f_k')`` with soft frequencies
  ``f_k = sum_t a_tk``, and ``L_c = 1/T sum_t sum_k p_tk log(p_tk / a_tk)`` (``KL(P || A)``,
  ``P`` held fixed), weighted by ``cluster_weight``: it pulls each task towards its nearest
  centre and the centres towards the tasks, so tasks of the same kind share a modulation;
* **task-adaptive modulation (FiLM)** of the decoder: layer ``l`` computes
  ``h_l = relu(gamma_l * (W_l h_{l-1} + b_l) + beta_l)`` with ``gamma_l = 1 + G_l o'`` and
  ``beta_l = B_l o'``; ``h_0 = [x_q, r, z]``; the output is ``w^T h_L + b`` (a rating or a logit).

The training loss is ``fit + kl_weight * KL + cluster_weight * L_c``. Adaptation is one
forward pass over the support (``steps``/``lr`` are ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metarec._errors import ConfigError
from metarec.algorithms.losses import set_loss_of
from metarec.config.objective import RankingObjective
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.episodes.relevance import ranking_objective
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.learners._encode import SideEncoder, masked_mean, mlp, unit_targets
from metarec.methods.learners._loop import (
    LearnerMethod,
    TrainSettings,
    defaults_and_sampler,
    learner_loader,
    parse_settings,
)

__all__ = ["TaNPSettings", "TaNP", "make_tanp", "cluster_assignments", "clustering_loss"]


@dataclass(frozen=True)
class TaNPSettings(TrainSettings):
    """TaNP's sizes and loss weights (with the :class:`~metarec.methods.learners.TrainSettings` budget).

    Fields:
        dim: embedding size of each side feature.
        hidden: width of the encoder MLPs (128: better than 64 on ml1m-melu meta-val,
            benchmarks/learners_tune.py).
        latent: size of ``z``.
        task_dim: size of the task embedding ``o``.
        clusters: number of task clusters ``K``.
        decoder: widths of the FiLM-modulated decoder layers.
        kl_weight: weight of the KL term.
        cluster_weight: weight of the clustering regulariser ``L_c`` (0: not used).
    """

    dim: int = 32
    hidden: int = 128
    latent: int = 32
    task_dim: int = 32
    clusters: int = 4
    decoder: tuple[int, ...] = (64, 64)
    kl_weight: float = 0.1
    cluster_weight: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("dim", "hidden", "latent", "task_dim", "clusters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if not self.decoder or any(h < 1 for h in self.decoder):
            raise ConfigError(
                f"decoder={list(self.decoder)}: need at least one layer width >= 1; e.g. decoder=[64, 64]"
            )
        for name in ("kl_weight", "cluster_weight"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{name}={v}: must be a finite number >= 0; e.g. {name}=0.1")


def cluster_assignments(o: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Student-t soft assignments: ``o (T, D), centroids (K, D) -> a (T, K)``, rows summing to 1,
    ``a_tk ∝ (1 + ||o_t - c_k||^2)^-1``."""
    q = 1.0 / (1.0 + (o.unsqueeze(1) - centroids).square().sum(-1))  # (T, K)
    return q / q.sum(-1, keepdim=True)


def clustering_loss(a: torch.Tensor) -> torch.Tensor:
    """``KL(P || A)`` averaged over tasks, ``P`` the sharpened target of ``a (T, K)`` (held fixed;
    see the module docstring): ``-> ()``."""
    with torch.no_grad():
        w = a.square() / a.sum(0, keepdim=True)  # (T, K): a_tk^2 / f_k
        p = w / w.sum(-1, keepdim=True)
    return (p * (p.clamp_min(1e-12).log() - a.clamp_min(1e-12).log())).sum(-1).mean()


class TaNP(nn.Module):
    """The TaNP learner over a table's side features (see the module docstring)."""

    def __init__(
        self,
        table: Any,
        s: TaNPSettings,
        *,
        known_items: Any = None,
        ranking: RankingObjective | None = None,
    ) -> None:
        super().__init__()
        self.ranking = ranking  # trained to rank: relevance labels and negatives, a click loss
        explicit = table.feedback == "explicit" and ranking is None
        self.scale = table.rating_scale if explicit else None
        self.loss = ranking.loss if ranking is not None else ("mse" if explicit else "bce")
        self.kl_weight, self.cluster_weight = s.kl_weight, s.cluster_weight
        self.user_enc = SideEncoder(table.user_features, table.n_users, s.dim, ids="never")
        self.item_enc = SideEncoder(table.item_features, table.n_items, s.dim, known=known_items)
        fx = self.user_enc.out_dim + self.item_enc.out_dim
        self.det = mlp([fx + 1, s.hidden, s.hidden])
        self.lat = mlp([fx + 1, s.hidden], last_act=True)
        self.mu = nn.Linear(s.hidden, s.latent)
        self.logsig = nn.Linear(s.hidden, s.latent)
        self.task = mlp([fx + 1, s.hidden, s.task_dim])
        self.centroids = nn.Parameter(torch.randn(s.clusters, s.task_dim) * 0.5)
        self.memory = nn.Parameter(torch.zeros(s.clusters, s.task_dim))
        sizes = [fx + s.hidden + s.latent, *s.decoder]
        self.dec = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.film = nn.ModuleList(nn.Linear(s.task_dim, 2 * h) for h in s.decoder)
        for f in self.film:
            assert isinstance(f, nn.Linear)  # built just above; narrows ModuleList's item type
            nn.init.zeros_(f.weight)
            nn.init.zeros_(f.bias)
        self.head = nn.Linear(sizes[-1], 1)
        if self.scale is not None:
            nn.init.constant_(self.head.bias, (self.scale[0] + self.scale[1]) / 2)

    # ------------------------------------------------------------------ pieces
    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``x``: ``(T, N) x2 -> (T, N, F)``."""
        return torch.cat([self.user_enc(users), self.item_enc(items)], dim=-1)

    def pairs(self, s: EpisodeSet) -> torch.Tensor:
        """``s_j = [x_j, y_j]``: ``(T, N, F + 1)``."""
        y = unit_targets(s.targets, self.scale).unsqueeze(-1).to(self.head.weight.dtype)
        return torch.cat([self.features(s.users, s.items), y], dim=-1)

    def latent(self, sj: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)`` of ``z``: ``(T, N, F + 1), (T, N) -> (T, L) x2``."""
        pooled = masked_mean(self.lat(sj), mask)
        return self.mu(pooled), 0.1 + 0.9 * torch.sigmoid(self.logsig(pooled))

    def task_embedding(
        self, sj: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(o', a)``: the customised task embedding ``(T, D)`` and the assignments ``(T, K)``."""
        o = masked_mean(self.task(sj), mask)  # (T, D)
        a = cluster_assignments(o, self.centroids)  # (T, K)
        return o + a @ self.memory, a

    def decode(
        self, x: torch.Tensor, r: torch.Tensor, z: torch.Tensor, o: torch.Tensor
    ) -> torch.Tensor:
        """FiLM-modulated decoder: ``x (T, N, F), r (T, H), z (T, L), o' (T, D) -> (T, N)``."""
        n = x.shape[1]
        h = torch.cat(
            [x, r.unsqueeze(1).expand(-1, n, -1), z.unsqueeze(1).expand(-1, n, -1)], dim=-1
        )
        for layer, film in zip(self.dec, self.film, strict=True):
            gamma, beta = film(o).chunk(2, dim=-1)  # (T, H_l) x2
            h = F.relu((1.0 + gamma).unsqueeze(1) * layer(h) + beta.unsqueeze(1))
        return self.head(h).squeeze(-1)

    # ------------------------------------------------------------------ learner protocol
    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> tuple[torch.Tensor, ...]:
        sj = self.pairs(support)
        r = masked_mean(self.det(sj), support.mask)
        mu, _ = self.latent(sj, support.mask)
        o, _ = self.task_embedding(sj, support.mask)
        return r, mu, o

    def score(
        self, ctx: tuple[torch.Tensor, ...], users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        r, z, o = ctx
        return self.decode(self.features(users, items), r, z, o)

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        s, q = batch.support, batch.query
        sj, qj = self.pairs(s), self.pairs(q)
        r = masked_mean(self.det(sj), s.mask)
        o, a = self.task_embedding(sj, s.mask)
        mu_c, sig_c = self.latent(sj, s.mask)
        both, mboth = torch.cat([sj, qj], dim=1), torch.cat([s.mask, q.mask], dim=1)
        mu_t, sig_t = self.latent(both, mboth)
        z = mu_t + sig_t * torch.randn_like(mu_t)
        pred = self.decode(self.features(q.users, q.items), r, z, o)
        fit = set_loss_of(self.loss, pred, q).mean()
        kl = (
            torch.log(sig_c / sig_t)
            + (sig_t.square() + (mu_t - mu_c).square()) / (2 * sig_c.square())
            - 0.5
        ).sum(-1)
        loss = fit + self.kl_weight * kl.mean()
        if self.cluster_weight > 0:
            loss = loss + self.cluster_weight * clustering_loss(a)
        return loss


def make_tanp(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``tanp`` from a scenario (budget: ``train.steps``/``outer_lr``, ``algorithm.meta_batch``,
    ``model.embedding_dim``) and :class:`TaNPSettings` overrides; in a ranking scenario on
    ratings with a click loss, trained to rank (:mod:`metarec.config.objective`)."""
    defaults, scfg = defaults_and_sampler(scenario, TaNPSettings)
    s = parse_settings(TaNPSettings, "tanp", settings, defaults, scenario)

    def objective(table: Any) -> RankingObjective | None:
        return ranking_objective(scenario, table)

    def build(data: FitData, st: TaNPSettings) -> TaNP:
        t, rows = data.table, data.splits.pools[data.splits.train].rows
        return TaNP(t, st, known_items=t.items[rows], ranking=objective(t))

    return LearnerMethod("tanp", build, s, scfg, objective=objective)


def _shell(table: Any, s: TaNPSettings, shape: Any) -> TaNP:
    return TaNP(table, s, ranking=shape.get("ranking"))


register_method(
    "tanp",
    make_tanp,
    loader=learner_loader(TaNPSettings, _shell),
    tags=MethodTags(family="learner", ranks=True),
    replace=True,
)
