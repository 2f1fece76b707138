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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.algorithms.kshot import kshot_moments, kshot_moments_projected, solve_ridge
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.pool import TaskPool
from metarec.episodes.splits import MetaSplits
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.learners._elae_fitted import ElaeAdapted, ElaeFitted, _columns
from metarec.methods.learners._settings import parse_settings
from metarec.methods.ranking._common import Protocol
from metarec.metrics.catalogue import catalogue_metrics
from metarec.metrics.select import RANK_SELECT_METRIC
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


# meta-val selection: nDCG@10 over the catalogue (see catalogue_ndcg)
_METRIC = RANK_SELECT_METRIC[0]


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
            default: raw indicators; 0.5: long and short histories weigh alike in norm).
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
    """nDCG@k of each row's ranking of its candidates (``~exclude``), binary gains, ties
    pessimistic: :func:`metarec.metrics.catalogue.catalogue_metrics`' ``ndcg@k_all``.
    ``scores``, ``exclude`` and ``relevant`` are ``(T, m)``; returns ``float64 (T,)`` (``NaN``
    for a row with no relevant candidate)."""
    cand = ~exclude
    out = catalogue_metrics(scores, cand, relevant & cand, recall_k=k, ndcg_k=k, hr_k=k)
    return out[f"ndcg@{k}_all"]


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


def _top_items(table: InteractionTable, rows: np.ndarray, cap: int) -> np.ndarray:
    """The items of ``rows`` (at most ``cap``: the most interacted), ascending."""
    counts = np.bincount(table.items[rows], minlength=table.n_items)
    items = np.flatnonzero(counts > 0)
    if len(items) > cap:
        items = np.sort(items[np.argsort(-counts[items], kind="stable")[:cap]])
    return items


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
        self.protocol = protocol if protocol is not None and protocol.ranking else None

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
        vpool = splits.pools[splits.val]  # a ranking protocol's own tasks, or seeded k-shot ones:
        own = (
            None
            if self.protocol is not None
            else _val_tasks(table, vpool, col, relevant, st.val_tasks, max(self.shots), seed)
        )
        no_val = len(vpool) == 0 if own is None else not own.cols
        Bs: list[torch.Tensor] = []
        log_rows: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        n_users = max(int(X.shape[0]), 1)
        for k in self.shots:
            if P is not None:
                A, C = kshot_moments_projected(X, T, k, P, H, Ph)
            else:
                A, C = kshot_moments(X, T, k, H)
            Z = ex = rel = None
            if own is not None and own.cols:
                Z, ex, rel = own.batch(k, fitted)
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
                if no_val:  # no meta-val user: the first strength that solves
                    return Validation(-float(i), {_METRIC: math.nan})
                if Z is None:  # the scenario's own meta-val protocol
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
