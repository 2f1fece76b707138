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

from metarec._errors import ConfigError, suggest
from metarec.config.objective import RANKING_NEGATIVES, RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool
from metarec.episodes.ranking import relevance_threshold
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import MetaSplits
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.crossdomain._train import Validate
from metarec.methods.crossdomain.bridges import EMCDR, PTUPCDR, ptupcdr_histories
from metarec.methods.crossdomain.bridges import Mapping as BridgeMapping
from metarec.methods.crossdomain.data import CrossDomainView, cross_domain_view
from metarec.methods.crossdomain.evaluate import (
    AdaptConfig,
    ColdStartScorer,
    RankAdapt,
    VectorTasks,
    evaluate_cold_pool,
)
from metarec.methods.crossdomain.mf import MF, fit_mf, new_mf
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

METHODS = (
    "no-transfer",
    "emcdr",
    "ptupcdr",
    "finetune-transfer",
    "joint",
    "da-mmd",
    "da-coral",
    "da-kl",
    "da-swd",
    "dann",
    "lightgcn",
    "bitgcf",
)
"""Base method names; each also runs as ``"<name>+adapt"``."""


_DA = {"da-mmd": "mmd", "da-coral": "coral", "da-kl": "gaussian_kl", "da-swd": "sliced_wasserstein"}

MakeValidate = Callable[[ColdStartScorer], Validate]


