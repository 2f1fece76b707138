"""``mf-foldin``: implicit-feedback matrix factorisation (iALS, Hu, Koren & Volinsky, ICDM 2008)
on meta-train, and a cold user's vector solved in closed form from the support.

Meta-train: binary ``p_ui`` (1 for an interaction), confidence ``c_ui = 1 + alpha p_ui``, item
vectors ``V (n_items, D)`` and user vectors minimising
``sum_{u,i} c_ui (p_ui - u_u . v_i)^2 + lambda (sum ||u_u||^2 + sum ||v_i||^2)`` by alternating
least squares, each half-step a few conjugate-gradient iterations from the previous solution
(iALS-CG, Takács et al., RecSys 2011; the Gramian ``V^T V`` trick keeps a step ``O(nnz D)``).

**Fold-in** (no gradient step): for a task with support ``S`` (implicit: its positives),

``u = (V^T V + alpha V_S^T V_S + lambda I)^{-1} (1 + alpha) V_S^T 1``,

the exact minimiser of the same loss over the task's row with ``V`` fixed; ``score(i) = u . v_i``.
The catalogue fast path is one ``(T, D) @ (D, C)`` matmul. An item without a meta-train
interaction (a cold item) has ``v_i = 0``: it scores 0, tied with every other cold item.

``alpha`` and ``lambda`` are chosen on meta-val (``ndcg@10_all`` at the scenario's shots) from
:data:`ALPHAS` x :data:`REGS` (``[learners.mf-foldin] alphas = [...]``, ``regs = [...]``,
``factors``, ``iterations``, ``cg_steps``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.methods.base import FitData
from metarec.methods.ranking._common import (
    Protocol,
    check_grid,
    load_tensors,
    parse,
    support_lists,
    tune,
)
from metarec.train.log import TrainingLog

__all__ = [
    "ALPHAS",
    "REGS",
    "MFSettings",
    "fold_in",
    "ials",
    "MFFoldInMethod",
    "MFFoldInFitted",
    "MFFoldInAdapted",
    "make_mf_foldin",
]

ALPHAS = (0.25, 1.0, 4.0)
"""Confidence weights ``alpha`` tried on meta-val."""
REGS = (30.0, 100.0, 300.0)
"""L2 strengths ``lambda`` tried on meta-val."""


@dataclass(frozen=True)
class MFSettings:
    """``[learners.mf-foldin]``.

    Fields:
        factors: ``D``.
        iterations: ALS sweeps (users then items).
        cg_steps: conjugate-gradient iterations per half-step.
        alphas, regs: the grid tried on meta-val.
    """

    factors: int = 64
    iterations: int = 8
    cg_steps: int = 3
    alphas: tuple[float, ...] = ALPHAS
    regs: tuple[float, ...] = REGS

    def __post_init__(self) -> None:
        for key in ("factors", "iterations", "cg_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"learners.mf-foldin.{key}={getattr(self, key)}: must be >= 1")
        check_grid("mf-foldin", "alphas", self.alphas, 0, strict=True)
        check_grid("mf-foldin", "regs", self.regs, 0, strict=True)


def fold_in(
    v: torch.Tensor, task: torch.Tensor, item: torch.Tensor, n_tasks: int, alpha: float, reg: float
) -> torch.Tensor:
    """Closed-form user vectors ``(n_tasks, D)`` from supports given as ``(task, item)`` lists:
    ``u_t = (V^T V + alpha V_S^T V_S + lambda I)^{-1} (1 + alpha) V_S^T 1`` (solved in float64;
    a task without support gets the zero vector)."""
    v64 = v.double()
    D = v64.shape[1]
    vs = v64[item]  # (P, D)
    a = (v64.T @ v64 + reg * torch.eye(D, dtype=torch.float64)).expand(n_tasks, D, D).clone()
    a.index_add_(0, task, alpha * vs.unsqueeze(2) * vs.unsqueeze(1))  # (T, D, D)
    b = torch.zeros(n_tasks, D, dtype=torch.float64).index_add_(0, task, (1.0 + alpha) * vs)
    return torch.linalg.solve(a, b.unsqueeze(2)).squeeze(2)


DENSE_CELLS = 30_000_000
"""Matrices with at most this many cells run the ALS products dense (two matmuls); sparser,
larger ones through gathers over their non-zeros."""


def _cg_half(
    fixed: torch.Tensor,
    x: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    alpha: float,
    reg: float,
    steps: int,
) -> torch.Tensor:
    """One ALS half-step for the side ``x (R, D)`` given ``fixed (M, D)`` and interactions
    ``(rows, cols)``: ``steps`` conjugate-gradient iterations on
    ``(F^T F + alpha F_r^T F_r + lambda I) x_r = (1 + alpha) F_r^T 1``, started at ``x``."""
    g = fixed.T @ fixed  # (D, D)
    R, M = x.shape[0], fixed.shape[0]
    if R * M <= DENSE_CELLS:  # sum_{i in r} f_i f_i^T p_r = ((P F^T) * X) F: two matmuls
        dense = torch.zeros(R, M, dtype=x.dtype)
        dense[rows, cols] = 1.0

        def inter(p: torch.Tensor) -> torch.Tensor:
            return ((p @ fixed.T) * dense) @ fixed

        b = (1.0 + alpha) * (dense @ fixed)
    else:
        f = fixed[cols]  # (nnz, D)

        def inter(p: torch.Tensor) -> torch.Tensor:
            dots = (f * p[rows]).sum(dim=1, keepdim=True)  # (nnz, 1)
            return torch.zeros_like(p).index_add_(0, rows, dots * f)

        b = torch.zeros_like(x).index_add_(0, rows, (1.0 + alpha) * f)

    def apply(p: torch.Tensor) -> torch.Tensor:
        return p @ g + reg * p + alpha * inter(p)

    r = b - apply(x)
    p = r.clone()
    rs = (r * r).sum(dim=1, keepdim=True)
    for _ in range(steps):
        ap = apply(p)
        step = rs / (p * ap).sum(dim=1, keepdim=True).clamp(min=1e-30)
        x = x + step * p
        r = r - step * ap
        new = (r * r).sum(dim=1, keepdim=True)
        p = r + (new / rs.clamp(min=1e-30)) * p
        rs = new
    return x


def ials(
    rows: np.ndarray,
    cols: np.ndarray,
    n_rows: int,
    n_cols: int,
    *,
    factors: int,
    alpha: float,
    reg: float,
    iterations: int,
    cg_steps: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """iALS on the binary matrix with non-zeros ``(rows, cols)``: ``(U (n_rows, D), V (n_cols, D))``
    (see the module docstring). ``V`` starts at ``N(0, 0.01^2)`` from ``seed``, ``U`` at zero."""
    gen = torch.Generator().manual_seed(seed)
    v = 0.01 * torch.randn(n_cols, factors, generator=gen, dtype=dtype)
    u = torch.zeros(n_rows, factors, dtype=dtype)
    r, c = torch.from_numpy(rows), torch.from_numpy(cols)
    for _ in range(iterations):
        u = _cg_half(v, u, r, c, alpha, reg, cg_steps)
        v = _cg_half(u, v, c, r, alpha, reg, cg_steps)
    return u, v


class MFFoldInAdapted:
    """Folded-in user vectors ``U (T, D)`` against item vectors ``V (n_items, D)``."""

    score_kind = "rank"

    def __init__(self, u: torch.Tensor, v: torch.Tensor) -> None:
        self.u, self.v = u, v

    @property
    def n_tasks(self) -> int:
        return int(self.u.shape[0])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` item indices -> ``(T, N)`` scores ``u_t . v_i`` (``users`` unused)."""
        return (self.u.unsqueeze(1) * self.v[items.long()]).sum(dim=-1)

    def score_catalogue(self, items: torch.Tensor) -> torch.Tensor:
        """``items (C,)`` -> ``(T, C)``: one matmul."""
        return self.u @ self.v[items.long()].T

    def select(self, rows: torch.Tensor) -> MFFoldInAdapted:
        """The tasks ``rows`` (``int64 (R,)``), in that order."""
        return MFFoldInAdapted(self.u[rows.to(self.u.device)], self.v)

    @classmethod
    def concat(cls, parts: list[MFFoldInAdapted]) -> MFFoldInAdapted:
        """The tasks of ``parts``, one after the other."""
        return cls(torch.cat([p.u for p in parts]), parts[0].v)


