"""Every cross-domain method (:data:`metarec.methods.crossdomain.METHODS`, each also ``"<name>+adapt"``)
through the method interface.

``fit`` is :func:`metarec.methods.crossdomain.fit_method` (meta-train rows only, best epoch on meta-val)
followed, for ``+adapt`` methods, by the choice of the adaptation step size on meta-val for the
scenario's own support size. A task's user vector is the method's zero-shot vector of the
task's user (a bridge of the source history, a shared embedding, or the average warm user);
``adapt`` runs :func:`~metarec.methods.crossdomain.evaluate.adapt_user_vectors` on the support (``+adapt``
methods; plain methods are zero-shot unless ``steps`` is passed) and ``score`` is the method's
target-domain scorer. ``state_dict`` is the scorer module's (parameters and buffers); the
module is rebuilt from :meth:`CrossDomainFitted.config` by :func:`_skeleton`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from metarec._errors import CheckpointError, ConfigError
from metarec.config import Scenario, to_dict
from metarec.config.objective import RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.build import sampler_config
from metarec.episodes.sampler import SamplerConfig
from metarec.methods.base import Adaptation, FitData
from metarec.methods.crossdomain._train import stage_log
from metarec.methods.crossdomain.bridges import EMCDR, PTUPCDR
from metarec.methods.crossdomain.bridges import Mapping as BridgeMapping
from metarec.methods.crossdomain.evaluate import (
    AdaptConfig,
    RankAdapt,
    UserVectors,
    zero_shot_then_adapt,
)
from metarec.methods.crossdomain.methods import FittedMethod, MeanUser, fit_method, parse_method
from metarec.methods.crossdomain.mf import MF
from metarec.methods.crossdomain.settings import CrossDomainConfig, as_config, config_from_scenario
from metarec.methods.crossdomain.transfer import DomainScorer, SharedUserModel
from metarec.train.log import TrainingLog
from metarec.train.outer import progress_bars

__all__ = [
    "CrossDomainMethod",
    "CrossDomainFitted",
    "CrossDomainAdapted",
    "scenario_crossdomain_config",
]


def scenario_crossdomain_config(scenario: Scenario) -> CrossDomainConfig:
    """The scenario's ``[crossdomain]`` section (checked key by key, ``crossdomain.KEY`` in the
    messages) with its evaluation protocol copied in."""
    return config_from_scenario(scenario, as_config(dict(scenario.crossdomain)))


CrossDomainAdapted = UserVectors
"""A cross-domain method adapted to ``T`` tasks: their user vectors over the frozen scorer."""


class CrossDomainFitted:
    """A trained cross-domain method: the scorer module, the resolved settings, the adaptation
    chosen on meta-val (``None``: zero-shot) and the sizes that rebuild the module.

    ``ranked``: fitted in a ranking scenario (trained and selected to rank): ``score_kind`` is
    ``"rank"`` (its scores order items; they get no error metric and are never clipped);
    ``ranking``: the :class:`~metarec.config.objective.RankingObjective` of explicit ratings
    trained as relevance labels, which ``+adapt`` also adapts on (``None``: none).
    """

    def __init__(
        self,
        name: str,
        table: InteractionTable,
        scorer: nn.Module,
        settings: CrossDomainConfig,
        chosen: AdaptConfig | None,
        shape: dict[str, Any],
        info: dict[str, Any] | None = None,
        *,
        ranked: bool = False,
        ranking: RankingObjective | None = None,
    ) -> None:
        self.name, self.table, self.scorer, self.settings = name, table, scorer, settings
        self.chosen, self.shape, self.info = chosen, shape, info or {}
        self.base, self.adapts = parse_method(name)
        self.training_log = TrainingLog()
        self.ranked, self.ranking = ranked, ranking
        self._rank_adapt: RankAdapt | None = None

    @property
    def score_kind(self) -> str:
        """``"rank"`` for a method fitted in a ranking scenario, else ``"rating"``."""
        return "rank" if self.ranked else "rating"

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> UserVectors:
        """Zero-shot vectors of the tasks' users, then (``+adapt``, or ``steps`` given) gradient
        steps on each vector over its support (step size: ``lr``, else the one chosen on meta-val)."""
        c = self.chosen
        trains_ratings = self.table.feedback == "explicit" and self.ranking is None
        loss = "mse" if trains_ratings else "bce"
        n = steps if steps is not None else (c.steps if c is not None else 0)
        a = None
        if n:
            rate = lr if lr is not None else (c.lr if c is not None else self.settings.adapt_lrs[0])
            a = AdaptConfig(n, rate, c.l2 if c is not None else self.settings.adapt_l2, loss)
        return zero_shot_then_adapt(
            self.scorer,  # type: ignore[arg-type]
            support,
            a,
            rank=self._adapt_negatives(),
            score_kind=self.score_kind,
        )

    def _adapt_negatives(self) -> RankAdapt | None:
        """The objective and negative catalogue ``+adapt`` steps on (``None``: not trained to
        rank ratings)."""
        if self.ranking is not None and self._rank_adapt is None:
            self._rank_adapt = RankAdapt.of(self.ranking, self.table)
        return self._rank_adapt

    @property
    def steps(self) -> int:
        return self.chosen.steps if self.chosen is not None else 0

    def adaptation(self, sampler: SamplerConfig) -> Adaptation:
        """The adaptation for tasks of ``sampler``: a ``+adapt`` method's step size chosen on
        meta-val for those shots (when it was fitted in this process; a loaded run keeps the
        one chosen for its scenario), zero-shot otherwise."""
        fm = self.info.get("fitted_method")
        chosen = fm.select_adapt(sampler)[0] if fm is not None else self.chosen
        steps, lr = (chosen.steps, chosen.lr) if chosen is not None else (0, None)
        report = {
            "eval_steps": steps,
            "eval_lr": lr,
            "family": "crossdomain",
            "fit_shared_with": self.info.get("shared_with"),
        }
        return Adaptation(steps, lr, report)

    def config(self) -> dict[str, Any]:
        c, rank = self.chosen, self._adapt_negatives()
        return {
            "crossdomain": to_dict(self.settings),
            "shape": self.shape,
            "chosen": None
            if c is None
            else {"steps": c.steps, "lr": c.lr, "l2": c.l2, "loss": c.loss},
            "ranked": self.ranked,
            "rank_adapt": None if rank is None else rank.to_json(),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.scorer.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        own = self.scorer.state_dict()
        for k, v in own.items():
            got = state.get(k)
            if got is None or tuple(got.shape) != tuple(v.shape):
                raise CheckpointError(
                    f"state_dict: {self.name} tensor {k!r} has shape {None if got is None else tuple(got.shape)}, "
                    f"the method needs {tuple(v.shape)}; the weights belong to another run; re-train"
                )
        extra = [k for k in state if k not in own]
        if extra:
            raise CheckpointError(
                f"state_dict: {extra[0]!r} is not a tensor of {self.name}; the weights belong to another run"
            )
        self.scorer.load_state_dict(dict(state))

    @classmethod
    def from_fitted_method(cls, fm: FittedMethod, scfg: SamplerConfig | None) -> CrossDomainFitted:
        """Wrap a :class:`~metarec.methods.crossdomain.FittedMethod`; with ``scfg`` the ``+adapt`` step size
        is chosen on meta-val for those sampler settings (``None``: zero-shot unless ``adapt``
        is given ``steps``)."""
        chosen, val = fm.select_adapt(scfg) if scfg is not None else (None, {})
        info = {
            "fitted_method": fm,
            "meta_val": {k: v for k, v in val.items() if isinstance(v, float)},
            "log": fm.log,
        }
        scorer: nn.Module = fm.scorer  # type: ignore[assignment]  # every ColdStartScorer is an nn.Module
        fitted = cls(
            fm.method,
            fm.table,
            scorer,
            fm.config,
            chosen,
            _shape(fm.base, scorer, fm.table),
            info,
            ranked=fm.ranking,
            ranking=fm.objective,
        )
        fitted._rank_adapt = fm.rank_adapt
        fitted.training_log = stage_log(fm.log, fm.metric, fm.sign, fm.fit_seconds)
        return fitted

    @classmethod
    def build(
        cls, name: str, config: Mapping[str, Any], table: InteractionTable
    ) -> CrossDomainFitted:
        settings = as_config(_tuples(config["crossdomain"]))
        shape = dict(config["shape"])
        c = config.get("chosen")
        chosen = (
            None
            if c is None
            else AdaptConfig(int(c["steps"]), float(c["lr"]), float(c["l2"]), str(c["loss"]))
        )
        base, _ = parse_method(name)
        saved = config.get("rank_adapt")
        try:
            rank = None if saved is None else RankAdapt.from_json(saved)
        except (ConfigError, TypeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"manifest.json: the saved ranking objective of {name!r} does not rebuild ({e}); "
                "the run is damaged or from another version; re-train"
            ) from e
        fitted = cls(
            name,
            table,
            _skeleton(base, settings, shape),
            settings,
            chosen,
            shape,
            ranked=bool(config.get("ranked", False)),
            ranking=None if rank is None else rank.objective,
        )
        fitted._rank_adapt = rank
        return fitted


def _tuples(d: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples :class:`CrossDomainConfig` holds."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out[k] = (
            tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
        )
    return out


def _shape(base: str, scorer: nn.Module, table: InteractionTable) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "n_users": table.n_users,
        "n_items": table.n_items,
        "n_domains": table.n_domains,
    }
    if isinstance(scorer, MeanUser):
        shape["n_warm"] = int(scorer.get_buffer("warm").shape[0])
    if isinstance(scorer, PTUPCDR):
        shape["history_len"] = int(scorer.get_buffer("histories").shape[1])
    if isinstance(scorer, EMCDR):
        shape["mapping"] = scorer.mapping.kind
    if isinstance(scorer, DomainScorer):
        shape["target"] = scorer.domain
    from metarec.methods.crossdomain.graph import GraphScorer

    if isinstance(scorer, GraphScorer):
        m = scorer.model
        shape.update(
            target=int(m.target),
            graph_items=int(m.item.shape[0]),
            bidirectional=bool(m.bidirectional),
            dim=int(m.item.shape[1]),
        )
    return shape


def _skeleton(base: str, cfg: CrossDomainConfig, shape: Mapping[str, Any]) -> nn.Module:
    """An untrained module of ``base``'s architecture with the saved sizes."""
    nu, ni, d = int(shape["n_users"]), int(shape["n_items"]), cfg.embedding_dim

    def mf() -> MF:
        return MF(nu, ni, d)

    if base == "no-transfer":
        return MeanUser(mf(), torch.zeros(int(shape["n_warm"]), dtype=torch.int64).numpy())
    if base == "emcdr":
        return EMCDR(
            mf(), mf(), BridgeMapping(d + 1, d + 1, shape.get("mapping", cfg.mapping), cfg.hidden)
        )
    if base == "ptupcdr":
        return PTUPCDR(
            mf(),
            mf(),
            torch.zeros(nu, int(shape["history_len"]), dtype=torch.int64),
            hidden=cfg.hidden,
        )
    if base in ("lightgcn", "bitgcf"):
        from metarec.methods.crossdomain.graph import GraphCF, GraphScorer

        graph = GraphCF.shell(
            n_users=nu,
            n_items=int(shape["graph_items"]),
            n_table_items=ni,
            n_domains=int(shape["n_domains"]),
            dim=int(shape.get("dim", d)),
            target=int(shape["target"]),
            bidirectional=bool(shape["bidirectional"]),
        )
        return GraphScorer(graph, refresh=False)
    model = SharedUserModel(
        nu, ni, int(shape["n_domains"]), d, cfg.hidden, item_map=torch.arange(ni)
    )
    return DomainScorer(model, int(shape["target"]))