def parse_method(method: str) -> tuple[str, bool]:
    """``"emcdr+adapt"`` -> ``("emcdr", True)``; unknown names raise with a suggestion."""
    base, plus, suffix = str(method).partition("+")
    if base not in METHODS or (plus and suffix != "adapt"):
        names = [*METHODS, *(f"{m}+adapt" for m in METHODS)]
        raise ConfigError(
            f"method={method!r}: unknown cross-domain method; choose one of {list(METHODS)}, each optionally "
            f"with '+adapt' (few-shot adaptation on the support){suggest(str(method), names)}"
        )
    return base, bool(plus)


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
class FittedMethod:
    """A trained cross-domain method, ready to score any pool under any sampler settings.

    Built by :func:`fit_method`. :meth:`evaluate` scores a pool; for ``"+adapt"`` methods the
    adaptation step size is chosen on meta-val (:meth:`select_adapt`) once per sampler setting
    (so per shots value) and reused for every test pool.

    Attributes:
        method, base, adapt: the method name, its base name and whether it adapts.
        scorer: the trained :class:`~metarec.methods.crossdomain.evaluate.ColdStartScorer`.
        view: the training view; config: the resolved settings; log: training logs.
        fit_seconds: wall-clock time of training (meta-val selection included).
        ranking: selected in a ranking scenario (meta-val ``ndcg@10_all`` over each task's
            catalogue; ``score_kind = "rank"``); relevance: the protocol's threshold (``None``:
            the scale's default); objective: explicit ratings trained to rank (labels and
            sampled negatives, also at adaptation), else ``None``.
    """

    def __init__(
        self,
        method: str,
        table: InteractionTable,
        splits: MetaSplits,
        view: CrossDomainView,
        scorer: ColdStartScorer,
        config: CrossDomainConfig,
        log: dict,
        fit_seconds: float,
        *,
        ranking: bool = False,
        relevance: float | None = None,
        objective: RankingObjective | None = None,
    ) -> None:
        self.method = method
        self.base, self.adapt = parse_method(method)
        self.table, self.splits, self.view, self.scorer = table, splits, view, scorer
        self.config, self.log, self.fit_seconds = config, log, fit_seconds
        self.ranking, self.relevance, self.objective = ranking, relevance, objective
        self.metric, self.sign = RANK_SELECT_METRIC if ranking else SELECT_METRIC[table.feedback]
        self.score_kind = "rank" if ranking else "rating"
        self.rank_adapt = None if objective is None else RankAdapt.of(objective, table)
        self._chosen: dict[SamplerConfig, tuple[AdaptConfig | None, dict[str, Any]]] = {}

    def evaluate(
        self,
        pool: TaskPool,
        sampler_config: SamplerConfig,
        *,
        max_tasks: int | None = None,
        return_per_task: bool = False,
    ) -> dict[str, Any]:
        """Score ``pool`` (zero-shot, or after the adaptation chosen for ``sampler_config``);
        :func:`~metarec.methods.crossdomain.evaluate.evaluate_cold_pool`'s dictionary."""
        chosen, _ = self.select_adapt(sampler_config)
        return self._score(
            pool, sampler_config, chosen, max_tasks=max_tasks, return_per_task=return_per_task
        )

    def select_adapt(
        self, sampler_config: SamplerConfig
    ) -> tuple[AdaptConfig | None, dict[str, Any]]:
        """``(adaptation, meta-val result)``: for ``"+adapt"`` methods the step size of
        ``config.adapt_lrs`` with the best meta-val score (ties: zero-shot, then the first)."""
        if sampler_config in self._chosen:
            return self._chosen[sampler_config]
        cfg = self.config
        chosen: AdaptConfig | None = None
        val = self._val(sampler_config, None)
        if self.adapt:
            loss = self.adapt_loss
            tried = {}
            for lr in cfg.adapt_lrs:
                a = AdaptConfig(cfg.adapt_steps, lr, cfg.adapt_l2, loss)
                res = self._val(sampler_config, a)
                tried[lr] = res[self.metric]
                if chosen is None or self.sign * res[self.metric] > self.sign * val[self.metric]:
                    chosen, val = a, res
            self.log.setdefault("adapt_lrs", {})[str(sampler_config.n_support)] = tried
        self._chosen[sampler_config] = (chosen, val)
        return chosen, val

    @property
    def adapt_loss(self) -> str:
        """The support loss of ``+adapt``: ``"mse"`` on ratings trained as ratings, else ``"bce"``."""
        return "mse" if self.view.train_feedback == "explicit" else "bce"

    def _val(self, scfg: SamplerConfig, adapt: AdaptConfig | None) -> dict[str, Any]:
        """Meta-val scores (at most ``config.val_tasks`` tasks) after ``adapt``: the catalogue
        ranking metrics in a ranking scenario, the pinned query sets' otherwise."""
        cfg = self.config
        if not self.ranking:
            return self._score(
                self.splits.pools[self.splits.val], scfg, adapt, max_tasks=cfg.val_tasks
            )
        tasks = VectorTasks(
            self.scorer, self.table, adapt, rank=self.rank_adapt, score_kind=self.score_kind
        )
        return evaluate_ranking(
            tasks,
            self.table,
            self.splits,
            self.splits.val,
            scfg,
            relevance=self.relevance,
            max_tasks=cfg.val_tasks,
            batch_size=cfg.eval_batch_size,
            seed=cfg.eval_seed,
        )

    def _score(
        self,
        pool: TaskPool,
        scfg: SamplerConfig,
        adapt: AdaptConfig | None,
        *,
        max_tasks: int | None = None,
        return_per_task: bool = False,
    ) -> dict[str, Any]:
        cfg = self.config
        return evaluate_cold_pool(
            self.scorer,
            self.table,
            pool,
            scfg,
            adapt=adapt,
            rank=self.rank_adapt,
            k=cfg.k,
            seed=cfg.eval_seed,
            batch_size=cfg.eval_batch_size,
            max_tasks=max_tasks,
            return_per_task=return_per_task,
        )


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
                tasks = VectorTasks(scorer, table, None, score_kind="rank")
                ev = evaluate_ranking(
                    tasks,
                    table,
                    splits,
                    splits.val,
                    scfg,
                    relevance=relevance,
                    max_tasks=cfg.val_tasks,
                    batch_size=cfg.eval_batch_size,
                    seed=cfg.eval_seed,
                )
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