class MFFoldInFitted:
    """Item vectors and the chosen ``alpha`` / ``lambda``."""

    score_kind = "rank"  # its scores order items; they are not ratings (never clipped)

    def __init__(
        self,
        table: InteractionTable,
        v: torch.Tensor,
        *,
        alpha: float,
        reg: float,
        tuning: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.table = "mf-foldin", table
        self.training_log = TrainingLog()  # closed form; tuning sets it (meta-val score)
        self.v, self.alpha, self.reg, self.tuning = v, alpha, reg, tuning or {}

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> MFFoldInAdapted:
        task, item = support_lists(support, self.table.feedback)
        u = fold_in(self.v, task, item, support.n_tasks, self.alpha, self.reg)
        return MFFoldInAdapted(u.to(self.v.dtype), self.v)

    def config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "reg": self.reg,
            "factors": int(self.v.shape[1]),
            "tuning": self.tuning,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"v": self.v}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        load_tensors(self, state, {"v": tuple(self.v.shape)})

    @classmethod
    def build(cls, name: str, config: Mapping[str, Any], table: InteractionTable) -> MFFoldInFitted:
        """An empty shell of ``config`` (fill it with :meth:`load_state_dict`)."""
        return cls(
            table,
            torch.zeros(table.n_items, int(config.get("factors", 1))),
            alpha=float(config.get("alpha", 1.0)),
            reg=float(config.get("reg", 1.0)),
            tuning=config.get("tuning"),
        )