class CrossDomainMethod:
    """Settings of one cross-domain method: its name, :class:`CrossDomainConfig` and the
    evaluation tasks' sampler settings (the scenario's protocol, or ``sampler``).

    Example:
        >>> from metarec.methods.crossdomain.settings import CrossDomainConfig
        >>> m = CrossDomainMethod("emcdr+adapt", CrossDomainConfig(epochs=2),
        ...                       sampler=SamplerConfig(n_support=3, n_query=5))
        >>> m.name, m.sampler.n_support
        ('emcdr+adapt', 3)
    """

    def __init__(
        self,
        name: str,
        settings: CrossDomainConfig,
        scenario: Scenario | None = None,
        *,
        sampler: SamplerConfig | None = None,
    ) -> None:
        parse_method(name)
        if sampler is None and scenario is None:
            raise ConfigError(
                f"CrossDomainMethod({name!r}): pass the scenario (its protocol gives the tasks' "
                "sampler settings) or sampler=SamplerConfig(n_support=..., n_query=...)"
            )
        self.name, self.settings, self.scenario = name, settings, scenario
        self.sampler = sampler or sampler_config(scenario.protocol)  # type: ignore[union-attr]

    def fit(self, data: FitData) -> CrossDomainFitted:
        """Train on meta-train (best epoch on meta-val), then choose the ``+adapt`` step size on
        meta-val for the scenario's shots. ``m`` and ``m+adapt`` train alike: with a
        ``data.memo`` (a benchmark's, one per seed) the second reuses the first's fit."""
        scfg = self.sampler
        base, _ = parse_method(self.name)
        ranking, relevance = self.ranking
        key = ("crossdomain", base, self.settings, ranking, relevance, data.seed, id(data.splits))
        prev = None if data.memo is None else data.memo.get(key)
        if prev is not None:
            fm = FittedMethod(
                self.name,
                data.table,
                data.splits,
                prev.view,
                prev.scorer,
                self.settings,
                dict(prev.log),
                prev.fit_seconds,
                ranking=prev.ranking,
                relevance=prev.relevance,
                objective=prev.objective,
            )
        else:
            with progress_bars(data.progress):
                fm = fit_method(
                    self.name,
                    data.table,
                    data.splits,
                    seed=data.seed,
                    config=self.settings,
                    val_sampler=scfg,
                    ranking=ranking,
                    relevance=relevance,
                )
            if data.memo is not None:
                data.memo[key] = fm
        fitted = CrossDomainFitted.from_fitted_method(fm, scfg)
        if prev is not None:
            fitted.info["shared_with"] = f"{prev.method}-s{data.seed}"
        return fitted

    @property
    def ranking(self) -> tuple[bool, float | None]:
        """``(ranking, relevance)`` of the scenario's protocol: a ranking scenario trains and
        selects the method to rank (:func:`~metarec.methods.crossdomain.methods.fit_method`);
        ``(False, None)`` without a scenario or in a rating one."""
        p = None if self.scenario is None else self.scenario.protocol
        if p is None or not p.ranking:
            return False, None
        return True, p.relevance

    def with_settings(self, **changes: Any) -> CrossDomainMethod:
        return CrossDomainMethod(
            self.name, replace(self.settings, **changes), self.scenario, sampler=self.sampler
        )
