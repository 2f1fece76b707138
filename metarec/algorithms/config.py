"""Algorithm choice and hyper-parameters, and the learnable algorithm state.

Algorithms (``AlgorithmConfig.name``):

* ``maml``: second-order MAML (``first_order=True`` makes it FOMAML).
* ``fomaml``: first-order MAML (the inner gradients are detached).
* ``reptile``: outer gradient ``theta - theta_adapted`` (fast weights), averaged over tasks,
  for an outer optimiser (plain SGD with rate ``eps`` gives Reptile's
  ``theta <- theta + eps * (theta_adapted - theta)``); slow weights get the first-order query
  gradient at the adapted point.
* ``metasgd``: MAML with a learned inner learning rate per parameter entry (``lr.<name>``).
* ``anil``: MAML adapting only the model's head (``model.head_patterns``).
* ``global``: no inner loop; plain training on every interaction of the task (support and
  query) with the initial weights; evaluated without adaptation.
* ``finetune``: trained like ``global``; evaluated after fine-tuning on the support set.

MAML++ options (maml, fomaml, anil): ``per_step_lr`` learns one inner rate per parameter tensor
and step (``step_lr.<name>``, shape ``(inner_steps,)``); ``multi_step_loss`` (also metasgd)
takes a weighted sum of the query losses after every inner step (:func:`msl_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from metarec._errors import ConfigError, suggest
from metarec.algorithms.losses import LOSSES

__all__ = [
    "ALGORITHMS",
    "ENGINES",
    "AlgorithmConfig",
    "init_algorithm_state",
    "msl_weights",
    "state_lrs",
]

ENGINES = ("auto", "analytic", "vmap")
ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd", "anil", "global", "finetune")
_META = ("maml", "fomaml", "metasgd", "anil")  # differentiate through (or past) the inner loop
_NO_INNER = ("global", "finetune")  # no inner loop in training


@dataclass(frozen=True)
class AlgorithmConfig:
    """Which algorithm, and its hyper-parameters.

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
        loss: ``"mse"`` (explicit), ``"bce"`` or ``"bpr"`` (implicit).

    Example:
        >>> AlgorithmConfig("maml", inner_steps=0)
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: inner_steps=0: the inner loop needs at least one step; pass inner_steps >= 1
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
    engine: str = "auto"
    per_step_lr: bool = False
    multi_step_loss: bool = False
    adapt: tuple[str, ...] | None = None
    loss: str = "mse"

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
        if self.loss not in LOSSES:
            raise ConfigError(
                f"loss={self.loss!r}: unknown loss; choose one of {tuple(LOSSES)}{suggest(self.loss, LOSSES)}"
            )
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
    def is_first_order(self) -> bool:
        """Whether inner gradients are detached (``fomaml``, ``reptile``, or ``first_order=True``)."""
        return self.first_order or self.name in ("fomaml", "reptile")

    @property
    def meta_learned_lrs(self) -> bool:
        """Whether the algorithm state holds learned inner learning rates."""
        return self.name == "metasgd" or self.per_step_lr


def init_algorithm_state(
    cfg: AlgorithmConfig, fast: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Learnable algorithm state for ``cfg``, to be optimised with the model's parameters.

    Args:
        cfg: the algorithm config.
        fast: the inner-loop parameters (``split_params(model, ...)[0]``).

    Returns:
        ``{}`` for most algorithms; Meta-SGD: ``{"lr.<name>": tensor like the parameter}``;
        MAML++ ``per_step_lr``: ``{"step_lr.<name>": (inner_steps,)}``; every entry starts at
        ``inner_lr`` and is a fresh leaf with ``requires_grad=True``.
    """
    if cfg.name == "metasgd":
        return {
            f"lr.{k}": torch.full_like(v.detach(), cfg.inner_lr).requires_grad_()
            for k, v in fast.items()
        }
    if cfg.per_step_lr:
        return {
            f"step_lr.{k}": torch.full(
                (cfg.inner_steps,), cfg.inner_lr, dtype=v.dtype, device=v.device
            ).requires_grad_()
            for k, v in fast.items()
        }
    return {}


def state_lrs(
    cfg: AlgorithmConfig, state: Mapping[str, torch.Tensor] | None, fast: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
    """``(lrs, per_step_lrs)`` keyed by parameter name, checked against ``cfg`` and ``fast``."""
    if not cfg.meta_learned_lrs:
        return None, None
    prefix = "lr." if cfg.name == "metasgd" else "step_lr."
    missing = [k for k in fast if prefix + k not in (state or {})]
    if missing:
        raise ConfigError(
            f"state: name={cfg.name!r} (per_step_lr={cfg.per_step_lr}) needs learned rates, "
            f"{prefix + missing[0]!r} is missing; create them with "
            "state = init_algorithm_state(cfg, split_params(model, ...)[0]) and pass state=state"
        )
    assert state is not None
    rates = {k: state[prefix + k] for k in fast}
    return (rates, None) if cfg.name == "metasgd" else (None, rates)


def msl_weights(steps: int, progress: float = 0.0, min_weight: float = 0.03) -> torch.Tensor:
    """MAML++ multi-step loss weights ``(steps,)``, summing to 1.

    ``progress`` in ``[0, 1]`` anneals from uniform (``1/steps`` each) to mostly the final step:
    each non-final weight is ``max((1 - progress) / steps, min_weight / steps)``, the final one
    takes the rest (Antoniou et al., "How to train your MAML", ICLR 2019).
    """
    if not 0.0 <= progress <= 1.0:
        raise ConfigError(
            f"progress={progress!r}: must be in [0, 1] (fraction of the annealing done)"
        )
    w = max((1.0 - progress) / steps, min_weight / steps)
    out = torch.full((steps,), w, dtype=torch.get_default_dtype())
    out[-1] = 1.0 - w * (steps - 1)
    return out


def _int(value: Any, arg: str, rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{arg}={value!r}: {rule}; pass {arg} >= 1")
