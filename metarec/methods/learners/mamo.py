"""MAMO: memory-augmented meta-optimisation for cold-start users (explicit or implicit feedback).

After Dong et al., "MAMO: Memory-Augmented Meta-Optimization for Cold-start Recommendation"
(KDD 2020). A task is a user with profile vector ``p_u`` (their side-feature embedding); items
are embedded ``e_i`` by theirs. The recommender is
``f(u, i) = MLP_theta([p_u, tanh(M_u e_i)])`` with a per-user *preference matrix* ``M_u``
(``(d_m, d_i)``). Two memories (buffers, written by rules, not by gradients):

* **feature-specific memory** ``M_U (K, d_p)`` (profile keys) and ``M_P (K, |theta|)``
  (parameter biases): attention ``a_u = softmax_k(cos(p_u, M_U[k]))``; personalised bias
  ``b_u = a_u^T M_P``; the user's initial fast weights are ``theta_u = theta - tau * b_u``;
* **task-specific memory** ``M_UI (K, d_m, d_i)``: the user's initial preference matrix is
  ``M_u = sum_k a_u[k] M_UI[k]``.

Local update: ``steps`` gradient steps on the support loss over ``(theta_u, M_u)``; the query
loss after them trains ``theta`` and the embeddings (second order unless ``first_order``).
Writes after each outer step, averaged over the meta-batch's tasks ``t``:

* ``M_U <- alpha * mean_t(a_t p_t^T) + (1 - alpha) * M_U``;
* ``M_P <- beta * mean_t(a_t g_t^T) + (1 - beta) * M_P``, ``g_t`` the support-loss gradient
  with respect to ``theta`` at ``theta_t`` (flattened);
* ``M_UI <- gamma * mean_t(a_t (x) M_t') + (1 - gamma) * M_UI``, ``M_t'`` the adapted matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from metarec._errors import ConfigError
from metarec.algorithms.losses import apply_loss, set_loss_of
from metarec.config.objective import RankingObjective
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.episodes.relevance import ranking_objective
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.learners._encode import SideEncoder, task_entity
from metarec.methods.learners._loop import (
    LearnerMethod,
    TrainSettings,
    defaults_and_sampler,
    learner_loader,
    parse_settings,
)

__all__ = ["MAMOSettings", "MAMO", "make_mamo", "memory_read", "memory_write"]


@dataclass(frozen=True)
class MAMOSettings(TrainSettings):
    """MAMO's sizes and rates (with the :class:`~metarec.methods.learners.TrainSettings` budget).

    Fields:
        dim: embedding size of each side feature.
        pref_dim: rows ``d_m`` of the preference matrix.
        hidden: widths of the recommender MLP.
        memory: number of memory slots ``K``.
        tau: weight of the personalised bias.
        alpha, beta, gamma: write rates of ``M_U``, ``M_P`` and ``M_UI``.
        inner_steps, inner_lr: local update; first_order: drop second-order terms.
    """

    dim: int = 32
    pref_dim: int = 16
    hidden: tuple[int, ...] = (64, 64)
    memory: int = 3
    tau: float = 0.1
    alpha: float = 0.1
    beta: float = 0.05
    gamma: float = 0.1
    inner_steps: int = 3
    inner_lr: float = 0.05
    first_order: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("dim", "pref_dim", "memory"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"hidden={list(self.hidden)}: need layer widths >= 1; e.g. hidden=[64, 64]"
            )
        for name in ("alpha", "beta", "gamma"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    f"{name}={getattr(self, name)}: a memory write rate must lie in [0, 1]; e.g. 0.1"
                )
        if self.inner_steps < 0 or not self.inner_lr > 0 or self.tau < 0:
            raise ConfigError(
                f"inner_steps={self.inner_steps}, inner_lr={self.inner_lr}, tau={self.tau}: need inner_steps >= 0, "
                "inner_lr > 0, tau >= 0"
            )


def memory_read(
    p: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention read: ``p (T, d_p), keys (K, d_p), values (K, *S) -> (a (T, K), read (T, *S))``.

    ``a[t] = softmax_k cos(p_t, keys_k)``, ``read[t] = sum_k a[t, k] values[k]``.
    """
    a = torch.softmax(
        F.cosine_similarity(p.unsqueeze(1), keys.unsqueeze(0), dim=-1, eps=1e-8), dim=-1
    )  # (T, K)
    return a, torch.tensordot(a, values, dims=([1], [0]))


