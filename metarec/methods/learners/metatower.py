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
  correction in the items' own space;
* **neighbourhood term** (``neighbours=True``): plus ``g_1 sum_s K[s, i] + g_2 sum_s r_s K[s, i]
  + g_3 sum_h K[h, i]`` over the support items ``s`` and the history items ``h``, ``K`` the
  item-item cosine of the meta-train rows (:mod:`~metarec.methods.learners._neighbours`), the
  gains ``g`` meta-learned: the factor model and the neighbourhood model added, as in Koren's
  integrated model (KDD 2008). A dot product of ``dim`` values cannot hold the item-level
  co-occurrences that item-kNN reads (on Amazon sport -> cloth, a cold user's sport history
  speaks for cloth items pair by pair: item-kNN over it reaches meta-val nDCG@10 0.080 where a
  rank-128 SVD fold-in gets 0.005); the towers add what co-occurrence cannot give: ratings,
  features, cold items. Meta-training removes the training user's own co-occurrences from
  ``K`` (leave-one-user-out), and an item whose id is hidden has no neighbours, as a cold item.

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

**Selection** is on meta-val only: every ``val_every`` steps (:func:`~metarec.train.outer.outer_loop`),
nDCG@10 over the catalogue minus the support, averaged over the support sizes of ``shots``: in
a ranking scenario (``protocol.ranking``) on the protocol's own meta-val tasks
(:func:`~metarec.methods.catalogue.evaluate_ranking`, as the ranking baselines and ``elae``
tune), otherwise on pinned meta-val tasks (one seeded order per user, the same positives at
every size). When the table has item features and the scenario has cold-item states, the score
is the mean of that and the pinned tasks' score with every id hidden (the cold-item proxy). The
best step is kept; ``patience`` evaluations without a gain stop early.

Adaptation is one forward pass of the user tower; :meth:`MetaTowerAdapted.score_catalogue`
scores any items for every task as one matmul.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.algorithms.ranking_losses import (
    catalogue_softmax,
    popularity_log_q,
    sampled_bpr,
    sampled_softmax,
)
from metarec.data.table import InteractionTable
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.learners._catalogue_tasks import (
    TaskBatch,
    UserLists,
    domain_rows,
    fixed_tasks,
    history_rows,
    relevance,
)
from metarec.methods.learners._settings import parse_settings
from metarec.methods.learners._tower_fitted import (
    MetaTowerAdapted,
    MetaTowerFitted,
    MetaTowerSettings,
    Towers,
)
from metarec.methods.learners.elae import catalogue_ndcg
from metarec.methods.ranking._common import Protocol
from metarec.metrics.select import RANK_SELECT_METRIC
from metarec.models.base import seeded
from metarec.models.retrieval_towers import forget_unseen_codes
from metarec.train.outer import Step, Validation, outer_loop, training_log

_METRIC = RANK_SELECT_METRIC[0]

__all__ = [
    "MetaTowerSettings",
    "MetaTowerMethod",
    "MetaTowerFitted",
    "MetaTowerAdapted",
    "make_metatower",
]


# --------------------------------------------------------------------------- training


