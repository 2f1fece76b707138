"""What ``metatower`` is once trained: its settings, its towers, the fitted and adapted objects.

:class:`MetaTowerFitted` holds the towers (:mod:`metarec.models.retrieval_towers`), the training
catalogue, each user's source-domain history and the rows of the item-kNN term; ``adapt`` is one
forward pass of the user tower and :class:`MetaTowerAdapted` scores any items of every task as
one matmul. The method and its meta-training are :mod:`metarec.methods.learners.metatower`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec._errors import CheckpointError, ConfigError
from metarec.config import from_dict, to_dict
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.methods.learners._encode import task_entity
from metarec.methods.learners._neighbours import Neighbours
from metarec.methods.learners.r2d2 import ridge_head
from metarec.models.retrieval_towers import ItemTower, SetUserTower
from metarec.train.log import TrainingLog

__all__ = ["MetaTowerSettings", "MetaTowerFitted", "MetaTowerAdapted", "Towers"]

_LOSSES = ("auto", "softmax", "sampled-softmax", "bpr")


@dataclass(frozen=True)
class MetaTowerSettings:
    """``metatower``'s settings (scenario table ``[learners.metatower]``).

    Meta-val nDCG@10 on ml1m-melu (users with 25+ ratings, mean over 1, 3, 5, 10, 20 shots,
    ``benchmarks``-free scratch runs at 900-1800 steps) chose the defaults: ``lr`` 1e-3 (3e-3
    peaked at 0.427 after 150 steps, then fell), ``user_features`` off (0.432 with, 0.460
    without: a zip code all but names a training user, and the tower memorises users), ``dim``
    128 / ``hidden`` 256 (0.480 against 0.460 at 64 / 128; 256 / 512: 0.483), ``head="ridge"``
    (0.487 against 0.480), mean pooling (attention: 0.480).

    Fields:
        dim: embedding size of the towers' outputs (the dot-product space).
        hidden: width of each tower's hidden layer and of the set encodings.
        feature_dim: embedding size of each side feature and of the item id.
        pool: ``"mean"`` or ``"attention"`` pooling of the support set.
        head: ``"ridge"`` or ``"none"`` (a per-user closed-form ridge correction, see the module).
        ridge: initial ridge strength of that head (then meta-learned).
        id_dropout: probability that a training step hides an item's id (``None``: 0.25 when
            the table has item features, else 0: without features a hidden item has nothing
            left to be placed by).
        loss: ``"auto"``, ``"softmax"`` (full catalogue), ``"sampled-softmax"`` (logQ
            corrected) or ``"bpr"``.
        negatives: sampled negatives per step (shared by the batch) of the sampled losses.
        sample_alpha: the sampler draws item ``j`` with probability ``∝ (count_j + 1)^alpha``.
        max_full_softmax: ``loss="auto"`` uses the full softmax up to this many catalogue items
            (Amazon sport -> cloth, 32,260 items: the sampled softmax reached meta-val nDCG@10
            0.086 in 600 steps, the full one 0.074 in 300 at 2.4 times the time per step).
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
        neighbours: add the item-kNN term (see the module docstring).
        select: ``"auto"``, ``"warm"`` or ``"both"`` (with the id-hidden score; ``"auto"``:
            when the table has item features and the scenario has cold-item states).
        seed: seeds initialisation, task draws and meta-val tasks (``None``: the fit's seed).
    """

    dim: int = 128
    hidden: int = 256
    feature_dim: int = 32
    pool: str = "mean"
    head: str = "ridge"
    ridge: float = 1.0
    id_dropout: float | None = None
    loss: str = "auto"
    negatives: int = 1024
    sample_alpha: float = 0.75
    max_full_softmax: int = 20_000
    shots: tuple[int, ...] = ()
    steps: int = 2000
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_every: int = 200
    val_tasks: int = 512
    patience: int | None = 3
    relevance: float | None = None
    history: bool = True
    history_len: int = 100
    user_features: bool = False
    neighbours: bool = True
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
    "dim": 128,
    "hidden": 256,
    "feature_dim": 32,
    "negatives": 1024,
    "batch": 128,
    "val_every": 200,
}


class Towers(nn.Module):
    """The item tower, the user tower, the ridge head's strength and the kNN term's gains."""

    knn_scale: torch.Tensor  # buffer (): 1 / the typical largest neighbour similarity

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
        # the neighbourhood term's gains (support, rating-weighted support, history), times 10
        # (Adam moves each by about lr a step: the gains reach their scale within a budget)
        self.knn_gain = nn.Parameter(torch.tensor([0.1, 0.0, 0.1]))
        self.register_buffer("knn_scale", torch.tensor(1.0))

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
    requested items. The scores order items; they are not ratings (``score_kind = "rank"``: no
    error metric is computed on them and they are never clipped to a rating scale).
    """

    score_kind = "rank"
    users: torch.Tensor
    item_vectors: torch.Tensor
    item_bias: torch.Tensor
    unscorable: torch.Tensor
    knn: torch.Tensor | None = None  # (T, C) the neighbourhood term over the catalogue
    column: torch.Tensor | None = None  # (n_items,) catalogue column of each item, -1: none

    @property
    def n_tasks(self) -> int:
        return int(self.users.shape[0])

    def select(self, rows: torch.Tensor) -> MetaTowerAdapted:
        """The tasks ``rows`` (``int64 (R,)``, repeats allowed), in that order."""
        knn = None if self.knn is None else self.knn[rows]
        return dataclasses.replace(self, users=self.users[rows], knn=knn)

    @classmethod
    def concat(cls, parts: Sequence[MetaTowerAdapted]) -> MetaTowerAdapted:
        """The tasks of ``parts`` (adapted by one fitted model), one after the other."""
        first = parts[0]
        knns = [p.knn for p in parts if p.knn is not None]
        knn = torch.cat(knns) if knns and len(knns) == len(parts) else None
        return dataclasses.replace(first, users=torch.cat([p.users for p in parts]), knn=knn)

    def _floor(self, s: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
        if not bool(bad.any()):
            return s
        inf = torch.full_like(s, math.inf)
        lo = torch.where(bad, inf, s).min(dim=-1, keepdim=True).values
        lo = torch.where(torch.isinf(lo), torch.zeros_like(lo), lo)
        return torch.where(bad, lo.expand_as(s), s)

    def _knn(self, items: torch.Tensor) -> torch.Tensor | None:
        """The neighbourhood term of ``items`` (any shape ``(T, ...)`` or ``(C,)``), or ``None``."""
        if self.knn is None or self.column is None:
            return None
        col = self.column[items]
        pad = torch.cat([self.knn, torch.zeros_like(self.knn[:, :1])], dim=1)  # column -1 -> 0
        col = torch.where(col >= 0, col, pad.shape[1] - 1)
        if items.dim() == 1:
            return pad[:, col]  # (T, C)
        return pad.gather(1, col)  # (T, N)

    def score_catalogue(self, items: torch.Tensor) -> torch.Tensor:
        """``(C,)`` item indices -> ``(T, C)`` scores of every task (one matmul)."""
        items = items.to(self.item_vectors.device)
        s = self.users @ self.item_vectors[items].T + self.item_bias[items]  # (T, C)
        knn = self._knn(items)
        if knn is not None:
            s = s + knn
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
        knn = self._knn(items)
        if knn is not None:
            s = s + knn
        return self._floor(s, self.unscorable[items])


class MetaTowerFitted:
    """The meta-trained towers (see the module docstring).

    Attributes:
        towers: the ``nn.Module`` (item tower, user tower, ridge strength).
        catalogue: ``int64 (C,)`` the meta-train target items (the training catalogue).
        hist_items, hist_ratings, hist_mask: ``(n_users, H)`` each user's meta-train
            source-domain history (``H = 0`` without one).
        knn_pairs: ``int64 (2, R)`` the meta-train (user, item) pairs the item-kNN term is built
            from (empty: no term); the neighbourhoods are rebuilt from them when loaded.
        training_log: the outer loop's log (meta-val curve, best step); summary: the loss and
            id dropout used, the selection rule, the initial meta-val score.
    """

    score_kind = "rank"  # its scores order items; they are not ratings (never clipped)

    def __init__(
        self,
        table: InteractionTable,
        settings: MetaTowerSettings,
        towers: Towers,
        catalogue: torch.Tensor,
        history: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        summary: dict[str, Any] | None = None,
        knn_pairs: torch.Tensor | None = None,
    ) -> None:
        self.name, self.table, self.settings, self.towers = "metatower", table, settings, towers
        self.catalogue = catalogue.long()
        self.knn_pairs = (
            torch.zeros(2, 0, dtype=torch.long) if knn_pairs is None else knn_pairs.long()
        )
        self._neighbours: Neighbours | None = None
        n = table.n_users
        self.hist_items, self.hist_ratings, self.hist_mask = history or (
            torch.zeros(n, 0, dtype=torch.long),
            torch.zeros(n, 0),
            torch.zeros(n, 0, dtype=torch.bool),
        )
        self.summary = summary or {}
        self.training_log = TrainingLog()

    @property
    def has_history(self) -> bool:
        return self.towers.user.history is not None

    @property
    def neighbours(self) -> Neighbours | None:
        """The item-kNN neighbourhoods (built on first use from ``knn_pairs``), or ``None``."""
        if self._neighbours is None and self.knn_pairs.numel():
            users, items = self.knn_pairs.numpy()
            t = self.table
            self._neighbours = Neighbours(
                users, items, t.n_users, t.n_items, self.catalogue.numpy()
            )
        return self._neighbours

    def knn_term(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        ratings: torch.Tensor,
        mask: torch.Tensor,
        own: torch.Tensor | None = None,
        hist_keep: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The item-kNN term ``(T, C)`` over the catalogue of the support ``items / ratings /
        mask (T, K)`` and the users' histories (``None`` without neighbourhoods). ``own (T, C)``:
        the task users' own meta-train catalogue items, whose share is removed (training tasks);
        ``hist_keep (T, H)``: the history entries to use (default: all)."""
        nb = self.neighbours
        if nb is None:
            return None
        g = self.towers.knn_gain * 10.0 * self.towers.knn_scale
        r = self.unit_ratings(ratings)
        one = torch.ones_like(r)
        parts = [nb.scores(items, one, mask), nb.scores(items, r, mask)]
        if own is not None:
            parts[0] = parts[0] - nb.own_share(items, one, mask, own, mask)
            parts[1] = parts[1] - nb.own_share(items, r, mask, own, mask)
        out = g[0] * parts[0] + g[1] * parts[1]
        if self.has_history:
            hi, hm = self.hist_items[users], self.hist_mask[users]
            hm = hm if hist_keep is None else hm & hist_keep
            ones = torch.ones(hi.shape)
            h = nb.scores(hi, ones, hm)
            if own is not None:
                h = h - nb.own_share(hi, ones, hm, own, hm)
            out = out + g[2] * h
        return out

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
        with torch.no_grad():
            knn = self.knn_term(users, support.items, support.targets, support.mask)
        nb = self.neighbours
        return MetaTowerAdapted(u, v, b, unscorable, knn, None if nb is None else nb.column)

    # ------------------------------------------------------------------ saving
    def config(self) -> dict[str, Any]:
        return {
            "settings": to_dict(self.settings),
            "n_catalogue": int(self.catalogue.shape[0]),
            "history": self.has_history,
            "history_width": int(self.hist_items.shape[1]),
            "user_features": self.towers.user.user_features is not None,
            "ids": self.towers.items.ids is not None,
            "n_knn_pairs": int(self.knn_pairs.shape[1]),
            "summary": self.summary,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"towers.{k}": v.detach().cpu() for k, v in self.towers.state_dict().items()}
        out.update(
            catalogue=self.catalogue.cpu(),
            hist_items=self.hist_items.cpu(),
            hist_ratings=self.hist_ratings.cpu(),
            hist_mask=self.hist_mask.cpu(),
            knn_pairs=self.knn_pairs.cpu(),
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
            if k not in ("catalogue", "knn_pairs") and tuple(v.shape) != tuple(mine[k].shape):
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
        pairs = state["knn_pairs"].long()
        bound = torch.tensor([[self.table.n_users], [self.table.n_items]])
        if pairs.dim() != 2 or pairs.shape[0] != 2 or bool((pairs >= bound).any()):
            raise CheckpointError(
                f"state_dict: 'knn_pairs' {tuple(pairs.shape)} does not hold (user, item) pairs of "
                f"this table ({self.table.n_users} users, {self.table.n_items} items); the weights "
                "belong to another table; re-train"
            )
        self.knn_pairs, self._neighbours = pairs, None

    @classmethod
    def build(
        cls, name: str, config: Mapping[str, Any], table: InteractionTable
    ) -> MetaTowerFitted:
        st = from_dict(MetaTowerSettings, config.get("settings", {}), where="metatower")
        known = np.zeros(0, dtype=np.int64) if config.get("ids", True) else None
        towers = Towers(
            table, st, known, bool(config.get("history")), bool(config.get("user_features"))
        )
        n, h = table.n_users, int(config.get("history_width", 0))
        hist = (
            torch.zeros(n, h, dtype=torch.long),
            torch.zeros(n, h),
            torch.zeros(n, h, dtype=torch.bool),
        )
        cat = torch.zeros(int(config.get("n_catalogue", 0)), dtype=torch.long)
        pairs = torch.zeros(2, int(config.get("n_knn_pairs", 0)), dtype=torch.long)
        return cls(table, st, towers, cat, hist, dict(config.get("summary", {})), pairs)
