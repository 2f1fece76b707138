"""Hyper-parameters of the cross-domain methods, and how to read them off a scenario.

:class:`CrossDomainConfig` is a frozen dataclass; a plain mapping (from TOML or ``--set``
overrides) becomes one through :func:`metarec.config.from_dict`, so an unknown key is an error
with a close-match suggestion. :func:`config_from_scenario` copies the evaluation protocol (query
size, sampled negatives, order, ranking cut-off) from a scenario, so the cross-domain methods
are scored on the same query sets as the meta-learning methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from metarec._errors import ConfigError
from metarec.config import Scenario, from_dict

__all__ = ["CrossDomainConfig", "config_from_scenario", "as_config", "FREEZE"]

FREEZE = ("none", "embeddings", "all-but-head")


@dataclass(frozen=True)
class CrossDomainConfig:
    """Settings of :func:`~metarec.methods.crossdomain.methods.fit_and_evaluate` (defaults in brackets).

    Models and optimisation:
        embedding_dim: user/item embedding size ``d`` [32].
        hidden: width of every small MLP (user tower, EMCDR's MLP mapping, PTUPCDR's
            meta-network, the DANN discriminator) [64].
        batch_size: training positives per step [4096].
        lr: Adam learning rate of every stage [0.005].
        l2: ``l2 * mean(||p_u||^2 + ||q_i||^2)`` over a batch's rows [1e-4].
        mf_epochs: epochs of the per-domain MF models and of source pre-training [10].
        epochs: epochs of the final stage (mapping excepted), the best on meta-val kept [10].
        patience: stop the final stage after this many epochs without a better meta-val score [3].
        train_negatives: implicit feedback: sampled negatives per training positive [4].

    Methods:
        mapping: EMCDR's mapping, ``"linear"`` or ``"mlp"`` ["mlp"].
        mapping_epochs: EMCDR mapping epochs (passes over the overlapping users) [100].
        history_len: PTUPCDR: source items per user fed to the meta-network [20].
        freeze: finetune-transfer: ``"none"``, ``"embeddings"`` (user embeddings fixed) or
            ``"all-but-head"`` (user embeddings and tower fixed) ["embeddings"].
        joint_weights: ``(w_s, w_t)`` of the source and target losses (joint, DA, DANN) [(1, 1)].
        joint_weight_grid: candidate ``(w_s, w_t)`` pairs; when given, one model is trained per
            pair and the best on meta-val is kept (weights chosen on validation) [None].
        uncertainty: learn the two weights by uncertainty weighting instead [False].
        da_weight: lambda of the DA regulariser (da-*) [1.0].
        dann_weight: DANN's final gradient-reversal lambda (ramped up from 0) [0.1].
        reg_samples: distinct users per domain per step fed to the regulariser [512].

    Few-shot adaptation (methods named ``<method>+adapt``):
        adapt_steps: gradient steps on the user vector [10].
        adapt_lrs: step sizes tried on meta-val; the best is used on the test pools
            [(0.03, 0.1, 0.3, 1.0)].
        adapt_l2: weight of the prior ``||v - v0||^2`` [0.1].

    Evaluation (copy them from the scenario with :func:`config_from_scenario`):
        n_query, negatives, order: the sampler's query size, sampled negatives per positive,
            support order [10, 0, "random"].
        k: ranking cut-off [10].
        eval_seed, eval_batch_size: the evaluation sampler's seed and batch size; the defaults
            equal :func:`metarec.metrics.evaluate.evaluate_pool`'s, so the query sets (and sampled
            negatives) are the meta-learning methods' [0, 256].
        val_tasks: meta-val tasks scored per validation (``None``: all) [512].
    """

    embedding_dim: int = 32
    hidden: int = 64
    batch_size: int = 4096
    lr: float = 0.005
    l2: float = 1e-4
    mf_epochs: int = 10
    epochs: int = 10
    patience: int | None = 3
    train_negatives: int = 4
    mapping: Literal["linear", "mlp"] = "mlp"
    mapping_epochs: int = 100
    history_len: int = 20
    freeze: Literal["none", "embeddings", "all-but-head"] = "embeddings"
    joint_weights: tuple[float, float] = (1.0, 1.0)
    joint_weight_grid: tuple[tuple[float, float], ...] | None = None
    uncertainty: bool = False
    da_weight: float = 1.0
    dann_weight: float = 0.1
    reg_samples: int = 512
    adapt_steps: int = 10
    adapt_lrs: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    adapt_l2: float = 0.1
    n_query: int | None = 10
    negatives: int = 0
    order: Literal["random", "time"] = "random"
    k: int = 10
    eval_seed: int = 0
    eval_batch_size: int = 256
    val_tasks: int | None = 512

    def __post_init__(self) -> None:
        for name in (
            "embedding_dim",
            "hidden",
            "batch_size",
            "mf_epochs",
            "epochs",
            "mapping_epochs",
            "history_len",
            "reg_samples",
            "k",
            "eval_batch_size",
        ):
            _at_least(self, name, 1)
        for name in ("train_negatives", "adapt_steps", "negatives"):
            _at_least(self, name, 0)
        for name in ("patience", "n_query", "val_tasks"):
            if getattr(self, name) is not None:
                _at_least(self, name, 1)
        for name in ("lr",):
            if not (math.isfinite(self.lr) and self.lr > 0):
                raise ConfigError(
                    f"{name}={self.lr!r}: must be a finite number > 0; e.g. {name}=0.005"
                )
        for name in ("l2", "da_weight", "dann_weight", "adapt_l2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name}={v!r}: must be a finite number >= 0")
        if len(self.joint_weights) != 2 or any(
            not (math.isfinite(w) and w >= 0) for w in self.joint_weights
        ):
            raise ConfigError(
                f"joint_weights={self.joint_weights!r}: need two finite weights >= 0 (source, target); e.g. (1.0, 1.0)"
            )
        if self.joint_weight_grid is not None:
            grid = self.joint_weight_grid
            if not grid or any(
                len(w) != 2 or any(not (math.isfinite(x) and x >= 0) for x in w) for w in grid
            ):
                raise ConfigError(
                    f"joint_weight_grid={grid!r}: need one or more (w_s, w_t) pairs of finite weights >= 0; "
                    "e.g. ((1.0, 1.0), (0.3, 1.0), (0.1, 1.0))"
                )
            if self.uncertainty:
                raise ConfigError(
                    "joint_weight_grid with uncertainty=True: the weights are learned; pass one or the other"
                )
        if not self.adapt_lrs or any(not (math.isfinite(x) and x > 0) for x in self.adapt_lrs):
            raise ConfigError(
                f"adapt_lrs={self.adapt_lrs!r}: need at least one step size > 0; e.g. (0.1, 0.3)"
            )


def _at_least(cfg: Any, name: str, low: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{name}={v!r}: must be an int >= {low}; pass {name} >= {low}")


def as_config(config: CrossDomainConfig | Mapping[str, Any] | None) -> CrossDomainConfig:
    """``config`` as a :class:`CrossDomainConfig` (a mapping is checked key by key)."""
    if config is None:
        return CrossDomainConfig()
    if isinstance(config, CrossDomainConfig):
        return config
    if isinstance(config, Mapping):
        return from_dict(CrossDomainConfig, config, "crossdomain")
    raise ConfigError(
        f"config: expected a CrossDomainConfig or a mapping of its fields, got {type(config).__name__}"
    )


def config_from_scenario(
    scenario: Scenario, config: CrossDomainConfig | Mapping[str, Any] | None = None
) -> CrossDomainConfig:
    """``config`` (default: the defaults) with the scenario's evaluation protocol copied in:
    ``n_query``, ``negatives`` and ``order`` from ``[protocol]``, ``k`` from ``[metrics]``."""
    p = scenario.protocol
    order = p.order if p.split != "time" else "time"
    return replace(
        as_config(config),
        n_query=p.n_query,
        negatives=p.negatives,
        order=order,
        k=scenario.metrics.k,
    )
