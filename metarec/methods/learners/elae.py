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
**meta-val** users by nDCG@10 over the catalogue (relevant held-out items against every
modelled item outside the support). ``adapt`` picks, per task, the ``B_k`` of the nearest support
size (in log scale) and scores the catalogue with one sparse-by-dense product; there is no
gradient step at adaptation, so it takes microseconds per user.

Scope: users cold on items seen in meta-train (the warm and user-cold states, a new domain's
users when its items are known). Items with no meta-train interaction (cold items) are outside
the model and get the lowest score of their row; use a content-based method for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.pool import TaskPool
from metarec.methods.base import FitData, register_method
from metarec.methods.learners._settings import parse_settings

__all__ = [
    "ElaeSettings",
    "ElaeMethod",
    "ElaeFitted",
    "ElaeAdapted",
    "kshot_moments",
    "solve_ridge",
    "catalogue_ndcg",
    "make_elae",
]


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
        max_items: the most items modelled (the most interacted in meta-train); the dense
            ``(m + 1, m)`` solve costs ``O(m^3)`` and ``8 m^2`` bytes.
        seed: seeds the meta-val subset and its support draws (``None``: the fit's seed).
    """

    shots: tuple[int, ...] = ()
    lambdas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    relevance: float | None = None
    val_tasks: int = 512
    max_items: int = 20_000
    seed: int | None = None

    def __post_init__(self) -> None:
        if any(int(k) < 1 for k in self.shots):
            raise ConfigError(
                f"shots={list(self.shots)}: each support size must be >= 1; e.g. shots = [1, 3, 5, 10, 20]"
            )
        if not self.lambdas or any(not (float(x) > 0 and math.isfinite(x)) for x in self.lambdas):
            raise ConfigError(
                f"lambdas={list(self.lambdas)}: give at least one finite ridge strength > 0; "
                "e.g. lambdas = [0.3, 1.0, 3.0]"
            )
        if self.val_tasks < 1:
            raise ConfigError(f"val_tasks={self.val_tasks}: must be >= 1; e.g. val_tasks = 512")
        if self.max_items < 2:
            raise ConfigError(f"max_items={self.max_items}: must be >= 2; e.g. max_items = 20000")


# --------------------------------------------------------------------------- the closed form


def kshot_moments(
    X: torch.Tensor, T: torch.Tensor, k: int, *, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """The expected normal equations of the ``k``-shot objective (see the module docstring).

    Args:
        X: ``(U, m)`` 0/1 interaction indicators of the meta-train users over the modelled items.
        T: ``(U, m)`` 0/1 relevance indicators (``T <= X``).
        k: the support size; a user with ``n_u <= k`` interactions keeps them all (``q_u = 1``).
        chunk: users per block (bounds the temporary memory to ``chunk x m``).

    Returns:
        ``(A, C)``: ``A (m + 1, m + 1)`` the expected Gram matrix of ``[s, 1]`` and ``C (m + 1,
        m)`` its expected cross moment with the held-out relevant items ``y``, summed over users,
        in ``X``'s dtype (the intercept is the last row/column).

    Example:
        >>> X = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
        >>> A, C = kshot_moments(X, X, k=1)
        >>> A[0, 1].item(), A[0, 0].item()    # never two items at once with one shot
        (0.0, 0.8333333333333333)
    """
    if X.shape != T.shape or X.dim() != 2:
        raise ConfigError(
            f"X {tuple(X.shape)} and T {tuple(T.shape)}: expected two (users, items) matrices of one shape"
        )
    if k < 1:
        raise ConfigError(f"k={k}: the support size must be >= 1")
    U, m = X.shape
    n = X.sum(dim=1)
    q = torch.clamp(k / n.clamp(min=1.0), max=1.0)
    pairs = torch.where(n > 1, k * (k - 1) / (n * (n - 1)).clamp(min=1.0), torch.zeros_like(n))
    q2 = torch.minimum(pairs, q)
    A = X.new_zeros(m + 1, m + 1)
    C = X.new_zeros(m + 1, m)
    for s in range(0, U, chunk):
        x, t = X[s : s + chunk], T[s : s + chunk]
        qq, qq2 = q[s : s + chunk], q2[s : s + chunk]
        A[:m, :m] += x.T @ (qq2[:, None] * x)
        C[:m] += x.T @ ((qq - qq2)[:, None] * t)
        A[m, :m] += qq @ x
        C[m] += (1.0 - qq) @ t
    # the diagonal: E[s_j^2] = q_u x_uj, not q2_u x_uj (an item is drawn once): add (q - q2) x
    A[:m, :m] += torch.diag(X.T @ (q - q2))
    A[:m, m] = A[m, :m]
    A[m, m] = float(U)
    idx = torch.arange(m)
    C[idx, idx] = 0.0  # an item in the support is not held out
    return A, C


def solve_ridge(A: torch.Tensor, C: torch.Tensor, lam: float) -> torch.Tensor:
    """``(A + lam I)^-1 C`` by a Cholesky factorisation (``A`` symmetric positive semi-definite).

    Raises:
        ConfigError: the system is not positive definite (``lam`` too small for this data).
    """
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    L, info = torch.linalg.cholesky_ex(A + lam * eye)
    if int(info) != 0:
        raise ConfigError(
            f"lambda={lam}: A + lambda I is not positive definite; raise the ridge strength "
            "(--set learners.elae.lambdas=[1.0, 3.0, 10.0])"
        )
    return torch.cholesky_solve(C, L)


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


def _user_matrix(
    table: InteractionTable, rows: np.ndarray, col: np.ndarray, relevant: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, T)`` ``float64 (U, m)`` of the users of ``rows`` over modelled columns ``col``
    (``col[item]`` the column of an item, -1 when not modelled)."""
    c = col[table.items[rows]]
    keep = c >= 0
    users, inv = np.unique(table.users[rows][keep], return_inverse=True)
    X = torch.zeros(len(users), int(col.max()) + 1, dtype=torch.float64)
    T = torch.zeros_like(X)
    ui, ci = torch.from_numpy(inv), torch.from_numpy(c[keep])
    X[ui, ci] = 1.0
    T[ui, ci] = torch.from_numpy(relevant[rows][keep].astype(np.float64))
    return X, T


def _nearest(shots: Sequence[int], sizes: torch.Tensor) -> torch.Tensor:
    """Index into ``shots`` of the nearest support size in log scale, per task (size 0 -> the
    smallest)."""
    grid = torch.log(torch.tensor([float(k) for k in shots]))
    x = torch.log(sizes.double().clamp(min=1.0))
    return (x[:, None] - grid[None, :].double()).abs().argmin(dim=1)


@dataclass
class ElaeAdapted:
    """The catalogue scores of ``T`` adapted tasks: ``(T, n_items)`` of the table's items."""

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
        items: ``int64 (m,)`` the modelled table items (column order of each ``B_k``).
        shots: the support sizes, ascending; ``B[i]`` is ``B_{shots[i]}`` ``(m + 1, m)``.
        lambdas: the ridge strength chosen on meta-val per support size.
        val_ndcg: the meta-val nDCG@10 of each chosen ``B_k``.
    """

    def __init__(
        self,
        table: InteractionTable,
        items: torch.Tensor,
        shots: Sequence[int],
        B: Sequence[torch.Tensor],
        lambdas: Sequence[float],
        val_ndcg: Sequence[float] = (),
    ) -> None:
        self.name, self.table = "elae", table
        self.items = items.long()
        self.shots = [int(k) for k in shots]
        self.B = list(B)
        self.lambdas = [float(x) for x in lambdas]
        self.val_ndcg = [float(x) for x in val_ndcg]

    def _columns(self) -> torch.Tensor:
        col = torch.full((self.table.n_items,), -1, dtype=torch.long)
        col[self.items] = torch.arange(len(self.items))
        return col

    def scores(self, support: EpisodeSet) -> torch.Tensor:
        """``(T, m)`` scores of the modelled items for each task of ``support``."""
        m = len(self.items)
        col = self._columns()
        items, mask = support.items.cpu(), support.mask.cpu()
        c = col[items]
        real = mask & (c >= 0)
        S = torch.zeros(items.shape[0], m + 1, dtype=self.B[0].dtype)
        rows = torch.arange(items.shape[0])[:, None].expand_as(c)
        S[rows[real], c[real]] = 1.0  # a repeated item counts once (an indicator)
        S[:, m] = 1.0
        which = _nearest(self.shots, real.sum(dim=1))
        out = torch.empty(items.shape[0], m, dtype=self.B[0].dtype)
        for i in which.unique().tolist():
            sel = which == i
            out[sel] = S[sel] @ self.B[i]  # (tasks, m + 1) @ (m + 1, m)
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
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {"items": self.items.cpu()}
        out.update({f"B.{k}": b.detach().cpu() for k, b in zip(self.shots, self.B, strict=True)})
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        want = {"items", *(f"B.{k}" for k in self.shots)}
        if set(state) != want:
            raise CheckpointError(
                f"state_dict: keys {sorted(state)} do not match elae's {sorted(want)}; the weights "
                "belong to another run; re-train"
            )
        m = int(state["items"].shape[0])
        for k in self.shots:
            if tuple(state[f"B.{k}"].shape) != (m + 1, m):
                raise CheckpointError(
                    f"state_dict: 'B.{k}' has shape {tuple(state[f'B.{k}'].shape)}, expected "
                    f"{(m + 1, m)} for {m} modelled items; the weights belong to another run; re-train"
                )
        if m and int(state["items"].max()) >= self.table.n_items:
            raise CheckpointError(
                f"state_dict: modelled item {int(state['items'].max())} is outside this table's "
                f"{self.table.n_items} items; the weights belong to another run; re-train"
            )
        self.items = state["items"].long()
        self.B = [state[f"B.{k}"].float() for k in self.shots]

    @classmethod
    def build(cls, name: str, config: Mapping[str, Any], table: InteractionTable) -> ElaeFitted:
        shots = [int(k) for k in config.get("shots", [1])]
        m = int(config.get("n_modelled", 1))
        return cls(
            table,
            torch.zeros(m, dtype=torch.long),
            shots,
            [torch.zeros(m + 1, m) for _ in shots],
            config.get("lambdas", [1.0] * len(shots)),
            config.get("val_ndcg", ()),
        )


@dataclass
class _ValTasks:
    """Meta-val users as k-shot tasks over the modelled columns: per user, a seeded order."""

    cols: list[np.ndarray] = field(default_factory=list)  # modelled columns, shuffled
    rel: list[np.ndarray] = field(default_factory=list)  # relevance, same order

    def batch(self, k: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(S (V, m + 1), exclude (V, m), relevant (V, m))`` with the first ``k`` as support."""
        V = len(self.cols)
        S = torch.zeros(V, m + 1, dtype=torch.float64)
        S[:, m] = 1.0
        ex = torch.zeros(V, m, dtype=torch.bool)
        rel = torch.zeros(V, m, dtype=torch.bool)
        for v, (c, r) in enumerate(zip(self.cols, self.rel, strict=True)):
            S[v, c[:k]] = 1.0
            ex[v, c[:k]] = True
            rel[v, c[k:][r[k:]]] = True
        return S, ex, rel


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
        out.cols.append(c[order])
        out.rel.append(r[order])
        if len(out.cols) >= n:
            break
    return out


class ElaeMethod:
    """Meta-trains ``elae`` (see the module docstring) on a fit's meta-train pool."""

    name = "elae"

    def __init__(self, settings: ElaeSettings, shots: Sequence[int] = (1, 3, 5, 10, 20)) -> None:
        self.settings = settings
        self.shots = sorted({int(k) for k in (settings.shots or shots)})

    def fit(self, data: FitData) -> ElaeFitted:
        st, table, splits = self.settings, data.table, data.splits
        rows = splits.pools[splits.train].rows
        relevant = _relevance(table, st.relevance)
        counts = np.bincount(table.items[rows], minlength=table.n_items)
        items = np.flatnonzero(counts > 0)
        if len(items) > st.max_items:  # the most interacted, in index order
            items = np.sort(items[np.argsort(-counts[items], kind="stable")[: st.max_items]])
        if len(items) < 2:
            raise ConfigError(
                f"elae: meta-train holds {len(items)} item(s) with interactions; it needs at least 2 "
                "to rank; check the split (protocol.split) and the data"
            )
        col = np.full(table.n_items, -1, dtype=np.int64)
        col[items] = np.arange(len(items))
        X, T = _user_matrix(table, rows, col, relevant)
        seed = data.seed if st.seed is None else st.seed
        val = _val_tasks(
            table, splits.pools[splits.val], col, relevant, st.val_tasks, max(self.shots), seed
        )
        m = len(items)
        Bs, lams, scores = [], [], []
        for k in self.shots:
            A, C = kshot_moments(X, T, k)
            best: tuple[float, float, torch.Tensor | None] = (-math.inf, st.lambdas[0], None)
            for lam in st.lambdas:
                try:
                    B = solve_ridge(A, C, lam)
                except ConfigError:
                    continue
                if not val.cols:  # no meta-val user to choose with: the first strength that solves
                    best = (math.nan, lam, B)
                    break
                S, ex, rel = val.batch(k, m)
                nd = float(torch.nanmean(catalogue_ndcg(S @ B, ex, rel)))
                if nd > best[0]:
                    best = (nd, lam, B)
            if best[2] is None:
                raise ConfigError(
                    f"elae: no ridge strength of lambdas={list(st.lambdas)} gives a solvable system "
                    "for k={k}; add larger values (--set learners.elae.lambdas=[1.0, 10.0, 100.0])"
                )
            Bs.append(best[2].float())
            lams.append(best[1])
            scores.append(best[0])
        return ElaeFitted(table, torch.from_numpy(items), self.shots, Bs, lams, scores)


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
    return ElaeMethod(st, shots)


register_method("elae", make_elae, loader=ElaeFitted.build, replace=True)