class MetaTowerMethod:
    """Meta-trains ``metatower`` (see the module docstring) on a fit's meta-train pool."""

    name = "metatower"

    def __init__(
        self,
        settings: MetaTowerSettings,
        shots: Sequence[int] = (1, 3, 5, 10, 20),
        protocol: Protocol | None = None,
    ) -> None:
        self.settings = settings
        self.shots = sorted({int(k) for k in (settings.shots or shots)})
        # a ranking scenario's own meta-val tasks select the steps (as the baselines tune)
        self.protocol = protocol if protocol is not None and protocol.ranking else None

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
            towers = Towers(
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
        if st.neighbours:
            rows = splits.pools[splits.train].rows
            pairs = np.unique(np.stack([table.users[rows], table.items[rows]]), axis=1)
            fitted.knn_pairs = torch.from_numpy(pairs.astype(np.int64))
            nb = fitted.neighbours
            assert nb is not None
            towers.knn_scale.fill_(1.0 / max(nb.typical_top(), 1e-6))
        cold = st.select == "both" or (
            st.select == "auto"
            and table.item_features is not None
            and any(len(v) for v in splits.cold_items.values())
        )
        counts = torch.from_numpy(np.bincount(column[table.items[trows]], minlength=len(catalogue)))
        _train(fitted, lists, usable, val, counts, self.shots, seed, cold, self.protocol, data)
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
    # the item-kNN term: hidden ids take no part (a cold item has no neighbours), and the
    # training user's own co-occurrences are removed
    own = torch.zeros(batch.users.shape[0], C, dtype=torch.bool)
    rows = torch.arange(own.shape[0])[:, None].expand_as(batch.own)
    own[rows[batch.own_mask], batch.own[batch.own_mask]] = True
    knn = fitted.knn_term(
        batch.users,
        cat[batch.support],
        batch.ratings,
        batch.mask & ~drop[batch.support],
        own,
        None if hist_drop is None else ~hist_drop,
    )
    if knn is not None:
        knn = knn.masked_fill(drop[None, :], 0.0)  # (B, C)
    if loss == "softmax":
        v, b = towers.items(cat, drop)  # (C, dim), (C,)
        tgt, ex = batch.targets(C)
        logits = u @ v.T + b
        return catalogue_softmax(logits if knn is None else logits + knn, tgt, ex).mean()
    neg = torch.multinomial(log_q.exp(), n_neg, replacement=True, generator=g)  # (N,)
    need, inv = torch.unique(torch.cat([batch.positives.flatten(), neg]), return_inverse=True)
    v, b = towers.items(cat[need], drop[need])
    n_pos = batch.positives.numel()
    vp = v[inv[:n_pos]].view(*batch.positives.shape, -1)  # (B, P, dim)
    bp = b[inv[:n_pos]].view(batch.positives.shape)  # (B, P)
    vn, bn = v[inv[n_pos:]], b[inv[n_pos:]]  # (N, dim), (N,)
    pos = (vp * u.unsqueeze(1)).sum(-1) + bp  # (B, P)
    negs = u @ vn.T + bn  # (B, N)
    if knn is not None:
        pos, negs = pos + knn.gather(1, batch.positives), negs + knn[:, neg]
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
            s = u @ v.T + b
            if not hide:  # with every id hidden, no item has neighbours
                knn = fitted.knn_term(task.users, cat[task.support], task.ratings, task.mask)
                s = s if knn is None else s + knn
            tgt, ex = task.targets(C)
            out.append(float(torch.nanmean(catalogue_ndcg(s, ex, tgt))))
    towers.train()
    return float(np.mean(out))


def _protocol_score(
    fitted: MetaTowerFitted, protocol: Protocol, shots: Sequence[int], data: FitData
) -> float:
    """Mean ``ndcg@10_all`` over ``shots`` on the ranking protocol's own meta-val tasks (their
    support pools, queries and state catalogue: :func:`~metarec.methods.catalogue.evaluate_ranking`)."""
    out = []
    for k in shots:
        ev = evaluate_ranking(
            fitted,
            data.table,
            data.splits,
            data.splits.val,
            replace(protocol.sampler, n_support=k),
            relevance=protocol.relevance,
            max_tasks=fitted.settings.val_tasks,
            seed=data.seed,
        )
        out.append(float(ev[_METRIC]))
    fitted.towers.train()
    return float(np.nanmean(out)) if out else math.nan


def _train(
    fitted: MetaTowerFitted,
    lists: UserLists,
    usable: torch.Tensor,
    val: list[TaskBatch],
    counts: torch.Tensor,
    shots: Sequence[int],
    seed: int,
    cold: bool,
    protocol: Protocol | None,
    data: FitData,
) -> None:
    """The outer loop (:func:`~metarec.train.outer.outer_loop`): AdamW on the ranking loss,
    meta-val every ``val_every`` steps, the best weights kept; fills ``fitted.training_log``."""
    st, towers = fitted.settings, fitted.towers
    loss = _loss_name(st, fitted.catalogue.shape[0])
    p_drop = _id_dropout(st, fitted.table)
    log_q = popularity_log_q(counts.double(), st.sample_alpha).float()
    max_pos = None if loss == "softmax" else 64
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(towers.parameters(), lr=st.lr, weight_decay=st.weight_decay)

    def validate() -> Validation:
        if protocol is not None:
            warm = _protocol_score(fitted, protocol, shots, data)
        else:
            warm = _val_score(fitted, val, hide=False)
        if not cold:
            return Validation(warm if warm == warm else -math.inf, {_METRIC: warm})
        hidden = _val_score(fitted, val, hide=True)
        both = (warm + hidden) / 2
        return Validation(
            both if both == both else -math.inf,
            {"ndcg@10_select": both, _METRIC: warm, "ndcg@10_hidden_ids": hidden},
        )

    def step(i: int) -> Step:
        idx = usable[torch.randint(usable.shape[0], (st.batch,), generator=g)]
        batch = lists.draw(idx, (min(shots), max(shots)), g, max_pos)
        value = _step_loss(fitted, batch, loss, p_drop, log_q, st.negatives, g)
        if not torch.isfinite(value):
            return Step(loss=float(value.detach()), tasks=st.batch, skipped=True)
        opt.zero_grad()
        value.backward()
        nn.utils.clip_grad_norm_(towers.parameters(), 10.0)
        opt.step()
        return Step(loss=float(value.detach()), tasks=st.batch)

    initial = copy.deepcopy(towers.state_dict())
    best: dict[str, Any] = {"state": initial}
    start = validate()
    t0 = time.perf_counter()
    state = outer_loop(
        step,
        steps=st.steps,
        val_every=st.val_every,
        validate=validate,
        keep_best=lambda _: best.update(state=copy.deepcopy(towers.state_dict())),
        patience=st.patience,
        progress=data.progress,
        desc="metatower",
    )
    metric = "ndcg@10_select" if cold else _METRIC
    log = training_log(state, budget=st.steps, seconds=time.perf_counter() - t0, metric=metric)
    if not state.best_score > start.score:  # meta-training never beat the initial towers
        best["state"], log = initial, dataclasses.replace(log, best_step=0)
    towers.load_state_dict(best["state"])
    towers.eval()
    fitted.training_log = log
    fitted.summary = {
        "loss": loss,
        "id_dropout": p_drop,
        "select": "ids and hidden ids" if cold else "ids",
        "protocol": protocol is not None,
        "initial_val": start.score,
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
    return MetaTowerMethod(st, shots, Protocol.of(scenario) if scenario is not None else None)


register_method(
    "metatower",
    make_metatower,
    loader=MetaTowerFitted.build,
    tags=MethodTags(units=("user",), family="learner"),
    replace=True,
)
