"""``metatower``: a two-tower retrieval meta-learner; the user tower adapts from the k support items.

The model (:mod:`metarec.models.retrieval_towers`) scores item ``i`` for a task as
``u . v_i + b_i``: ``(v_i, b_i)`` from the item tower (side features plus the item's own id
embedding), ``u`` from the user tower reading the task's support set (each support item's tower
output with its rating; mean or attention pooling), with optional extras:

* **history** (several domains): a cold user of the target domain also brings their meta-train
  source-domain interactions (at most ``history_len``, a seeded subset), read by a second set
  encoder: the same input ``elae`` and ``r2d2-source`` use;
* **user features** (when the table has them: MovieLens' age, gender, occupation, zip);
* **ridge head** (``head="ridge"``): ``u`` plus the closed-form ridge regression of the support's
  centred ratings (1 for implicit feedback) on the support items' embeddings,
  ``w = (V_s' V_s + lambda I)^-1 V_s' r_s`` (R2-D2 style, ``lambda`` meta-learned): a per-user
  correction in the items' own space.

**Meta-training** is episodic over the meta-train users of the target domain: each step draws
``batch`` users, a support of ``k`` random interactions per user (``k`` log-uniform over the
``shots`` range, at most one less than the user's count), and makes the user's other relevant
interactions (rating >= ``relevance``; every interaction with implicit feedback) the positives
of a **ranking loss** over the meta-train catalogue minus the support
(:mod:`metarec.algorithms.ranking_losses`): the full softmax when the catalogue has at most
``max_full_softmax`` items (``loss="auto"``), else the sampled softmax over ``negatives``
popularity-sampled items with the logQ correction; BPR on the same samples is an option. Each
step hides each item's id with probability ``id_dropout`` (the support's and the catalogue's
alike: DropoutNet), so the towers learn to place and to read items from their features alone;
that is how ``metatower`` ranks **cold items** (no meta-train interaction: scored through their
features; an item with neither an id nor features gets its row's lowest score).

**Selection** is on meta-val only: every ``val_every`` steps, nDCG@10 over the catalogue
(minus the support) of pinned meta-val tasks at every support size of ``shots`` (the same
positives at every size), averaged; when the table has item features and the scenario has
cold-item states, the mean of that and the same score with every id hidden (the cold-item
proxy). The best step is kept; ``patience`` evaluations without a gain stop early.

Adaptation is one forward pass of the user tower; :meth:`MetaTowerAdapted.score_catalogue`
scores any items for every task as one matmul.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec._errors import CheckpointError, ConfigError
from metarec.algorithms.ranking_losses import (
    catalogue_softmax,
    popularity_log_q,
    sampled_bpr,
    sampled_softmax,
)
from metarec.config import from_dict, to_dict
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.methods.base import FitData, register_method
from metarec.methods.learners._catalogue_tasks import (
    TaskBatch,
    UserLists,
    domain_rows,
    fixed_tasks,
    history_rows,
    relevance,
)
from metarec.methods.learners._encode import task_entity
from metarec.methods.learners._settings import parse_settings
from metarec.methods.learners.elae import catalogue_ndcg
from metarec.methods.learners.r2d2 import ridge_head
from metarec.models.base import seeded
from metarec.models.retrieval_towers import ItemTower, SetUserTower, forget_unseen_codes

__all__ = [
    "MetaTowerSettings",
    "MetaTowerMethod",
    "MetaTowerFitted",
    "MetaTowerAdapted",
    "make_metatower",
]

_LOSSES = ("auto", "softmax", "sampled-softmax", "bpr")


@dataclass(frozen=True)
class MetaTowerSettings:
    """``metatower``'s settings (scenario table ``[learners.metatower]``).

    Fields:
        dim: embedding size of the towers' outputs (the dot-product space).
        hidden: width of each tower's hidden layer and of the set encodings.
        feature_dim: embedding size of each side feature and of the item id.
        pool: ``"mean"`` or ``"attention"`` pooling of the support set.
        head: ``"none"`` or ``"ridge"`` (a per-user closed-form ridge correction, see the module).
        ridge: initial ridge strength of that head (then meta-learned).
        id_dropout: probability that a training step hides an item's id (``None``: 0.25 when
            the table has item features, else 0: without features a hidden item has nothing
            left to be placed by).
        loss: ``"auto"``, ``"softmax"`` (full catalogue), ``"sampled-softmax"`` (logQ
            corrected) or ``"bpr"``.
        negatives: sampled negatives per step (shared by the batch) of the sampled losses.
        sample_alpha: the sampler draws item ``j`` with probability ``∝ (count_j + 1)^alpha``.
        max_full_softmax: ``loss="auto"`` uses the full softmax up to this many catalogue items.
        shots: the support sizes: training draws ``k`` log-uniform over ``[min, max]``, meta-val
            scores each (``()``: the scenario's ``bench.shots`` and ``protocol.n_support``, else
            ``1, 3, 5, 10, 20``).
        steps, batch, lr, weight_decay: the outer loop (AdamW).
        val_every, val_tasks, patience: meta-val evaluations (``patience=None``: never stop).
        relevance: explicit feedback: a rating at least this is relevant (``None``: the
            protocol's, else 4 on 1..5).
        history, history_len: read each user's meta-train source-domain interactions (several
            domains only), at most ``history_len`` per user.
        user_features: feed the users' side features to the user tower (when the table has them).
        select: ``"auto"``, ``"warm"`` or ``"both"`` (with the id-hidden score; ``"auto"``:
            when the table has item features and the scenario has cold-item states).
        seed: seeds initialisation, task draws and meta-val tasks (``None``: the fit's seed).
    """

    dim: int = 64
    hidden: int = 128
    feature_dim: int = 32
    pool: str = "mean"
    head: str = "none"
    ridge: float = 1.0
    id_dropout: float | None = None
    loss: str = "auto"
    negatives: int = 1024
    sample_alpha: float = 0.75
    max_full_softmax: int = 50_000
    shots: tuple[int, ...] = ()
    steps: int = 1500
    batch: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    val_every: int = 150
    val_tasks: int = 512
    patience: int | None = 3
    relevance: float | None = None
    history: bool = True
    history_len: int = 100
    user_features: bool = True
    select: str = "auto"
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "feature_dim", "negatives", "batch", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name}={getattr(self, name)}: must be >= 1; e.g. {name}={_DEFAULTS[name]}"
                )
        for name, ok in (
            ("pool", ("mean", "attention")),
            ("head", ("none", "ridge")),
            ("loss", _LOSSES),
            ("select", ("auto", "warm", "both")),
        ):
            if getattr(self, name) not in ok:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r}: must be one of {list(ok)}; e.g. {name}={ok[0]!r}"
                )
        if self.id_dropout is not None and not 0.0 <= self.id_dropout < 1.0:
            raise ConfigError(
                f"id_dropout={self.id_dropout}: must be in [0, 1) or None (automatic); e.g. id_dropout=0.25"
            )
        if any(int(k) < 1 for k in self.shots):
            raise ConfigError(
                f"shots={list(self.shots)}: each support size must be >= 1; e.g. shots = [1, 3, 5, 10, 20]"
            )
        if self.steps < 0 or self.val_tasks < 1 or self.history_len < 1:
            raise ConfigError(
                f"steps={self.steps}, val_tasks={self.val_tasks}, history_len={self.history_len}: "
                "need steps >= 0, val_tasks >= 1 and history_len >= 1; e.g. steps=1500"
            )
        if not (self.lr > 0 and self.ridge > 0 and self.weight_decay >= 0):
            raise ConfigError(
                f"lr={self.lr}, ridge={self.ridge}, weight_decay={self.weight_decay}: need lr > 0, "
                "ridge > 0 and weight_decay >= 0; e.g. lr=0.003"
            )
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience={self.patience}: must be >= 1 or None (never stop early)")


_DEFAULTS = {
    "dim": 64,
    "hidden": 128,
    "feature_dim": 32,
    "negatives": 1024,
    "batch": 128,
    "val_every": 150,
}


class _Towers(nn.Module):
    """The item tower, the user tower and the ridge head's strength."""

    def __init__(
        self,
        table: InteractionTable,
        st: MetaTowerSettings,
        known: np.ndarray | None,
        history: bool,
        user_features: bool,
    ) -> None:
        super().__init__()
        self.items = ItemTower(
            table.n_items, st.dim, (st.hidden,), table.item_features, known, st.feature_dim
        )
        self.user = SetUserTower(
            st.dim,
            st.hidden,
            st.pool,
            history=history,
            user_features=table.user_features if user_features else None,
            feature_dim=st.feature_dim,
        )
        self.log_ridge = nn.Parameter(torch.tensor(math.log(st.ridge)))
        self.use_head = st.head == "ridge"

    def user_vectors(
        self,
        v: torch.Tensor,
        r: torch.Tensor,
        mask: torch.Tensor,
        history: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
        users: torch.Tensor,
    ) -> torch.Tensor:
        """``(T, dim)``: the user tower's vector, plus the ridge head's when ``head="ridge"``."""
        u = self.user(v, r, mask, history, users)
        if self.use_head:
            lam = self.log_ridge.exp().expand(v.shape[-1])
            u = u + ridge_head(v, r.to(v.dtype), mask, lam)
        return u


@dataclass
class MetaTowerAdapted:
    """``T`` adapted tasks: user vectors ``(T, dim)`` over item vectors ``(n_items, dim)``.

    Items in ``unscorable`` (no id and no features) get the lowest score of their row among the
    requested items.
    """

    users: torch.Tensor
    item_vectors: torch.Tensor
    item_bias: torch.Tensor
    unscorable: torch.Tensor

    @property
    def n_tasks(self) -> int:
        return int(self.users.shape[0])

    def _floor(self, s: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
        if not bool(bad.any()):
            return s
        inf = torch.full_like(s, math.inf)
        lo = torch.where(bad, inf, s).min(dim=-1, keepdim=True).values
        lo = torch.where(torch.isinf(lo), torch.zeros_like(lo), lo)
        return torch.where(bad, lo.expand_as(s), s)

    def score_catalogue(self, items: torch.Tensor) -> torch.Tensor:
        """``(C,)`` item indices -> ``(T, C)`` scores of every task (one matmul)."""
        items = items.to(self.item_vectors.device)
        s = self.users @ self.item_vectors[items].T + self.item_bias[items]  # (T, C)
        return self._floor(s, self.unscorable[items].expand_as(s))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` item indices -> ``(T, N)`` scores (``users`` unused: the task is the user)."""
        if items.dim() != 2 or items.shape[0] != self.n_tasks:
            raise ConfigError(
                f"score(items {tuple(items.shape)}): expected (T, N) with T={self.n_tasks} "
                "(one row per adapted task)"
            )
        items = items.to(self.item_vectors.device)
        v = self.item_vectors[items]  # (T, N, dim)
        s = (v * self.users.unsqueeze(1)).sum(-1) + self.item_bias[items]
        return self._floor(s, self.unscorable[items])


class MetaTowerFitted:
    """The meta-trained towers (see the module docstring).

    Attributes:
        towers: the ``nn.Module`` (item tower, user tower, ridge strength).
        catalogue: ``int64 (C,)`` the meta-train target items (the training catalogue).
        hist_items, hist_ratings, hist_mask: ``(n_users, H)`` each user's meta-train
            source-domain history (``H = 0`` without one).
        log: the training log (meta-val scores, the best step).
    """

    def __init__(
        self,
        table: InteractionTable,
        settings: MetaTowerSettings,
        towers: _Towers,
        catalogue: torch.Tensor,
        history: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        log: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.table, self.settings, self.towers = "metatower", table, settings, towers
        self.catalogue = catalogue.long()
        n = table.n_users
        self.hist_items, self.hist_ratings, self.hist_mask = history or (
            torch.zeros(n, 0, dtype=torch.long),
            torch.zeros(n, 0),
            torch.zeros(n, 0, dtype=torch.bool),
        )
        self.log = log or {}

    @property
    def has_history(self) -> bool:
        return self.towers.user.history is not None

    def unit_ratings(self, r: torch.Tensor) -> torch.Tensor:
        """Ratings as the user tower reads them: centred and scaled to ``[-1, 1]`` (explicit),
        1 (implicit)."""
        if self.table.feedback == "implicit":
            return torch.ones_like(r, dtype=torch.get_default_dtype())
        lo, hi = self.table.rating_scale or (1.0, 5.0)
        return (r.to(torch.get_default_dtype()) - (lo + hi) / 2) / ((hi - lo) / 2)

    def user_vectors(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        ratings: torch.Tensor,
        mask: torch.Tensor,
        drop: torch.Tensor | None = None,
        hist_drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``users (T,)``, the support ``items / ratings / mask (T, K)`` -> ``(T, dim)``;
        ``drop`` / ``hist_drop``: hide those entries' ids (training, the cold proxy)."""
        v, _ = self.towers.items(items, drop)
        hist = None
        if self.has_history:
            hi = self.hist_items[users]  # (T, H)
            hv, _ = self.towers.items(hi, hist_drop)
            hist = (hv, self.unit_ratings(self.hist_ratings[users]), self.hist_mask[users])
        return self.towers.user_vectors(v, self.unit_ratings(ratings), mask, hist, users)

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> MetaTowerAdapted:
        """One forward pass per task of ``support`` (no gradient step: ``steps`` and ``lr`` are
        ignored)."""
        users = task_entity(support.users, support.mask).clamp(0, self.table.n_users - 1)
        self.towers.eval()
        with torch.no_grad():
            u = self.user_vectors(users, support.items, support.targets, support.mask)
            every = torch.arange(self.table.n_items)
            v, b = self.towers.items(every)
        feats = self.table.item_features
        present = torch.zeros(self.table.n_items, dtype=torch.bool)
        if feats is not None:
            present = torch.from_numpy(np.asarray(feats.present, dtype=bool))
        unscorable = ~(self.towers.items.has_id(every) | present)
        return MetaTowerAdapted(u, v, b, unscorable)

    # ------------------------------------------------------------------ saving
    def config(self) -> dict[str, Any]:
        return {
            "settings": to_dict(self.settings),
            "n_catalogue": int(self.catalogue.shape[0]),
            "history": self.has_history,
            "history_width": int(self.hist_items.shape[1]),
            "user_features": self.towers.user.user_features is not None,
            "ids": self.towers.items.ids is not None,
            "log": self.log,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"towers.{k}": v.detach().cpu() for k, v in self.towers.state_dict().items()}
        out.update(
            catalogue=self.catalogue.cpu(),
            hist_items=self.hist_items.cpu(),
            hist_ratings=self.hist_ratings.cpu(),
            hist_mask=self.hist_mask.cpu(),
        )
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        mine = self.state_dict()
        if set(state) != set(mine):
            raise CheckpointError(
                f"state_dict: keys {sorted(set(state) ^ set(mine))[:6]} differ from metatower's; "
                "the weights belong to another run or table; re-train"
            )
        for k, v in state.items():
            if k != "catalogue" and tuple(v.shape) != tuple(mine[k].shape):
                raise CheckpointError(
                    f"state_dict: {k!r} has shape {tuple(v.shape)}, expected {tuple(mine[k].shape)}; "
                    "the weights belong to another run or table; re-train"
                )
        self.towers.load_state_dict(
            {k[len("towers.") :]: v for k, v in state.items() if k.startswith("towers.")}
        )
        self.catalogue = state["catalogue"].long()
        self.hist_items = state["hist_items"].long()
        self.hist_ratings = state["hist_ratings"].float()
        self.hist_mask = state["hist_mask"].bool()

    @classmethod
    def build(
        cls, name: str, config: Mapping[str, Any], table: InteractionTable
    ) -> MetaTowerFitted:
        st = from_dict(MetaTowerSettings, config.get("settings", {}), where="metatower")
        known = np.zeros(0, dtype=np.int64) if config.get("ids", True) else None
        towers = _Towers(
            table, st, known, bool(config.get("history")), bool(config.get("user_features"))
        )
        n, h = table.n_users, int(config.get("history_width", 0))
        hist = (
            torch.zeros(n, h, dtype=torch.long),
            torch.zeros(n, h),
            torch.zeros(n, h, dtype=torch.bool),
        )
        cat = torch.zeros(int(config.get("n_catalogue", 0)), dtype=torch.long)
        return cls(table, st, towers, cat, hist, dict(config.get("log", {})))


# --------------------------------------------------------------------------- training


class MetaTowerMethod:
    """Meta-trains ``metatower`` (see the module docstring) on a fit's meta-train pool."""

    name = "metatower"

    def __init__(
        self, settings: MetaTowerSettings, shots: Sequence[int] = (1, 3, 5, 10, 20)
    ) -> None:
        self.settings = settings
        self.shots = sorted({int(k) for k in (settings.shots or shots)})

    def fit(self, data: FitData) -> MetaTowerFitted:
        st, table, splits = self.settings, data.table, data.splits
        seed = data.seed if st.seed is None else st.seed
        rel = relevance(table, st.relevance)
        trows, srows = domain_rows(table, splits)
        catalogue = np.unique(table.items[trows])
        if catalogue.shape[0] < 2:
            raise ConfigError(
                f"metatower: meta-train holds {catalogue.shape[0]} target item(s); it needs at least "
                "2 to rank; check the split (protocol.split) and the data"
            )
        column = np.full(table.n_items, -1, dtype=np.int64)
        column[catalogue] = np.arange(catalogue.shape[0])
        lists = UserLists(table, trows, column, rel, seed=seed)
        usable = torch.nonzero((lists.lengths >= 2) & lists.relevant.any(dim=1)).flatten()
        if usable.numel() == 0:
            raise ConfigError(
                "metatower: no meta-train user has two target interactions with a relevant one; "
                "nothing to meta-train on; check protocol.min_interactions and relevance"
            )
        vrows = splits.pools[splits.val].rows
        val_lists = UserLists(table, vrows, column, rel, seed=seed + 1)
        val = fixed_tasks(val_lists, self.shots, st.val_tasks, seed + 2) if len(val_lists) else []
        history = None
        if st.history and srows.shape[0]:
            h = history_rows(table, srows, st.history_len, seed)
            ok = torch.from_numpy(h >= 0)
            hr = np.maximum(h, 0)
            history = (
                torch.from_numpy(np.where(h >= 0, table.items[hr], 0)),
                torch.from_numpy(np.where(h >= 0, table.ratings[hr], 0.0).astype(np.float32)),
                ok,
            )
        known = np.unique(table.items[splits.pools[splits.train].rows])
        with seeded(seed):
            towers = _Towers(
                table,
                st,
                known,
                history is not None,
                st.user_features and table.user_features is not None,
            )
        towers.items.forget_unseen_codes(known)
        if towers.user.user_features is not None:
            forget_unseen_codes(towers.user.user_features, np.unique(table.users[trows]))
        fitted = MetaTowerFitted(table, st, towers, torch.from_numpy(catalogue), history)
        cold = st.select == "both" or (
            st.select == "auto"
            and table.item_features is not None
            and any(len(v) for v in splits.cold_items.values())
        )
        counts = torch.from_numpy(np.bincount(column[table.items[trows]], minlength=len(catalogue)))
        fitted.log = _train(fitted, lists, usable, val, counts, self.shots, seed, cold)
        return fitted


def _id_dropout(st: MetaTowerSettings, table: InteractionTable) -> float:
    if st.id_dropout is not None:
        return st.id_dropout
    return 0.25 if table.item_features is not None else 0.0


def _loss_name(st: MetaTowerSettings, n: int) -> str:
    if st.loss != "auto":
        return st.loss
    return "softmax" if n <= st.max_full_softmax else "sampled-softmax"


def _step_loss(
    fitted: MetaTowerFitted,
    batch: TaskBatch,
    loss: str,
    p_drop: float,
    log_q: torch.Tensor,
    n_neg: int,
    g: torch.Generator,
) -> torch.Tensor:
    """The mean ranking loss of one batch of training tasks (module docstring)."""
    towers, cat = fitted.towers, fitted.catalogue
    C = cat.shape[0]
    drop = torch.rand(C, generator=g) < p_drop  # (C,) ids hidden this step
    hist_drop = None
    if fitted.has_history and p_drop > 0:
        hist_drop = torch.rand(fitted.hist_items[batch.users].shape, generator=g) < p_drop
    u = fitted.user_vectors(
        batch.users, cat[batch.support], batch.ratings, batch.mask, drop[batch.support], hist_drop
    )  # (B, dim)
    if loss == "softmax":
        v, b = towers.items(cat, drop)  # (C, dim), (C,)
        tgt, ex = batch.targets(C)
        return catalogue_softmax(u @ v.T + b, tgt, ex).mean()
    neg = torch.multinomial(log_q.exp(), n_neg, replacement=True, generator=g)  # (N,)
    need, inv = torch.unique(torch.cat([batch.positives.flatten(), neg]), return_inverse=True)
    v, b = towers.items(cat[need], drop[need])
    n_pos = batch.positives.numel()
    vp = v[inv[:n_pos]].view(*batch.positives.shape, -1)  # (B, P, dim)
    bp = b[inv[:n_pos]].view(batch.positives.shape)  # (B, P)
    vn, bn = v[inv[n_pos:]], b[inv[n_pos:]]  # (N, dim), (N,)
    pos = (vp * u.unsqueeze(1)).sum(-1) + bp  # (B, P)
    negs = u @ vn.T + bn  # (B, N)
    # accidental hits: a sampled item that is one of the task's positives or support items
    B = u.shape[0]
    key = torch.arange(B)[:, None] * C
    taken = torch.cat([(key + batch.positives)[batch.pos_mask], (key + batch.support)[batch.mask]])
    neg_mask = ~torch.isin(key + neg[None, :], taken)  # (B, N)
    if loss == "bpr":
        return sampled_bpr(pos, batch.pos_mask, negs, neg_mask).mean()
    return sampled_softmax(
        pos, batch.pos_mask, negs, neg_mask, log_q[batch.positives], log_q[neg][None, :]
    ).mean()


def _val_score(fitted: MetaTowerFitted, val: list[TaskBatch], hide: bool) -> float:
    """Mean meta-val nDCG@10 over the support sizes (``hide``: every id hidden)."""
    if not val:
        return math.nan
    towers, cat = fitted.towers, fitted.catalogue
    C = cat.shape[0]
    towers.eval()
    with torch.no_grad():
        v, b = towers.items(cat, torch.full((C,), hide))
        out = []
        for task in val:
            hd = torch.full(task.support.shape, hide)
            hh = (
                torch.full(fitted.hist_items[task.users].shape, hide)
                if fitted.has_history
                else None
            )
            u = fitted.user_vectors(task.users, cat[task.support], task.ratings, task.mask, hd, hh)
            tgt, ex = task.targets(C)
            out.append(float(torch.nanmean(catalogue_ndcg(u @ v.T + b, ex, tgt))))
    towers.train()
    return float(np.mean(out))


def _train(
    fitted: MetaTowerFitted,
    lists: UserLists,
    usable: torch.Tensor,
    val: list[TaskBatch],
    counts: torch.Tensor,
    shots: Sequence[int],
    seed: int,
    cold: bool,
) -> dict[str, Any]:
    """The outer loop: AdamW on the ranking loss, meta-val every ``val_every`` steps, best kept."""
    st, towers = fitted.settings, fitted.towers
    loss = _loss_name(st, fitted.catalogue.shape[0])
    p_drop = _id_dropout(st, fitted.table)
    log_q = popularity_log_q(counts.double(), st.sample_alpha).float()
    max_pos = None if loss == "softmax" else 64
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(towers.parameters(), lr=st.lr, weight_decay=st.weight_decay)

    def score() -> tuple[float, float, float]:
        warm = _val_score(fitted, val, hide=False)
        c = _val_score(fitted, val, hide=True) if cold else math.nan
        return (warm if not cold else (warm + c) / 2), warm, c

    best, warm0, cold0 = score()
    best_state, best_step, bad = copy.deepcopy(towers.state_dict()), 0, 0
    history = [[0, best, warm0, cold0]]
    step, losses = 0, []
    for step in range(1, st.steps + 1):
        idx = usable[torch.randint(usable.shape[0], (st.batch,), generator=g)]
        batch = lists.draw(idx, (min(shots), max(shots)), g, max_pos)
        value = _step_loss(fitted, batch, loss, p_drop, log_q, st.negatives, g)
        opt.zero_grad()
        value.backward()
        nn.utils.clip_grad_norm_(towers.parameters(), 10.0)
        opt.step()
        losses.append(float(value.detach()))
        if step % st.val_every == 0 or step == st.steps:
            now, warm, c = score()
            history.append([step, now, warm, c])
            if not now <= best:  # a NaN score (no meta-val task) never replaces the best
                best, best_state, best_step, bad = now, copy.deepcopy(towers.state_dict()), step, 0
            else:
                bad += 1
                if st.patience is not None and bad >= st.patience:
                    break
    towers.load_state_dict(best_state)
    towers.eval()
    return {
        "loss": loss,
        "id_dropout": p_drop,
        "best_step": best_step,
        "steps": step,
        "val": history,
        "train_loss": float(np.mean(losses[-50:])) if losses else math.nan,
        "select": "warm+cold" if cold else "warm",
    }


def make_metatower(scenario: Any = None, **settings: Any) -> MetaTowerMethod:
    """``metatower`` from a scenario (``[learners.metatower]``) and keyword overrides."""
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
        if getattr(proto, "relevance", None) is not None:
            defaults["relevance"] = proto.relevance
    st = parse_settings(MetaTowerSettings, "metatower", settings, defaults, scenario)
    return MetaTowerMethod(st, shots)


register_method("metatower", make_metatower, loader=MetaTowerFitted.build, replace=True)
