"""The one outer loop every family trains with: :func:`outer_loop`.

A family brings its own step (sample a meta-batch or an epoch of rows, compute the loss, update
the weights) and its own validation (a meta-val score, higher is better); the loop does the
rest, the same way for everyone::

    while state.step < steps:
        done = step(state.step)                                  # the family's update
        state.step += 1; row = {"step", "loss", ...}
        if state.step % val_every == 0 or state.step == steps:   # meta-val, never a test pool
            score, metrics = validate()
            if score > state.best_score: keep_best(state.step)   # best weights so far
            elif patience runs out: state.stopped_early = True
        for sink in sinks: sink.log(row)                         # metrics.jsonl, TensorBoard, ...
        progress bar; checkpoint(state) every checkpoint_every   # exact resume
        if state.stopped_early: break

:class:`LoopState` is everything the loop carries between steps, so a family that checkpoints
it (the MAML family's ``last.pt``) resumes exactly. The loop draws no random number and seeds
nothing: randomness lives in the family's step (its sampler's generator).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tqdm.auto import tqdm

from metarec.train.log import TrainingLog
from metarec.train.loggers import Logger

__all__ = ["Step", "Validation", "LoopState", "outer_loop", "progress_bars", "training_log"]

_PROGRESS: ContextVar[bool] = ContextVar("metarec_progress_bars", default=False)


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """Within the block, loops called without ``progress=`` show a bar when ``show`` (a family
    whose fitters nest several loops turns its :class:`~metarec.methods.FitData`'s ``progress``
    on for all of them at once)."""
    token = _PROGRESS.set(bool(show))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


class Step(NamedTuple):
    """What one step did: its ``loss``, the meta-train ``tasks`` it saw and whether its update
    was ``skipped`` (a non-finite loss or gradient)."""

    loss: float
    tasks: int = 0
    skipped: bool = False


class Validation(NamedTuple):
    """A meta-val check: ``score`` (higher is better) and the ``metrics`` logged with it."""

    score: float
    metrics: Mapping[str, Any]


@dataclass
class LoopState:
    """Everything the loop carries between steps (checkpoint it to resume exactly)."""

    step: int = 0
    best_score: float = -math.inf
    best_step: int = 0
    since: int = 0
    best_val: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0
    tasks: int = 0
    stopped_early: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)


def outer_loop(
    step: Callable[[int], Step],
    *,
    steps: int,
    val_every: int,
    validate: Callable[[], Validation] | None = None,
    keep_best: Callable[[int], None] | None = None,
    patience: int | None = None,
    state: LoopState | None = None,
    checkpoint: Callable[[LoopState], None] | None = None,
    checkpoint_every: int | None = None,
    sinks: Sequence[Logger] = (),
    progress: bool | None = None,
    desc: str = "train",
    unit: str = "step",
    stop_after: int | None = None,
    keep_rows: bool = True,
) -> LoopState:
    """Run ``step`` until ``steps`` (or patience, or ``stop_after``), validating every
    ``val_every`` steps and at the last; see the module docstring.

    Args:
        step: ``step(i) -> Step``: the family's update number ``i + 1``.
        validate: ``() -> Validation`` on meta-val (``None``: no selection; the last weights).
        keep_best: called with the step when the score improves (save or snapshot the weights).
        patience: stop after this many validations without a gain.
        state: resume from this state (default: a fresh one).
        checkpoint: called with the state every ``checkpoint_every`` steps, at the last step
            and when patience stops training.
        sinks: loggers that get every row (``log(row)``).
        progress: show a progress bar (``None``: as :func:`progress_bars` says, else no);
            desc, unit: its label.
        stop_after: stop (as if killed) after this step, having checkpointed; for tests.
        keep_rows: keep every row in ``state.rows`` (for the :class:`TrainingLog`).
    """
    st = state or LoopState()
    bar = tqdm(
        total=steps,
        initial=st.step,
        disable=not (_PROGRESS.get() if progress is None else progress),
        desc=desc,
        unit=unit,
        leave=False,
        mininterval=0.5,
    )
    metric = None
    t0, tasks0 = time.perf_counter(), st.tasks
    try:
        while st.step < steps:
            done = step(st.step)
            st.step += 1
            row: dict[str, Any] = {"step": st.step, "loss": float(done.loss)}
            if done.skipped:
                st.skipped += 1
                row["skipped"] = True
            st.tasks += done.tasks
            if done.tasks:
                tps = (st.tasks - tasks0) / max(time.perf_counter() - t0, 1e-9)
                row["tasks_per_s"] = round(tps, 1)
            if validate is not None and (st.step % val_every == 0 or st.step == steps):
                v = validate()
                row["val"] = dict(v.metrics)
                metric = metric or next(iter(v.metrics), None)
                if v.score > st.best_score:
                    st.best_score, st.best_step, st.best_val, st.since = (
                        v.score,
                        st.step,
                        dict(v.metrics),
                        0,
                    )
                    if keep_best is not None:
                        keep_best(st.step)
                else:
                    st.since += 1
                if patience is not None and st.since >= patience:
                    st.stopped_early = True
            for sink in sinks:
                sink.log(row)
            if keep_rows:
                st.rows.append(row)
            shown = {metric: f"{st.best_val[metric]:.4f}"} if metric in st.best_val else {}
            bar.set_postfix(loss=f"{done.loss:.4f}", refresh=False, **shown)  # redrawn by update
            bar.update(1)
            last = st.step == steps or st.stopped_early
            if checkpoint is not None and (
                last or (checkpoint_every is not None and st.step % checkpoint_every == 0)
            ):
                checkpoint(st)
            if st.stopped_early or (stop_after is not None and st.step >= stop_after):
                break
    finally:
        bar.close()
    return st


def training_log(
    st: LoopState, *, budget: int, seconds: float, metric: str | None, unit: str = "step"
) -> TrainingLog:
    """The :class:`TrainingLog` of a finished loop."""
    return TrainingLog(
        steps=st.step,
        best_step=st.best_step,
        stopped_early=st.stopped_early,
        seconds=seconds,
        budget=budget,
        skipped_steps=st.skipped,
        tasks=st.tasks,
        metric=metric,
        best_val=dict(st.best_val),
        unit=unit,
        rows=tuple(st.rows),
    )
