"""The ``[model]``, ``[algorithm]`` and ``[train]`` sections of a scenario: the recommender
(:class:`ModelConfig`), the method and its engine settings (:class:`AlgorithmSection`) and the
outer loop's budget (:class:`TrainConfig`); and the engine's own settings, :class:`AlgorithmConfig`
(the algorithms are described in :mod:`metarec.algorithms`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from metarec._errors import ConfigError, suggest
from metarec.config._checks import _check_at_least
from metarec.config.limits import check_device, check_seed, check_steps
from metarec.config.objective import RankingObjective
from metarec.config.schema import cli_literal

__all__ = [
    "ALGORITHMS",
    "ENGINES",
    "LOSS_NAMES",
    "AlgorithmConfig",
    "AlgorithmSection",
    "ModelConfig",
    "TrainConfig",
]


ENGINES = ("auto", "analytic", "vmap")
ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd", "anil", "global", "finetune")
LOSS_NAMES = ("mse", "bce", "bpr", "softmax")
"""The engine's losses (:data:`metarec.algorithms.losses.LOSSES` implements them)."""
_META = ("maml", "fomaml", "metasgd", "anil")  # differentiate through (or past) the inner loop
_NO_INNER = ("global", "finetune")  # no inner loop in training


@dataclass(frozen=True)
class _Options:
    """The options of an engine algorithm, declared once: the engine's
    :class:`AlgorithmConfig` and the scenario's ``[algorithm]`` section
    (:class:`AlgorithmSection`) both have exactly these (same names, defaults and rules)."""

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


@dataclass(frozen=True)
class AlgorithmConfig(_Options):
    """Which algorithm, and its hyper-parameters: the options of :class:`_Options` (the same in
    a scenario's ``[algorithm]`` section), the inner-loop patterns and the resolved loss.

    Args:
        name: one of :data:`ALGORITHMS`.
        inner_steps: inner-loop gradient steps (and fine-tuning steps at evaluation).
        inner_lr: inner-loop learning rate (Meta-SGD / MAML++: the initial learned rates).
        first_order: ``True`` detaches the inner gradients of ``maml``/``anil``/``metasgd``
            (``maml`` + ``first_order=True`` is ``fomaml``); ``fomaml`` and ``reptile`` are
            first-order whatever the flag.
        meta_batch: tasks per outer step (the outer loop samples this many).
        chunk_size: run the task axis in chunks of this many tasks (bounds peak memory; the
            gradients equal the unchunked ones); ``None`` = all at once.
        sort_tasks: order the tasks by support size before chunking, so that each chunk is
            padded only to its own longest task (the meta-gradient is a sum over tasks, so only
            the float summation order changes); useful with ``chunk_size < meta_batch``.
        encode_once: for a model with an ``encode``/``decide`` split whose encoder holds no
            inner-loop parameter (MeLU: only the decision layers adapt), compute each task's
            encoding once, outside the inner loop (same values and meta-gradients);
            ``False`` runs the full forward pass at every step.
        buckets: group the tasks of a meta-batch by support size into at most this many
            groups (exact minimum padded area, :func:`~metarec.algorithms.buckets.bucket_tasks`),
            each run at its own width (the meta-gradient is a sum over tasks, so only the float
            summation order changes); 1 = one group padded to the longest task.
        engine: ``"auto"`` (the analytic batched inner loop of
            :mod:`metarec.algorithms.mlp` when the model qualifies, else ``torch.func``),
            ``"analytic"`` (require it) or ``"vmap"`` (always the general ``torch.func`` path).
        per_step_lr: MAML++ learned per-step, per-tensor inner rates.
        multi_step_loss: MAML++ weighted query loss after every inner step.
        adapt: inner-loop name patterns overriding the model's ``adapt``.
        loss: ``"mse"`` (explicit), ``"bce"``, ``"bpr"`` or ``"softmax"`` (sampled softmax with
            the logQ correction) on 0/1 labels (implicit, or relevance labels).
        relevance, negatives, proposal: the :class:`~metarec.config.objective.RankingObjective`
            of a run trained to rank on explicit ratings (``relevance``: ``None`` for every
            other run): adaptation turns a support's ratings into relevance labels
            (``rating >= relevance``) and adds ``negatives`` uniformly sampled negatives per
            interaction before the inner loop; training drew its negatives by ``proposal``.
            Set by the training run from the scenario (:attr:`ranking`).

    Example:
        >>> AlgorithmConfig("maml", inner_steps=0)
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: inner_steps=0: the inner loop needs at least one step; pass inner_steps >= 1
        >>> AlgorithmConfig("global").default_steps, AlgorithmConfig("maml").default_steps
        (0, 5)
    """

    adapt: tuple[str, ...] | None = None
    loss: str = "mse"
    relevance: float | None = None
    negatives: int = 0
    proposal: str = "uniform"

    def __post_init__(self) -> None:
        n = self.name
        if n not in ALGORITHMS:
            raise ConfigError(
                f"name={n!r}: unknown algorithm; choose one of {ALGORITHMS}{suggest(n, ALGORITHMS)}"
            )
        _int(self.inner_steps, "inner_steps", "the inner loop needs at least one step")
        if (
            isinstance(self.inner_lr, bool)
            or not isinstance(self.inner_lr, (int, float))
            or not (math.isfinite(self.inner_lr) and self.inner_lr > 0)
        ):
            raise ConfigError(
                f"inner_lr={self.inner_lr!r}: must be a finite number > 0; pass e.g. inner_lr=0.01"
            )
        _int(self.meta_batch, "meta_batch", "each outer step needs at least one task")
        if self.chunk_size is not None:
            _int(
                self.chunk_size, "chunk_size", "a chunk holds at least one task (None: no chunking)"
            )
        _int(self.buckets, "buckets", "tasks form at least one group (1: no grouping)")
        if self.engine not in ENGINES:
            raise ConfigError(
                f"engine={self.engine!r}: unknown engine; choose one of {ENGINES}{suggest(self.engine, ENGINES)}"
            )
        if self.loss not in LOSS_NAMES:
            raise ConfigError(
                f"loss={self.loss!r}: unknown loss; choose one of {LOSS_NAMES}{suggest(self.loss, LOSS_NAMES)}"
            )
        if self.relevance is not None:
            RankingObjective(self.loss, self.relevance, self.negatives, self.proposal)
        for flag in ("first_order", "sort_tasks", "encode_once"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag}={getattr(self, flag)!r}: must be True or False")
        if self.first_order and n in _NO_INNER:
            raise ConfigError(
                f"first_order=True with name={n!r}: {n} has no inner loop in training, so the "
                "flag has no effect; pass first_order=False"
            )
        if self.per_step_lr and n not in ("maml", "fomaml", "anil"):
            why = (
                "Meta-SGD already learns its rates per parameter"
                if n == "metasgd"
                else f"{n} has no meta-learned inner rates"
            )
            raise ConfigError(
                f"per_step_lr=True with name={n!r}: {why}; use name='maml' (or 'anil') with per_step_lr=True"
            )
        if self.multi_step_loss and n not in _META:
            raise ConfigError(
                f"multi_step_loss=True with name={n!r}: the multi-step query loss needs a "
                f"meta-gradient through the inner loop; use one of {_META}"
            )
        if self.adapt is not None:
            if isinstance(self.adapt, str):
                raise ConfigError(
                    f"adapt={self.adapt!r}: expected a tuple of patterns; pass adapt=({self.adapt!r},)"
                )
            object.__setattr__(self, "adapt", tuple(self.adapt))
            if not self.adapt:
                raise ConfigError(
                    "adapt=(): no parameter would adapt; pass patterns, or adapt=None for the model's default"
                )
            if n == "anil":
                raise ConfigError(
                    f"adapt={self.adapt!r} with name='anil': ANIL adapts the model's head only; "
                    "pass name='maml' with these patterns instead"
                )

    @property
    def ranking(self) -> RankingObjective | None:
        """The ranking objective of a run trained to rank on ratings (``None``: the targets are
        used as they are)."""
        if self.relevance is None:
            return None
        return RankingObjective(self.loss, self.relevance, self.negatives, self.proposal)

    @property
    def is_first_order(self) -> bool:
        """Whether inner gradients are detached (``fomaml``, ``reptile``, or ``first_order=True``)."""
        return self.first_order or self.name in ("fomaml", "reptile")

    @property
    def default_steps(self) -> int:
        """Inner steps at adaptation when none are asked for: ``global`` adapts nothing (0),
        every other algorithm runs its ``inner_steps``. The one home of that rule."""
        return 0 if self.name == "global" else self.inner_steps

    @property
    def meta_learned_lrs(self) -> bool:
        """Whether the algorithm state holds learned inner learning rates."""
        return self.name == "metasgd" or self.per_step_lr


