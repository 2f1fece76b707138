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
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.build import sampler_config
from metarec.episodes.sampler import SamplerConfig
from metarec.methods.base import Adaptation, FitData
from metarec.methods.crossdomain._train import stage_log
from metarec.methods.crossdomain.bridges import EMCDR, PTUPCDR
from metarec.methods.crossdomain.bridges import Mapping as BridgeMapping
from metarec.methods.crossdomain.evaluate import AdaptConfig, UserVectors, zero_shot_then_adapt
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
    chosen on meta-val (``None``: zero-shot) and the sizes that rebuild the module."""

    def __init__(
        self,
        name: str,
        table: InteractionTable,
        scorer: nn.Module,
        settings: CrossDomainConfig,
        chosen: AdaptConfig | None,
        shape: dict[str, Any],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.table, self.scorer, self.settings = name, table, scorer, settings
        self.chosen, self.shape, self.info = chosen, shape, info or {}
        self.base, self.adapts = parse_method(name)
        self.training_log = TrainingLog()

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> UserVectors:
        """Zero-shot vectors of the tasks' users, then (``+adapt``, or ``steps`` given) gradient
        steps on each vector over its support (step size: ``lr``, else the one chosen on meta-val)."""
        c = self.chosen
        loss = "mse" if self.table.feedback == "explicit" else "bce"
        n = steps if steps is not None else (c.steps if c is not None else 0)
        a = None
        if n:
            rate = lr if lr is not None else (c.lr if c is not None else self.settings.adapt_lrs[0])
            a = AdaptConfig(n, rate, c.l2 if c is not None else self.settings.adapt_l2, loss)
        return zero_shot_then_adapt(self.scorer, support, a)  # type: ignore[arg-type]

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
        c = self.chosen
        return {
            "crossdomain": to_dict(self.settings),
            "shape": self.shape,
            "chosen": None
            if c is None
            else {"steps": c.steps, "lr": c.lr, "l2": c.l2, "loss": c.loss},
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
            fm.method, fm.table, scorer, fm.config, chosen, _shape(fm.base, scorer, fm.table), info
        )
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
        return cls(name, table, _skeleton(base, settings, shape), settings, chosen, shape)


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
        key = ("crossdomain", base, self.settings, data.seed, id(data.splits))
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
                )
            if data.memo is not None:
                data.memo[key] = fm
        fitted = CrossDomainFitted.from_fitted_method(fm, scfg)
        if prev is not None:
            fitted.info["shared_with"] = f"{prev.method}-s{data.seed}"
        return fitted

    def with_settings(self, **changes: Any) -> CrossDomainMethod:
        return CrossDomainMethod(
            self.name, replace(self.settings, **changes), self.scenario, sampler=self.sampler
        )
