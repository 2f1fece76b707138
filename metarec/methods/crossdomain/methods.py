"""One entry point for every cross-domain method: train on meta-train, select on meta-val,
score the test pools once.

Methods (:data:`METHODS`); every one is zero-shot on the cold user's target data, and
``"<method>+adapt"`` adds few-shot adaptation of the user vector on the k-shot support
(:func:`~metarec.methods.crossdomain.evaluate.adapt_user_vectors`, step size chosen on meta-val):

* ``no-transfer``: an MF on the target rows only; a cold user is the average warm user
  (``no-transfer+adapt`` is the plain few-shot baseline: that start, then k-shot steps).
* ``emcdr``: per-domain MFs + a mapping of user vectors fitted on the overlapping users.
* ``ptupcdr``: per-domain MFs + a personalised, history-conditioned bridge trained on the
  target loss.
* ``finetune-transfer``: pre-train a shared-user model on the source, fine-tune on the target
  (``config.freeze``).
* ``joint``: one shared-user model trained on ``w_s L_s + w_t L_t``: weights fixed
  (``config.joint_weights``), chosen on meta-val (``config.joint_weight_grid``) or learned
  (``config.uncertainty``).
* ``da-mmd``, ``da-coral``, ``da-kl``, ``da-swd``: ``joint`` plus ``da_weight`` times MMD,
  CORAL, Gaussian KL or sliced Wasserstein between source- and target-user representations.
* ``dann``: ``joint`` plus a domain discriminator behind gradient reversal.
* ``lightgcn``, ``bitgcf``: graph methods over the meta-train user-item graph
  (:mod:`metarec.methods.crossdomain.graph`): LightGCN over one joint graph, or per-domain graphs
  bridged by the shared users (BiTGCF-style).

Every method is used through the method interface (:class:`~metarec.methods.crossdomain.method.CrossDomainMethod`,
``build_method("emcdr+adapt", scenario)``); :func:`fit_method` is the family's own trainer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec.config.objective import RANKING_NEGATIVES, RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.ranking import relevance_threshold
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import MetaSplits
from metarec.methods.crossdomain._train import Validate
from metarec.methods.crossdomain.bridges import EMCDR, PTUPCDR, ptupcdr_histories
from metarec.methods.crossdomain.bridges import Mapping as BridgeMapping
from metarec.methods.crossdomain.data import CrossDomainView, cross_domain_view
from metarec.methods.crossdomain.evaluate import (
    ColdStartScorer,
    evaluate_cold_pool,
)
from metarec.methods.crossdomain.fitted import FittedMethod, ranking_val
from metarec.methods.crossdomain.mf import MF, fit_mf, new_mf
from metarec.methods.crossdomain.names import METHODS, parse_method
from metarec.methods.crossdomain.settings import CrossDomainConfig, as_config
from metarec.methods.crossdomain.transfer import fit_finetune, fit_joint
from metarec.metrics.select import RANK_SELECT_METRIC, SELECT_METRIC
from metarec.models.base import seeded

__all__ = [
    "METHODS",
    "SELECT_METRIC",
    "FittedMethod",
    "fit_method",
    "parse_method",
    "MeanUser",
]

_DA = {"da-mmd": "mmd", "da-coral": "coral", "da-kl": "gaussian_kl", "da-swd": "sliced_wasserstein"}

MakeValidate = Callable[[ColdStartScorer], Validate]


class MeanUser(nn.Module):
    """A target MF whose every user is the mean vector of ``users`` (the warm users)."""

    warm: torch.Tensor  # buffer (n_warm,) int64

    def __init__(self, target: MF, users: np.ndarray) -> None:
        super().__init__()
        self.target = target
        self.register_buffer("warm", torch.from_numpy(np.asarray(users, dtype=np.int64)))

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        mean = self.target.user_vectors(self.warm).mean(0)  # (du,)
        return mean.expand(users.shape[0], -1)

    def score(self, uvec: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.target.score(uvec, items)


# ---------------------------------------------------------------------- method fitters
def _mf(
    view: CrossDomainView, rows: np.ndarray, cfg: CrossDomainConfig, seed: int, **kw: Any
) -> tuple[MF, dict]:
    return fit_mf(
        view,
        rows,
        dim=cfg.embedding_dim,
        epochs=kw.pop("epochs", cfg.mf_epochs),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        l2=cfg.l2,
        negatives=cfg.train_negatives,
        seed=seed,
        **kw,
    )


def _no_transfer(
    view: CrossDomainView, cfg: CrossDomainConfig, seed: int, make_validate: MakeValidate
) -> tuple[ColdStartScorer, dict]:
    users = np.unique(view.table.users[view.target_rows])
    model = new_mf(view, view.target_rows, dim=cfg.embedding_dim, seed=seed)
    scorer = MeanUser(model, users)
    _, log = _mf(
        view,
        view.target_rows,
        cfg,
        seed,
        epochs=cfg.epochs,
        validate=make_validate(scorer),
        patience=cfg.patience,
        model=model,
    )
    return scorer, {"target_mf": log}


def _bridge_mfs(view: CrossDomainView, cfg: CrossDomainConfig, seed: int) -> tuple[MF, MF, dict]:
    source, log_s = _mf(view, view.source_rows, cfg, seed)
    target, log_t = _mf(view, view.target_rows, cfg, seed + 1)
    return source, target, {"source_mf": log_s, "target_mf": log_t}


def _emcdr(
    view: CrossDomainView, cfg: CrossDomainConfig, seed: int, make_validate: MakeValidate
) -> tuple[ColdStartScorer, dict]:
    source, target, logs = _bridge_mfs(view, cfg, seed)
    with seeded(seed + 2):
        mapping = BridgeMapping(source.user_dim, target.user_dim, cfg.mapping, cfg.hidden)
    model = EMCDR(source, target, mapping)
    logs["mapping"] = model.fit_mapping(
        view.warm_users,
        kind=cfg.mapping,
        epochs=cfg.mapping_epochs,
        lr=cfg.lr,
        batch_size=256,
        seed=seed + 2,
        validate=make_validate(model),
        patience=max(cfg.patience or 0, 10) if cfg.patience else None,
    )
    return model, logs


def _ptupcdr(
    view: CrossDomainView, cfg: CrossDomainConfig, seed: int, make_validate: MakeValidate
) -> tuple[ColdStartScorer, dict]:
    source, target, logs = _bridge_mfs(view, cfg, seed)
    model = PTUPCDR(
        source,
        target,
        ptupcdr_histories(view, cfg.history_len, seed),
        hidden=cfg.hidden,
        seed=seed + 2,
    )
    logs["bridge"] = model.fit_bridge(
        view,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        negatives=cfg.train_negatives,
        seed=seed + 2,
        validate=make_validate(model),
        patience=cfg.patience,
    )
    return model, logs


def _finetune(
    view: CrossDomainView, cfg: CrossDomainConfig, seed: int, make_validate: MakeValidate
) -> tuple[ColdStartScorer, dict]:
    return fit_finetune(view, cfg, seed, validate=lambda s: make_validate(s)())


def _joint(
    reg: str | None = None, dann: bool = False
) -> Callable[..., tuple[ColdStartScorer, dict]]:
    def fit(
        view: CrossDomainView, cfg: CrossDomainConfig, seed: int, make_validate: MakeValidate
    ) -> tuple[ColdStartScorer, dict]:
        if cfg.joint_weight_grid is None:
            return fit_joint(
                view, cfg, seed, validate=lambda s: make_validate(s)(), reg=reg, dann=dann
            )
        # weights chosen on meta-val: one model per (w_s, w_t), the best meta-val score kept
        best: tuple[ColdStartScorer, dict] | None = None
        tried = {}
        for w in cfg.joint_weight_grid:
            w_s, w_t = w  # validated by CrossDomainConfig: each entry is one (w_s, w_t) pair
            scorer, log = fit_joint(
                view,
                replace(cfg, joint_weights=(w_s, w_t)),
                seed,
                validate=lambda s: make_validate(s)(),
                reg=reg,
                dann=dann,
            )
            tried[str(tuple(w))] = log["best_val"]
            if best is None or log["best_val"] > best[1]["best_val"]:
                best = (scorer, log)
        assert best is not None
        best[1]["weight_grid"] = tried
        return best

    return fit


def _graph(bidirectional: bool) -> Callable[..., tuple[ColdStartScorer, dict]]:
    def fit(
        view: CrossDomainView, cfg: CrossDomainConfig, seed: int, make_validate: MakeValidate
    ) -> tuple[ColdStartScorer, dict]:
        from metarec.methods.crossdomain.graph import (  # metarec.models.graph builds on this package
            fit_bitgcf,
            fit_lightgcn,
        )

        return (fit_bitgcf if bidirectional else fit_lightgcn)(view, cfg, seed, make_validate)

    return fit


_FIT = {
    "no-transfer": _no_transfer,
    "emcdr": _emcdr,
    "ptupcdr": _ptupcdr,
    "finetune-transfer": _finetune,
    "joint": _joint(),
    **{name: _joint(reg=reg) for name, reg in _DA.items()},
    "dann": _joint(dann=True),
    "lightgcn": _graph(bidirectional=False),
    "bitgcf": _graph(bidirectional=True),
}


# ---------------------------------------------------------------------- entry point
def fit_method(
    method: str,
    table: InteractionTable,
    splits: MetaSplits,
    *,
    seed: int = 0,
    config: CrossDomainConfig | Mapping[str, Any] | None = None,
    val_sampler: SamplerConfig | None = None,
    ranking: bool = False,
    relevance: float | None = None,
) -> FittedMethod:
    """Train ``method`` on meta-train; its final stage keeps the best epoch on meta-val.

    Training uses exactly ``splits.pools[splits.train]``'s rows (source rows of every user,
    target rows of warm users); cold users' target rows are only ever seen as k-shot support
    (``+adapt`` methods, at evaluation) and never as training rows. The per-epoch meta-val score
    is zero-shot (AUC, or MAE for explicit feedback) on ``val_sampler``'s query sets (default:
    ``config``'s evaluation settings with 1 shot; zero-shot scores do not use the support).

    In a ranking scenario (``ranking``; ``relevance``: the protocol's threshold, ``None`` for the
    rating scale's default) the method is trained and selected for the ranking it is compared
    on: explicit ratings train as relevance labels (``rating >= relevance``) plus
    ``config.train_negatives`` sampled negatives per row (:data:`RANKING_NEGATIVES` when it is 0)
    with binary cross-entropy, as implicit feedback does, and the best epoch (and ``+adapt``'s
    step size) is the one with the best meta-val ``ndcg@10_all`` over each task's catalogue
    (:func:`metarec.methods.catalogue.evaluate_ranking`, ``val_sampler``'s shots).

    Raises:
        ConfigError: unknown method, or splits that are not cross-domain.
    """
    t0 = time.perf_counter()
    base, _ = parse_method(method)
    cfg = as_config(config)
    objective: RankingObjective | None = None
    if ranking and table.feedback == "explicit":
        if cfg.train_negatives == 0:
            cfg = replace(cfg, train_negatives=RANKING_NEGATIVES)
        threshold = relevance_threshold(table, relevance)
        objective = RankingObjective("bce", threshold, cfg.train_negatives)
    view = cross_domain_view(
        table, splits, relevance=None if objective is None else objective.relevance
    )
    scfg = val_sampler or SamplerConfig(
        n_support=1, n_query=cfg.n_query, order=cfg.order, negatives=cfg.negatives
    )
    metric, sign = SELECT_METRIC[table.feedback]
    val_pool = splits.pools[splits.val]

    def make_validate(scorer: ColdStartScorer) -> Validate:
        def validate() -> float:
            if ranking:  # zero-shot catalogue ranking of the meta-val tasks
                ev = ranking_val(scorer, table, splits, scfg, cfg, relevance)
                return float(ev[RANK_SELECT_METRIC[0]])
            res = evaluate_cold_pool(
                scorer,
                table,
                val_pool,
                scfg,
                k=cfg.k,
                seed=cfg.eval_seed,
                batch_size=cfg.eval_batch_size,
                max_tasks=cfg.val_tasks,
            )
            return sign * float(res[metric])

        return validate

    scorer, log = _FIT[base](view, cfg, seed, make_validate)
    return FittedMethod(
        method,
        table,
        splits,
        view,
        scorer,
        cfg,
        log,
        time.perf_counter() - t0,
        ranking=ranking,
        relevance=relevance,
        objective=objective,
    )