def _int(value: Any, arg: str, rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{arg}={value!r}: {rule}; pass {arg} >= 1")


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


_ENGINE_FIELDS = tuple(f.name for f in dataclasses.fields(_Options))


@dataclass(frozen=True)
class AlgorithmSection(_Options):
    """The method and its engine settings (section ``[algorithm]``).

    Fields:
        name: the method: an engine algorithm (``"maml"``, ``"fomaml"``, ``"reptile"``,
            ``"metasgd"``, ``"anil"``, ``"global"``, ``"finetune"``; see ``metarec.algorithms``),
            ``"melu-ref"``, ``"popularity"``, a cross-domain method (``"emcdr"``,
            ``"ptupcdr+adapt"``, ...; settings in ``[crossdomain]``) or any name registered with
            ``metarec.register_method``.
        inner_steps, inner_lr, first_order, meta_batch, chunk_size, sort_tasks, encode_once,
            buckets, engine, per_step_lr, multi_step_loss: the engine's options, declared once
            for both (:class:`AlgorithmConfig` has the same fields: same names, defaults and rules).
        loss: ``"mse"``, ``"bce"``, ``"bpr"`` or ``"softmax"`` (sampled softmax with the logQ
            correction); ``None`` = ``"mse"`` for explicit feedback, ``"bce"`` for implicit. The
            click losses on explicit ratings need a ranking scenario (``protocol.ranking``),
            where they train to rank (:mod:`metarec.config.objective`).
        eval_steps: inner steps at evaluation (``None`` = ``inner_steps``; ``global``: 0).
        eval_lr: inner learning rate at evaluation (``None`` = ``inner_lr``).

    For an engine algorithm every value is checked at load time by building the engine's config,
    and a rejected value names its ``--set`` key.

    Example:
        >>> s = AlgorithmSection(inner_steps=3, eval_lr=0.05)
        >>> s.engine_config("implicit").loss, s.engine_config("implicit").inner_steps
        ('bce', 3)
    """

    loss: Literal["mse", "bce", "bpr", "softmax"] | None = None
    eval_steps: int | None = None
    eval_lr: float | None = None

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "eval_steps")
        for name in ("inner_steps", "eval_steps"):  # bound (metarec.config.limits.MAX_STEPS)
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
        check_seed(self.seed)  # bound (metarec.config.limits)
        check_device(self.device)
        if self.outer_lr <= 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            name = "outer_lr" if self.outer_lr <= 0 else "grad_clip"
            raise ConfigError(
                f"{name}={getattr(self, name)}: must be > 0; e.g. outer_lr = 0.001, grad_clip = 10.0"
            )