def memory_write(
    memory: torch.Tensor, a: torch.Tensor, x: torch.Tensor, rate: float
) -> torch.Tensor:
    """The write rule ``rate * mean_t(a_t (x) x_t) + (1 - rate) * memory``:
    ``memory (K, *S), a (T, K), x (T, *S) -> (K, *S)``."""
    outer = torch.tensordot(a, x, dims=([0], [0])) / a.shape[0]  # (K, *S)
    return rate * outer + (1.0 - rate) * memory


class MAMO(nn.Module):
    """The MAMO learner (see the module docstring)."""

    mem_profile: torch.Tensor  # buffer (memory, d_p)
    mem_bias: torch.Tensor  # buffer (memory, |theta|)
    mem_pref: torch.Tensor  # buffer (memory, pref_dim, d_i)

    def __init__(
        self,
        table: Any,
        s: MAMOSettings,
        *,
        known_items: Any = None,
        ranking: RankingObjective | None = None,
    ) -> None:
        super().__init__()
        if table.user_features is None:
            raise ConfigError(
                "mamo: the table has no user features; MAMO reads its memories with the user's profile. Load user "
                "features (InteractionTable.from_frame(..., user_features=...)) or use 'tanp'"
            )
        self.s = s
        self.ranking = ranking  # trained to rank: relevance labels and negatives, a click loss
        explicit = table.feedback == "explicit" and ranking is None
        self.loss = ranking.loss if ranking is not None else ("mse" if explicit else "bce")
        self.user_enc = SideEncoder(table.user_features, table.n_users, s.dim, ids="never")
        self.item_enc = SideEncoder(table.item_features, table.n_items, s.dim, known=known_items)
        dp, di = self.user_enc.out_dim, self.item_enc.out_dim
        sizes = [dp + s.pref_dim, *s.hidden, 1]
        theta: dict[
            str, torch.Tensor
        ] = {}  # nn.Linear's parameters (its stubs type them as Tensor)
        for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            lin = nn.Linear(a, b)
            theta[f"w{j}"], theta[f"b{j}"] = lin.weight, lin.bias
        if explicit and table.rating_scale is not None:
            nn.init.constant_(theta[f"b{len(sizes) - 2}"], sum(table.rating_scale) / 2)
        self.theta = nn.ParameterDict(theta)
        self._shapes = [(k, v.shape) for k, v in self.theta.items()]
        n_theta = sum(v.numel() for v in self.theta.values())
        self.register_buffer("mem_profile", torch.randn(s.memory, dp) * 0.1)
        self.register_buffer("mem_bias", torch.zeros(s.memory, n_theta))
        self.register_buffer("mem_pref", torch.randn(s.memory, s.pref_dim, di) / di**0.5)
        self._last: tuple[torch.Tensor, ...] | None = None

    # ------------------------------------------------------------------ pieces
    def flat(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([theta[k].reshape(-1) for k, _ in self._shapes])

    def unflat(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for k, shape in self._shapes:
            n = shape.numel()
            out[k] = v[..., i : i + n].reshape(*v.shape[:-1], *shape)
            i += n
        return out

    def recommend(
        self, theta: dict[str, torch.Tensor], pref: torch.Tensor, p: torch.Tensor, e: torch.Tensor
    ) -> torch.Tensor:
        """One task: ``theta``, ``pref (d_m, d_i)``, ``p (d_p,)``, ``e (N, d_i) -> (N,)``."""
        h = torch.cat([p.expand(e.shape[0], -1), torch.tanh(e @ pref.T)], dim=-1)
        n = len(self._shapes) // 2
        for j in range(n):
            h = h @ theta[f"w{j}"].T + theta[f"b{j}"]
            if j < n - 1:
                h = F.relu(h)
        return h.squeeze(-1)

    def init_fast(
        self, users: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(p (T, d_p), a (T, K), theta_u (T, |theta|), M_u (T, d_m, d_i))`` of each task's user."""
        p = self.user_enc(users)
        a, bias = memory_read(p, self.mem_profile, self.mem_bias)
        _, pref = memory_read(p, self.mem_profile, self.mem_pref)
        theta = self.flat(dict(self.theta)).unsqueeze(0) - self.s.tau * bias
        return p, a, theta, pref

    def local_update(
        self,
        theta: torch.Tensor,
        pref: torch.Tensor,
        p: torch.Tensor,
        s: EpisodeSet,
        steps: int,
        lr: float,
        first_order: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inner steps for every task (vmapped): ``-> (theta' (T, |theta|), M' (T, d_m, d_i), g (T, |theta|))``,
        ``g`` the first step's support gradient with respect to ``theta``."""
        e = self.item_enc(s.items)  # (T, N, d_i)
        name = self.loss
        lq = s.logq if s.logq is not None else torch.zeros_like(s.targets)  # (T, N)

        def one(
            th: torch.Tensor,
            pr: torch.Tensor,
            pt: torch.Tensor,
            et: torch.Tensor,
            y: torch.Tensor,
            m: torch.Tensor,
            q: torch.Tensor,
        ):
            def support_loss(fast: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
                pred = self.recommend(self.unflat(fast[0]), fast[1], pt, et)
                return apply_loss(name, pred, y, m, q)

            cur = (th, pr)
            g0 = torch.zeros_like(th)
            for k in range(steps):
                g = grad(support_loss)(cur)
                if first_order:
                    g = (g[0].detach(), g[1].detach())
                if k == 0:
                    g0 = g[0]
                cur = (cur[0] - lr * g[0], cur[1] - lr * g[1])
            return cur[0], cur[1], g0

        return vmap(one)(theta, pref, p, e, s.targets, s.mask, lq)

    def _predict(
        self, theta: torch.Tensor, pref: torch.Tensor, p: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        e = self.item_enc(items)
        return vmap(lambda th, pr, pt, et: self.recommend(self.unflat(th), pr, pt, et))(
            theta, pref, p, e
        )

    # ------------------------------------------------------------------ learner protocol
    def adapt(
        self, support: EpisodeSet, steps: int | None = None, lr: float | None = None
    ) -> tuple[torch.Tensor, ...]:
        users = task_entity(support.users, support.mask)
        p, _, theta, pref = self.init_fast(users)
        st = self.s.inner_steps if steps is None else steps
        with torch.enable_grad():
            theta, pref, _ = self.local_update(
                theta, pref, p, support, st, lr or self.s.inner_lr, True
            )
        return theta.detach(), pref.detach(), p.detach()

    def score(
        self, ctx: tuple[torch.Tensor, ...], users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        theta, pref, p = ctx
        return self._predict(theta, pref, p, items)

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor:
        s, q = batch.support, batch.query
        users = task_entity(s.users, s.mask)
        p, a, theta, pref = self.init_fast(users)
        theta2, pref2, g = self.local_update(
            theta, pref, p, s, self.s.inner_steps, self.s.inner_lr, self.s.first_order
        )
        pred = self._predict(theta2, pref2, p, q.items)
        self._last = (p.detach(), a.detach(), g.detach(), pref2.detach())
        return set_loss_of(self.loss, pred, q).mean()

    def after_step(self, batch: EpisodeBatch) -> None:
        if self._last is None:
            return
        p, a, g, pref = self._last
        self.mem_profile.copy_(memory_write(self.mem_profile, a, p, self.s.alpha))
        self.mem_bias.copy_(memory_write(self.mem_bias, a, g, self.s.beta))
        self.mem_pref.copy_(memory_write(self.mem_pref, a, pref, self.s.gamma))
        self._last = None


def make_mamo(scenario: Any = None, **settings: Any) -> LearnerMethod:
    """``mamo`` from a scenario (budget, ``model.embedding_dim``; ``algorithm.inner_steps`` /
    ``inner_lr`` / ``first_order``) and :class:`MAMOSettings` overrides; in a ranking scenario
    on ratings with a click loss, trained to rank (:mod:`metarec.config.objective`)."""
    defaults, scfg = defaults_and_sampler(scenario, MAMOSettings)
    if scenario is not None:
        al = scenario.algorithm
        defaults.update(inner_steps=al.inner_steps, first_order=al.first_order)

    def objective(table: Any) -> RankingObjective | None:
        return ranking_objective(scenario, table)

    def build(data: FitData, s: MAMOSettings) -> MAMO:
        t, rows = data.table, data.splits.pools[data.splits.train].rows
        return MAMO(t, s, known_items=t.items[rows], ranking=objective(t))

    s = parse_settings(MAMOSettings, "mamo", settings, defaults, scenario)
    return LearnerMethod("mamo", build, s, scfg, objective=objective)


def _shell(table: Any, s: MAMOSettings, shape: Any) -> MAMO:
    return MAMO(table, s, ranking=shape.get("ranking"))


register_method(
    "mamo",
    make_mamo,
    loader=learner_loader(MAMOSettings, _shell),
    tags=MethodTags(inner_loop=True, family="learner", ranks=True),
    replace=True,
)
