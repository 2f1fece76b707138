"""The ``[model]``, ``[algorithm]`` and ``[train]`` sections of a scenario: the recommender
(:class:`ModelConfig`), the method and its engine settings (:class:`AlgorithmSection`) and the
outer loop's budget (:class:`TrainConfig`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from metarec._errors import ConfigError
from metarec.algorithms.config import ALGORITHMS, AlgorithmConfig
from metarec.config._checks import _check_at_least
from metarec.limits import check_device, check_seed, check_steps
from metarec.schema import cli_literal

__all__ = ["AlgorithmSection", "ModelConfig", "TrainConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """The recommender being meta-learned.

    Fields:
        name: model name (``"melu"``, ...), see ``metarec.models``.
        embedding_dim: size of the user/item/feature embeddings.
        hidden: widths of the hidden layers of the rating MLP.
        adapt: names of the parameters adapted in the inner loop (``None`` = the model's own
            choice).
        dropout: dropout probability in the MLP.
    """

    name: str = "melu"
    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    adapt: tuple[str, ...] | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "embedding_dim")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"hidden={list(self.hidden)}: each layer width must be >= 1; e.g. hidden = [64, 64]"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout}: must lie in [0, 1); e.g. dropout = 0.1")


_ENGINE_FIELDS = tuple(
    f.name for f in dataclasses.fields(AlgorithmConfig) if f.name not in ("adapt", "loss")
)


@dataclass(frozen=True)
class AlgorithmSection:
    """The method and its engine settings (section ``[algorithm]``).

    Fields:
        name: the method: an engine algorithm (``"maml"``, ``"fomaml"``, ``"reptile"``,
            ``"metasgd"``, ``"anil"``, ``"global"``, ``"finetune"``; see ``metarec.algorithms``),
            ``"melu-ref"``, ``"popularity"``, a cross-domain method (``"emcdr"``,
            ``"ptupcdr+adapt"``, ...; settings in ``[crossdomain]``) or any name registered with
            ``metarec.register_method``.
        inner_steps, inner_lr, first_order, meta_batch, chunk_size, sort_tasks, encode_once,
            buckets, engine, per_step_lr, multi_step_loss: the engine's options, exactly
            :class:`~metarec.algorithms.AlgorithmConfig`'s (same names, defaults and rules).
        loss: ``"mse"``, ``"bce"`` or ``"bpr"``; ``None`` = ``"mse"`` for explicit feedback,
            ``"bce"`` for implicit.
        eval_steps: inner steps at evaluation (``None`` = ``inner_steps``; ``global``: 0).
        eval_lr: inner learning rate at evaluation (``None`` = ``inner_lr``).

    For an engine algorithm every value is checked at load time by building the engine's config,
    and a rejected value names its ``--set`` key.
    """

    name: str = "maml"
    inner_steps: int = 5
    inner_lr: float = 0.01
    first_order: bool = False
    meta_batch: int = 32
    chunk_size: int | None = None
    sort_tasks: bool = False
    encode_once: bool = True
    buckets: int = 2
    engine: Literal["auto", "analytic", "vmap"] = "auto"
    per_step_lr: bool = False
    multi_step_loss: bool = False
    loss: Literal["mse", "bce", "bpr"] | None = None
    eval_steps: int | None = None
    eval_lr: float | None = None

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "eval_steps")
        for name in ("inner_steps", "eval_steps"):  # bound (metarec.limits.MAX_STEPS)
            if isinstance(getattr(self, name, None), int):
                check_steps(getattr(self, name), f"algorithm.{name}")
        if self.eval_lr is not None and not self.eval_lr > 0:
            raise ConfigError(
                f"eval_lr={self.eval_lr!r}: must be > 0; e.g. --set algorithm.eval_lr=0.01, or none"
            )
        if self.name in ALGORITHMS:
            self.engine_config("explicit")

    def engine_config(self, feedback: str, adapt: Sequence[str] | None = None) -> AlgorithmConfig:
        """The engine's :class:`~metarec.algorithms.AlgorithmConfig` of this section
        (``loss`` from ``feedback`` when unset; ``adapt``: the model's inner-loop patterns)."""
        loss = self.loss or ("mse" if feedback == "explicit" else "bce")
        kw = {k: getattr(self, k) for k in _ENGINE_FIELDS}
        try:
            return AlgorithmConfig(**kw, adapt=tuple(adapt) if adapt else None, loss=loss)
        except ConfigError as e:
            key = str(e).split("=", 1)[0].split(" ", 1)[0]
            if key in _ENGINE_FIELDS:
                good = {f.name: f.default for f in dataclasses.fields(AlgorithmConfig)}[key]
                raise ConfigError(f"{e}; e.g. --set algorithm.{key}={cli_literal(good)}") from None
            raise


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop's budget and bookkeeping.

    Fields:
        steps: outer (meta) steps.
        outer_lr: learning rate of the outer optimizer.
        val_every: steps between validations.
        val_tasks: validation tasks per validation.
        patience: stop after this many validations without improvement (``None`` = never).
        grad_clip: clip the meta-gradient norm (``None`` = no clipping).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        bf16: autocast the forward pass to bfloat16 on CUDA.
        checkpoint_every: steps between checkpoints.
        seed: seed of initialisation and task sampling.
        progress: show a progress bar.
        loggers: extra logging callbacks beside ``metrics.jsonl``: ``"tensorboard"`` (writes
            ``RUN_DIR/tensorboard``; extra ``metarec[tensorboard]``), ``"mlflow"`` (extra
            ``metarec[mlflow]``).
    """

    steps: int = 300
    outer_lr: float = 1e-3
    val_every: int = 50
    val_tasks: int = 256
    patience: int | None = None
    grad_clip: float | None = 10.0
    device: str = "auto"
    bf16: bool = False
    checkpoint_every: int = 50
    seed: int = 0
    progress: bool = True
    loggers: tuple[Literal["tensorboard", "mlflow"], ...] = ()

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "steps")
        _check_at_least(self, 1, "val_every", "val_tasks", "patience", "checkpoint_every")
        check_seed(self.seed)  # bound (metarec.limits)
        check_device(self.device)
        if self.outer_lr <= 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            name = "outer_lr" if self.outer_lr <= 0 else "grad_clip"
            raise ConfigError(
                f"{name}={getattr(self, name)}: must be > 0; e.g. outer_lr = 0.001, grad_clip = 10.0"
            )