class MFFoldInMethod:
    """``mf-foldin`` (see the module docstring)."""

    name = "mf-foldin"

    def __init__(
        self, settings: MFSettings | None = None, protocol: Protocol | None = None
    ) -> None:
        self.settings = settings or MFSettings()
        self.protocol = protocol or Protocol.of(None)

    def fit(self, data: FitData) -> MFFoldInFitted:
        table, splits, st = data.table, data.splits, self.settings
        rows = splits.pools[splits.train].rows
        keys = np.unique(table.users[rows].astype(np.int64) * table.n_items + table.items[rows])
        users, items = keys // table.n_items, keys % table.n_items
        _, r = np.unique(users, return_inverse=True)
        known = torch.zeros(table.n_items, dtype=torch.bool)
        known[torch.from_numpy(items)] = True

        def build(point: Mapping[str, Any]) -> MFFoldInFitted:
            _, v = ials(
                r.astype(np.int64),
                items.astype(np.int64),
                int(r.max()) + 1 if r.size else 0,
                table.n_items,
                factors=st.factors,
                alpha=point["alpha"],
                reg=point["reg"],
                iterations=st.iterations,
                cg_steps=st.cg_steps,
                seed=data.seed,
            )
            v[~known] = (
                0.0  # an item without a meta-train interaction carries no taste: it scores 0
            )
            return MFFoldInFitted(table, v, alpha=point["alpha"], reg=point["reg"])

        grid = [{"alpha": a, "reg": g} for a in st.alphas for g in st.regs]
        best, log = tune("mf-foldin", grid, build, data, self.protocol)
        best.tuning = log
        return best


def make_mf_foldin(scenario: Any = None, **settings: Any) -> MFFoldInMethod:
    """``mf-foldin`` over the scenario's protocol; ``settings``: see :class:`MFSettings`."""
    return MFFoldInMethod(parse(MFSettings, "mf-foldin", scenario, settings), Protocol.of(scenario))
