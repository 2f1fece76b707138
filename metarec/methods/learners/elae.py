"""``elae``: an episodic linear autoencoder, meta-trained in closed form on k-shot tasks to rank.

A cold user arrives with ``k`` interactions (the support ``S``); the method scores every item of
the catalogue as a linear function of the support's indicator row ``s`` (``1`` on the ``k``
support items, a constant ``1`` for the intercept):

``scores = [s, 1] B_k``,  ``B_k`` of shape ``(m + 1, m)`` over the ``m`` modelled items.

``B_k`` is *meta-trained for k shots*: over the meta-train users, it minimises the expected
squared error of predicting each user's **held-out relevant items** from a random ``k``-item
support drawn from that user's own interactions, the exact expectation over every such support
(no sampling), plus ``lambda ||B||^2``:

``B_k = argmin_B  sum_u E_{S ~ k-subsets of u} || y_u(S) - [s, 1] B ||^2 + lambda ||B||^2``

with ``y_u(S)_j = t_uj [j not in S]`` (``t_uj = 1`` when user ``u``'s interaction with ``j`` is
relevant: rating >= the relevance threshold on explicit data, every interaction on implicit
data). This is the task distribution the method meets at test time: a model fit to whole
histories (EASE^R, Steck 2019) sees dense input rows in training and ``k``-item rows at test
time, and must be shrunk heavily to rank well; ``elae`` is trained on exactly what it will be
given. The inclusion probabilities of a uniform ``k``-subset of a user's ``n_u`` items are
``q_u = k / n_u`` for one item and ``q2_u = k (k - 1) / (n_u (n_u - 1))`` for a pair, so with
``X`` the users' interaction indicators and ``T`` their relevance indicators

``A = X' diag(q2) X + diag(X' (q - q2))``,  ``C = X' diag(q - q2) T`` with ``C_jj = 0``

(plus one intercept row and column: ``E[1 . s_j] = sum_u q_u x_uj``, ``E[1 . y_j] = sum_u (1 -
q_u) t_uj``) and ``B_k = (A + lambda I)^-1 C`` (:func:`kshot_moments`, :func:`solve_ridge`).
One ``B_k`` is solved per support size of ``settings.shots``; ``lambda`` is chosen per ``k`` on
**meta-val** users by nDCG@10 over the catalogue: in a ranking scenario (``protocol.ranking``)
on the protocol's own meta-val tasks at ``k`` shots (their support pools, queries and state
catalogue, :func:`metarec.methods.catalogue.evaluate_ranking`), as the baselines are tuned;
otherwise on seeded random ``k``-item supports of meta-val users, the rest of their relevant
items held out, against every modelled item outside the support. ``adapt`` picks, per task, the
``B_k`` of the nearest support size (in log scale) and scores the catalogue with one
sparse-by-dense product; there is no gradient step at adaptation, so it takes microseconds per
user.

Scope: users cold on items seen in meta-train (the warm and user-cold states, a new domain's
users when its items are known). Items with no meta-train interaction (cold items) are outside
the model and get the lowest score of their row; use a content-based method for them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.algorithms.kshot import kshot_moments, kshot_moments_projected, solve_ridge
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.pool import TaskPool
from metarec.episodes.splits import MetaSplits
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.learners._settings import parse_settings
from metarec.methods.ranking._common import Protocol
from metarec.methods.ranking.by_shots import nearest_shot
from metarec.train.log import TrainingLog
from metarec.train.outer import Step, Validation, outer_loop

__all__ = [
    "ElaeSettings",
    "ElaeMethod",
    "ElaeFitted",
    "ElaeAdapted",
    "catalogue_ndcg",
    "make_elae",
]


_METRIC = "ndcg@10_all"  # meta-val selection: nDCG@10 over the catalogue (see catalogue_ndcg)


@dataclass(frozen=True)
class ElaeSettings:
    """``elae``'s settings (scenario table ``[learners.elae]``, ``--set learners.elae.KEY=...``).

    Fields:
        shots: the support sizes to meta-train one ``B_k`` for (``()``: the scenario's
            ``bench.shots`` and ``protocol.n_support``, else ``1, 3, 5, 10, 20``); a task is
            adapted with the ``B_k`` of the nearest size in log scale.
        lambdas: the ridge strengths tried per ``k``; the best on meta-val nDCG@10 is kept.
        relevance: explicit feedback: a rating at least this is relevant (``None``: the
            protocol's ``relevance`` when set, else ``low + 0.75 (high - low)`` of the rating
            scale, 4 on 1..5); implicit feedback: every interaction is relevant.
        val_tasks: meta-val users used for the choice of ``lambda`` (seeded subset).
        max_items: the most items modelled per side (the most interacted in meta-train).
        rank: ``None`` (default): the full model while the inputs number at most
            ``dense_limit`` (a dense ``(h + m + 1)``-square solve: ``O((h + m)^3)`` time, ``8 (h +
            m)^2`` bytes), else inputs projected on ``256`` basis vectors per side; an integer
            forces that many (the top right singular vectors of the meta-train interaction
            matrix: ``z = [H Ph, s P, 1]``, :func:`~metarec.algorithms.kshot.kshot_moments_projected`);
            0 forces the full model.
        dense_limit: the most inputs (``h + m``) of the full model when ``rank`` is ``None``.
        seed: seeds the meta-val subset and its support draws (``None``: the fit's seed).
        history: with several domains, feed each user's meta-train source-domain interactions
            as an always-present input block (cold users of a target domain); ``False`` uses
            the target support alone.
        history_norm: a history row is divided by (its number of items) to this power (0, the
            default: raw
            indicators; 0.5: long and short histories weigh alike in norm).
    """

    shots: tuple[int, ...] = ()
    lambdas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
    relevance: float | None = None
    val_tasks: int = 512
    max_items: int = 200_000
    rank: int | None = None
    dense_limit: int = 8_000
    seed: int | None = None
    history: bool = True
    history_norm: float = 0.0

    def __post_init__(self) -> None:
        if any(int(k) < 1 for k in self.shots):
            raise ConfigError(
                f"shots={list(self.shots)}: each support size must be >= 1; e.g. shots = [1, 3, 5, "
                "10, 20]"
            )
        if not self.lambdas or any(not (float(x) > 0 and math.isfinite(x)) for x in self.lambdas):
            raise ConfigError(
                f"lambdas={list(self.lambdas)}: give at least one finite ridge strength > 0; "
                "e.g. lambdas = [0.3, 1.0, 3.0]"
            )
        if self.val_tasks < 1:
            raise ConfigError(f"val_tasks={self.val_tasks}: must be >= 1; e.g. val_tasks = 512")
        if self.max_items < 2:
            raise ConfigError(f"max_items={self.max_items}: must be >= 2; e.g. max_items = 200000")
        if self.rank is not None and self.rank < 0:
            raise ConfigError(
                f"rank={self.rank}: must be >= 1 (low rank), 0 (the full model) or none (automatic)"
            )


def catalogue_ndcg(
    scores: torch.Tensor, exclude: torch.Tensor, relevant: torch.Tensor, k: int = 10
) -> torch.Tensor:
    """nDCG@k of each row's top-``k`` over the candidates (``~exclude``), binary gains.

    ``DCG = sum_{r=1}^{k} rel_(r) / log2(r + 1)`` over the ``k`` best-scored candidates;
    ``IDCG`` takes ``min(k, |relevant|)`` hits. Rows with no relevant candidate get ``NaN``.
    ``scores``, ``exclude`` and ``relevant`` are ``(T, m)``; returns ``float64 (T,)``.
    """
    s = scores.masked_fill(exclude, -math.inf)
    k = min(k, s.shape[1])
    top = torch.topk(s, k, dim=1).indices
    rel = (relevant & ~exclude).double()
    disc = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    dcg = (rel.gather(1, top) * disc).sum(dim=1)
    n_rel = rel.sum(dim=1).clamp(max=k).long()
    idcg = torch.cumsum(disc, 0)[(n_rel - 1).clamp(min=0)]
    return torch.where(n_rel > 0, dcg / idcg, torch.full_like(dcg, math.nan))


# --------------------------------------------------------------------------- the method


def _relevance(table: InteractionTable, threshold: float | None) -> np.ndarray:
    """Per table row: is the interaction relevant (see :class:`ElaeSettings`'s ``relevance``)."""
    if table.feedback == "implicit":
        return table.ratings > 0
    if threshold is None:
        lo, hi = table.rating_scale or (float(table.ratings.min()), float(table.ratings.max()))
        threshold = lo + 0.75 * (hi - lo)
    return table.ratings >= threshold


def _indicators(
    table: InteractionTable,
    rows: np.ndarray,
    users: np.ndarray,
    col: np.ndarray,
    width: int,
    values: np.ndarray | None = None,
    sparse: bool = False,
) -> torch.Tensor:
    """``float64 (len(users), width)``: 1 (or ``values[row]``) at ``(user, col[item])`` for each
    row of ``rows`` whose user is in ``users`` (sorted) and whose item is modelled (``col >= 0``);
    a coalesced sparse COO tensor with ``sparse`` (a repeated pair counts once)."""
    c = col[table.items[rows]]
    pos = np.searchsorted(users, table.users[rows])
    pos = np.minimum(pos, max(len(users) - 1, 0))
    keep = (c >= 0) & (len(users) > 0) & (users[pos] == table.users[rows])
    ui, ci = torch.from_numpy(pos[keep]), torch.from_numpy(c[keep])
    v = (
        torch.ones(len(ui), dtype=torch.float64)
        if values is None
        else torch.from_numpy(values[rows][keep].astype(np.float64))
    )
    if sparse:
        key = np.unique(pos[keep] * width + c[keep], return_index=True)[1]
        idx = torch.stack([ui[key], ci[key]])
        return torch.sparse_coo_tensor(
            idx, v[key], (len(users), width), check_invariants=True
        ).coalesce()
    out = torch.zeros(len(users), width, dtype=torch.float64)
    out[ui, ci] = v
    return out


def _scale_rows(M: torch.Tensor, power: float) -> torch.Tensor:
    """Each row of ``M`` (dense or sparse COO) divided by its sum to the power ``power``."""
    if power == 0:
        return M
    if M.is_sparse:
        M = M.coalesce()
        sums = torch.sparse.sum(M, dim=1).to_dense().clamp(min=1.0)
        v = M.values() * sums[M.indices()[0]] ** -power
        return torch.sparse_coo_tensor(M.indices(), v, M.shape, check_invariants=True).coalesce()
    return M * M.sum(dim=1, keepdim=True).clamp(min=1.0) ** -power


def _basis(M: torch.Tensor, rank: int, seed: int) -> torch.Tensor:
    """``(columns, r)``: the top right singular vectors of ``M`` (randomised, seeded; ``r =
    min(rank, columns)``) -- the input basis of a low-rank model."""
    r = min(rank, M.shape[1], M.shape[0])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _, _, V = torch.svd_lowrank(M, q=r, niter=3)
    return V[:, :r].contiguous()


def _columns(items: np.ndarray, n: int) -> np.ndarray:
    col = np.full(n, -1, dtype=np.int64)
    col[items] = np.arange(len(items))
    return col


def _top_items(table: InteractionTable, rows: np.ndarray, cap: int) -> np.ndarray:
    """The items of ``rows`` (at most ``cap``: the most interacted), ascending."""
    counts = np.bincount(table.items[rows], minlength=table.n_items)
    items = np.flatnonzero(counts > 0)
    if len(items) > cap:
        items = np.sort(items[np.argsort(-counts[items], kind="stable")[:cap]])
    return items


@dataclass
class ElaeAdapted:
    """The catalogue scores of ``T`` adapted tasks: ``(T, n_items)`` of the table's items.

    The scores order items for a user; they are not ratings (``score_kind = "rank"``: no error
    metric is computed on them and they are never clipped to a rating scale).
    """

    score_kind = "rank"
    table_scores: torch.Tensor

    @property
    def n_tasks(self) -> int:
        return int(self.table_scores.shape[0])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` item indices -> ``(T, N)`` scores (``users`` unused: the task is the user)."""
        return self.table_scores.to(items.device).gather(1, items)

    def score_catalogue(self, items: torch.Tensor) -> torch.Tensor:
        """``(C,)`` item indices -> ``(T, C)`` scores of every task for those items."""
        return self.table_scores.to(items.device)[:, items]


class ElaeFitted:
    """The meta-trained ``B_k`` (one per support size) over the modelled items.

    Attributes:
        items: ``int64 (m,)`` the modelled (target) items: the column order of each ``B_k``.
        source_items: ``int64 (h,)`` the modelled source-domain items (empty when the scenario
            has one domain): the first ``h`` input rows of each ``B_k``.
        hist_ptr, hist_cols: each table user's meta-train source-domain items as CSR
            (``hist_cols[hist_ptr[u]:hist_ptr[u + 1]]``, columns into ``source_items``).
        shots: the support sizes, ascending; ``B[i]`` is ``B_{shots[i]}``, ``(h + m + 1, m)``
            (or ``(r_h + r + 1, m)`` over the bases).
        P, Ph: ``(m, r)`` and ``(h, r_h)`` input bases of a low-rank model, or ``None`` (the
            full model).
        lambdas: the ridge strength chosen on meta-val per support size.
        val_ndcg: the meta-val nDCG@10 of each chosen ``B_k``.
    """

    score_kind = "rank"  # its scores order items; they are not ratings (never clipped)

    def __init__(
        self,
        table: InteractionTable,
        items: torch.Tensor,
        shots: Sequence[int],
        B: Sequence[torch.Tensor],
        lambdas: Sequence[float],
        val_ndcg: Sequence[float] = (),
        source_items: torch.Tensor | None = None,
        hist_ptr: torch.Tensor | None = None,
        hist_cols: torch.Tensor | None = None,
    ) -> None:
        self.name, self.table = "elae", table
        self.items = items.long()
        self.source_items = (
            torch.zeros(0, dtype=torch.long) if source_items is None else source_items.long()
        )
        self.hist_ptr = (
            torch.zeros(table.n_users + 1, dtype=torch.long) if hist_ptr is None else hist_ptr
        )
        self.hist_cols = torch.zeros(0, dtype=torch.long) if hist_cols is None else hist_cols
        self.shots = [int(k) for k in shots]
        self.B = list(B)
        self.lambdas = [float(x) for x in lambdas]
        self.val_ndcg = [float(x) for x in val_ndcg]
        self.history_norm = 0.0
        self.P: torch.Tensor | None = None
        self.Ph: torch.Tensor | None = None
        self.training_log = TrainingLog()

    def _project(self, Z: torch.Tensor) -> torch.Tensor:
        """Input rows ``[H_u, s, 1]`` -> ``[H_u Ph, s P, 1]`` (unchanged for the full model)."""
        if self.P is None:
            return Z
        h = len(self.source_items)
        parts = []
        if h and self.Ph is not None:
            parts.append(Z[:, :h] @ self.Ph.to(Z.dtype))
        parts += [Z[:, h:-1] @ self.P.to(Z.dtype), Z[:, -1:]]
        return torch.cat(parts, dim=1)

    def inputs(self, support: EpisodeSet, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(T, h + m + 1)`` input rows ``[H_u, s, 1]`` of the tasks of ``support``: the task
        user's meta-train source history plus any source-domain item in the support, the
        support's modelled target items (indicators: a repeated item counts once), 1."""
        h, m = len(self.source_items), len(self.items)
        n = self.table.n_items
        col = torch.as_tensor(_columns(self.items.numpy(), n))
        scol = torch.as_tensor(_columns(self.source_items.numpy(), n))
        items, mask = support.items.cpu(), support.mask.cpu()
        dtype = dtype or (self.B[0].dtype if self.B else torch.float32)
        Z = torch.zeros(items.shape[0], h + m + 1, dtype=dtype)
        rows = torch.arange(items.shape[0])[:, None].expand_as(items)
        c, sc = col[items], scol[items]
        tgt, src = mask & (c >= 0), mask & (sc >= 0)
        Z[rows[tgt], h + c[tgt]] = 1.0
        Z[rows[src], sc[src]] = 1.0
        if h:
            first = mask.float().argmax(dim=1)
            user = support.users.cpu().gather(1, first[:, None]).squeeze(1)
            for t, u in enumerate(user.tolist()):
                if bool(mask[t].any()) and 0 <= u < self.table.n_users:
                    Z[t, self.hist_cols[self.hist_ptr[u] : self.hist_ptr[u + 1]]] = 1.0
            Z[:, :h] *= Z[:, :h].sum(dim=1, keepdim=True).clamp(min=1.0) ** -self.history_norm
        Z[:, -1] = 1.0
        return Z

    def scores(self, support: EpisodeSet) -> torch.Tensor:
        """``(T, m)`` scores of the modelled items for each task of ``support``."""
        Z = self.inputs(support)
        h = len(self.source_items)
        which = nearest_shot(self.shots, (Z[:, h:-1] > 0).sum(dim=1))
        Z = self._project(Z)
        out = torch.empty(Z.shape[0], len(self.items), dtype=self.B[0].dtype)
        for i in which.unique().tolist():
            sel = which == i
            out[sel] = Z[sel] @ self.B[i]  # (tasks, inputs) @ (inputs, m)
        return out

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> ElaeAdapted:
        """Score the catalogue for each task of ``support`` (no gradient step: ``steps`` and
        ``lr`` are ignored). Items outside the model get their row's lowest score."""
        s = self.scores(support)  # (T, m)
        floor = s.min(dim=1, keepdim=True).values if s.shape[1] else s.new_zeros(s.shape[0], 1)
        full = floor.expand(s.shape[0], self.table.n_items).clone()
        full[:, self.items] = s
        return ElaeAdapted(full.float())

    def config(self) -> dict[str, Any]:
        return {
            "shots": self.shots,
            "lambdas": self.lambdas,
            "val_ndcg": self.val_ndcg,
            "n_modelled": len(self.items),
            "n_source": len(self.source_items),
            "n_history": len(self.hist_cols),
            "history_norm": self.history_norm,
            "rank": 0 if self.P is None else int(self.P.shape[1]),
            "rank_history": 0 if self.Ph is None else int(self.Ph.shape[1]),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {
            "items": self.items.cpu(),
            "source_items": self.source_items.cpu(),
            "hist_ptr": self.hist_ptr.cpu(),
            "hist_cols": self.hist_cols.cpu(),
        }
        out.update({f"B.{k}": b.detach().cpu() for k, b in zip(self.shots, self.B, strict=True)})
        if self.P is not None:
            out["P"] = self.P.cpu()
        if self.Ph is not None:
            out["Ph"] = self.Ph.cpu()
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        want = {"items", "source_items", "hist_ptr", "hist_cols", *(f"B.{k}" for k in self.shots)}
        want |= {"P"} if self.P is not None else set()
        want |= {"Ph"} if self.Ph is not None else set()
        if set(state) != want:
            raise CheckpointError(
                f"state_dict: keys {sorted(state)} do not match elae's {sorted(want)}; the weights "
                "belong to another run; re-train"
            )
        m, h = int(state["items"].shape[0]), int(state["source_items"].shape[0])
        r = m if "P" not in state else int(state["P"].shape[1])
        rh = h if "Ph" not in state else int(state["Ph"].shape[1])
        if "P" in state and tuple(state["P"].shape) != (m, r):
            raise CheckpointError(
                f"state_dict: 'P' has shape {tuple(state['P'].shape)}, expected ({m}, rank); the "
                "weights belong to another run; re-train"
            )
        if "Ph" in state and tuple(state["Ph"].shape) != (h, rh):
            raise CheckpointError(
                f"state_dict: 'Ph' has shape {tuple(state['Ph'].shape)}, expected ({h}, rank); the "
                "weights belong to another run; re-train"
            )
        for k in self.shots:
            if tuple(state[f"B.{k}"].shape) != (rh + r + 1, m):
                raise CheckpointError(
                    f"state_dict: 'B.{k}' has shape {tuple(state[f'B.{k}'].shape)}, expected "
                    f"{(rh + r + 1, m)} for {m} modelled and {h} source items; the weights belong "
                    "to another run; re-train"
                )
        top = max([int(x.max()) for x in (state["items"], state["source_items"]) if len(x)] or [0])
        if top >= self.table.n_items or len(state["hist_ptr"]) != self.table.n_users + 1:
            raise CheckpointError(
                f"state_dict: its items (up to {top}) or users ({len(state['hist_ptr']) - 1}) do "
                f"not fit this table ({self.table.n_items} items, {self.table.n_users} users); the "
                "weights belong to another run; re-train"
            )
        self.items = state["items"].long()
        self.source_items = state["source_items"].long()
        self.hist_ptr, self.hist_cols = state["hist_ptr"].long(), state["hist_cols"].long()
        self.B = [state[f"B.{k}"].float() for k in self.shots]
        self.P = state["P"].float() if "P" in state else None
        self.Ph = state["Ph"].float() if "Ph" in state else None

    @classmethod
    def build(cls, name: str, config: Mapping[str, Any], table: InteractionTable) -> ElaeFitted:
        shots = [int(k) for k in config.get("shots", [1])]
        m, h = int(config.get("n_modelled", 1)), int(config.get("n_source", 0))
        r, rh = int(config.get("rank", 0)), int(config.get("rank_history", 0))
        width = (rh if rh else h) + (r if r else m) + 1
        out = cls(
            table,
            torch.zeros(m, dtype=torch.long),
            shots,
            [torch.zeros(width, m) for _ in shots],
            config.get("lambdas", [1.0] * len(shots)),
            config.get("val_ndcg", ()),
            torch.zeros(h, dtype=torch.long),
            torch.zeros(table.n_users + 1, dtype=torch.long),
            torch.zeros(int(config.get("n_history", 0)), dtype=torch.long),
        )
        out.history_norm = float(config.get("history_norm", 0.0))
        out.P = torch.zeros(m, r) if r else None
        out.Ph = torch.zeros(h, rh) if rh else None
        return out


@dataclass
class _ValTasks:
    """Meta-val users as k-shot tasks over the modelled columns: per user, a seeded order."""

    users: list[int] = field(default_factory=list)
    cols: list[np.ndarray] = field(default_factory=list)  # modelled columns, shuffled
    rel: list[np.ndarray] = field(default_factory=list)  # relevance, same order

    def batch(self, k: int, fitted: ElaeFitted) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Z (V, h + m + 1), exclude (V, m), relevant (V, m))``, the first ``k`` as support."""
        V, m = len(self.cols), len(fitted.items)
        items = torch.zeros(V, k, dtype=torch.long)
        ex = torch.zeros(V, m, dtype=torch.bool)
        rel = torch.zeros(V, m, dtype=torch.bool)
        for v, (c, r) in enumerate(zip(self.cols, self.rel, strict=True)):
            items[v] = fitted.items[torch.from_numpy(c[:k])]
            ex[v, c[:k]] = True
            rel[v, c[k:][r[k:]]] = True
        users = torch.tensor(self.users, dtype=torch.long)[:, None].expand(V, k)
        sup = EpisodeSet(users, items, torch.ones(V, k), torch.ones(V, k, dtype=torch.bool))
        return fitted.inputs(sup, torch.float64), ex, rel


def _val_tasks(
    table: InteractionTable,
    pool: TaskPool,
    col: np.ndarray,
    relevant: np.ndarray,
    n: int,
    max_k: int,
    seed: int,
) -> _ValTasks:
    rng = np.random.default_rng([seed, 11])
    out = _ValTasks()
    for j in rng.permutation(len(pool)):
        rows = pool.unit_rows(int(j))
        c = col[table.items[rows]]
        keep = c >= 0
        c, r = c[keep], relevant[rows][keep]
        c, first = np.unique(c, return_index=True)  # one entry per item
        r = r[first]
        if len(c) <= max_k or not r.any():
            continue
        order = rng.permutation(len(c))
        out.users.append(int(table.users[rows[0]]))
        out.cols.append(c[order])
        out.rel.append(r[order])
        if len(out.cols) >= n:
            break
    return out


def _target_domain(table: InteractionTable, splits: MetaSplits) -> int | None:
    """The domain the evaluation pools rank in (the most common among their rows), or ``None``
    when the table has one domain."""
    if table.n_domains < 2:
        return None
    rows = [p.rows for name, p in splits.pools.items() if name != splits.train and len(p)]
    if not rows:
        return None
    return int(np.bincount(table.domains[np.concatenate(rows)]).argmax())


class ElaeMethod:
    """Meta-trains ``elae`` (see the module docstring) on a fit's meta-train pool."""

    name = "elae"

    def __init__(
        self,
        settings: ElaeSettings,
        shots: Sequence[int] = (1, 3, 5, 10, 20),
        protocol: Protocol | None = None,
    ) -> None:
        self.settings = settings
        self.shots = sorted({int(k) for k in (settings.shots or shots)})
        self.protocol = (
            protocol if protocol is not None and protocol.relevance is not None else None
        )

    def _protocol_ndcg(self, fitted: ElaeFitted, k: int, B: torch.Tensor, data: FitData) -> float:
        """Meta-val ``ndcg@10_all`` of ``B`` used at every support size, on the ranking
        protocol's own meta-val tasks at ``k`` shots (its support pools and queries)."""
        assert self.protocol is not None
        one = copy.copy(fitted)
        one.shots, one.B = [k], [B.float()]
        ev = evaluate_ranking(
            one,
            data.table,
            data.splits,
            data.splits.val,
            replace(self.protocol.sampler, n_support=k),
            relevance=self.protocol.relevance,
            max_tasks=self.settings.val_tasks,
            seed=data.seed,
        )
        return float(ev[_METRIC])

    def fit(self, data: FitData) -> ElaeFitted:
        st, table, splits = self.settings, data.table, data.splits
        rows = splits.pools[splits.train].rows
        relevant = _relevance(table, st.relevance)
        tdom = _target_domain(table, splits)
        in_target = np.ones(len(rows), bool) if tdom is None else table.domains[rows] == tdom
        trows, srows = rows[in_target], rows[~in_target]
        if not st.history:
            srows = srows[:0]
        items = _top_items(table, trows, st.max_items)
        if len(items) < 2:
            raise ConfigError(
                f"elae: meta-train holds {len(items)} target item(s) with interactions; it needs "
                "at least 2 to rank; check the split (protocol.split) and the data"
            )
        src = _top_items(table, srows, st.max_items) if len(srows) else np.zeros(0, np.int64)
        col, scol = _columns(items, table.n_items), _columns(src, table.n_items)
        users = np.unique(table.users[trows])  # the meta-train users with target interactions
        m, h = len(items), len(src)
        rank = st.rank if st.rank is not None else (0 if h + m <= st.dense_limit else 256)
        sparse = rank > 0
        X = _indicators(table, trows, users, col, m, sparse=sparse)
        T = _indicators(table, trows, users, col, m, relevant, sparse=sparse)
        H = _indicators(table, srows, users, scol, h, sparse=sparse) if h else None
        if H is not None:
            H = _scale_rows(H, st.history_norm)
        # every table user's meta-train source history, as CSR over the source columns
        hs = srows[scol[table.items[srows]] >= 0]
        order = np.lexsort((scol[table.items[hs]], table.users[hs]))
        hs = hs[order]
        ptr = np.concatenate(
            [[0], np.cumsum(np.bincount(table.users[hs], minlength=table.n_users))]
        )
        fitted = ElaeFitted(
            table,
            torch.from_numpy(items),
            self.shots,
            [],
            [],
            source_items=torch.from_numpy(src),
            hist_ptr=torch.from_numpy(ptr).long(),
            hist_cols=torch.from_numpy(scol[table.items[hs]]).long(),
        )
        fitted.history_norm = st.history_norm
        seed = data.seed if st.seed is None else st.seed
        P = Ph = None
        if rank:
            P = _basis(X, rank, seed)
            Ph = _basis(H, rank, seed) if H is not None else None
            fitted.P = P.float()
            fitted.Ph = None if Ph is None else Ph.float()
        val = _val_tasks(
            table, splits.pools[splits.val], col, relevant, st.val_tasks, max(self.shots), seed
        )
        Bs: list[torch.Tensor] = []
        log_rows: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        n_users = max(int(X.shape[0]), 1)
        for k in self.shots:
            if P is not None:
                A, C = kshot_moments_projected(X, T, k, P, H, Ph)
            else:
                A, C = kshot_moments(X, T, k, H)
            Z, ex, rel = val.batch(k, fitted) if val.cols else (None, None, None)
            if Z is not None and self.protocol is None:
                Z = fitted._project(Z)
            tried: dict[int, torch.Tensor] = {}
            kept: dict[str, Any] = {}

            def solve(i: int, A=A, C=C, tried=tried) -> Step:
                try:
                    B = solve_ridge(A, C, st.lambdas[i])
                except ConfigError:  # not positive definite at this strength: never chosen
                    return Step(loss=math.nan, skipped=True)
                tried[i] = B
                # the expected k-shot loss per user, up to its constant: tr(B'AB) - 2 tr(B'C)
                loss = float(((A @ B) * B).sum() - 2.0 * (C * B).sum()) / n_users
                return Step(loss=loss)

            def check(tried=tried, Z=Z, ex=ex, rel=rel, k=k) -> Validation:
                if not tried:  # nothing solved yet
                    return Validation(-math.inf, {_METRIC: math.nan})
                i = max(tried)
                if Z is None:  # no meta-val user: the first strength that solves
                    return Validation(-float(i), {_METRIC: math.nan})
                if self.protocol is not None:  # the scenario's own meta-val protocol
                    nd = self._protocol_ndcg(fitted, k, tried[i], data)
                else:
                    nd = float(torch.nanmean(catalogue_ndcg(Z @ tried[i], ex, rel)))
                return Validation(nd, {_METRIC: nd})

            def keep(step: int, tried=tried, kept=kept) -> None:
                kept["i"] = max(tried)

            state = outer_loop(
                solve,
                steps=len(st.lambdas),
                val_every=1,
                validate=check,
                keep_best=keep,
                progress=data.progress,
                desc=f"elae k={k}",
                unit="solve",
            )
            if "i" not in kept:
                raise ConfigError(
                    f"elae: no ridge strength of lambdas={list(st.lambdas)} gives a solvable "
                    f"system for k={k}; add larger values (--set learners.elae.lambdas=[1.0, 10.0, "
                    "100.0])"
                )
            for row in state.rows:
                log_rows.append(
                    {
                        **row,
                        "step": len(log_rows) + 1,
                        "k": k,
                        "lambda": st.lambdas[row["step"] - 1],
                    }
                )
            fitted.lambdas.append(st.lambdas[kept["i"]])
            fitted.val_ndcg.append(float(state.best_val.get(_METRIC, math.nan)))
            Bs.append(tried[kept["i"]].float())
        fitted.B = Bs
        fitted.training_log = TrainingLog(
            steps=len(log_rows),
            best_step=len(log_rows),  # every support size keeps its own best: all are used
            seconds=time.perf_counter() - t0,
            budget=len(self.shots) * len(st.lambdas),
            skipped_steps=sum(1 for r in log_rows if r.get("skipped")),
            metric=_METRIC,
            best_val={
                f"{_METRIC}@k={k}": v for k, v in zip(self.shots, fitted.val_ndcg, strict=True)
            },
            rows=tuple(log_rows),
        )
        return fitted


def make_elae(scenario: Any = None, **settings: Any) -> ElaeMethod:
    """``elae`` from a scenario (``[learners.elae]``) and keyword overrides."""
    defaults: dict[str, Any] = {}
    shots: list[int] = [1, 3, 5, 10, 20]
    if scenario is not None:
        bench = getattr(scenario, "bench", None)
        proto = scenario.protocol
        got = [int(k) for k in (getattr(bench, "shots", None) or [])]
        if isinstance(proto.n_support, int):
            got.append(int(proto.n_support))
        if got:
            shots = got
        rel = getattr(proto, "relevance", None)
        if rel is not None:
            defaults["relevance"] = rel
    st = parse_settings(ElaeSettings, "elae", settings, defaults, scenario)
    return ElaeMethod(st, shots, Protocol.of(scenario) if scenario is not None else None)


register_method(
    "elae",
    make_elae,
    loader=ElaeFitted.build,
    tags=MethodTags(units=("user",), family="learner", ranks=True),
    replace=True,
)
