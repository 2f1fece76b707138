"""What a method's training did: :class:`TrainingLog`, reported by every
:class:`~metarec.methods.Fitted` (``fitted.training_log``) and kept in its run directory.

The log is the outer loop's rows (``{"step", "loss", "tasks_per_s"?, "skipped"?, "val": {metric:
value}?}``, the lines of ``metrics.jsonl``) and a summary: the steps run (outer steps, or epochs
for the methods that train by epoch), the step whose weights were kept, whether patience stopped
training, the wall-clock seconds. A run directory holds it as ``metrics.jsonl`` and
``summary.json`` (:meth:`TrainingLog.write`, :meth:`TrainingLog.read`), for every method.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from metarec.runs.checkpoint import atomic_write_bytes, atomic_write_json

__all__ = ["TrainingLog", "METRICS_FILE", "SUMMARY_FILE"]

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class TrainingLog:
    """A method's training, as the outer loop saw it.

    Attributes:
        steps: outer steps (``unit="step"``) or epochs (``unit="epoch"``) run.
        best_step: the step whose weights were kept (0: the initial weights, or no selection).
        stopped_early: patience ended training before ``budget``.
        seconds: wall-clock time of training.
        budget: the steps asked for (``None``: not an iterative method).
        skipped_steps: steps whose update was skipped (a non-finite loss or meta-gradient).
        tasks: meta-train tasks seen (0 for methods that train on rows).
        metric: the meta-val metric of :attr:`curve` (``"mae"``, ``"auc"``, or a protocol's own).
        best_val: the meta-val metrics at ``best_step``.
        unit: ``"step"`` or ``"epoch"``.
        rows: one row per step: ``{"step", "loss", "val": {metric: value}, ...}``.

    Example:
        >>> log = TrainingLog(steps=2, best_step=2, metric="mae", rows=(
        ...     {"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7, "val": {"mae": 0.8}}))
        >>> log.curve
        ((2, 0.8),)
    """

    steps: int = 0
    best_step: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    budget: int | None = None
    skipped_steps: int = 0
    tasks: int = 0
    metric: str | None = None
    best_val: Mapping[str, Any] = field(default_factory=dict)
    unit: str = "step"
    rows: tuple[Mapping[str, Any], ...] = ()

    @property
    def curve(self) -> tuple[tuple[int, float], ...]:
        """``(step, meta-val metric)`` at every validation."""
        out = []
        for r in self.rows:
            v = r.get("val")
            if isinstance(v, Mapping) and self.metric in v and v[self.metric] is not None:
                out.append((int(r["step"]), float(v[self.metric])))
        return tuple(out)

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    def with_time(self, seconds: float) -> TrainingLog:
        return replace(self, seconds=float(seconds))

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` entries of this log."""
        return {
            "steps": self.steps,
            "best_step": self.best_step,
            "best_val": dict(self.best_val),
            "skipped_steps": self.skipped_steps,
            "seconds": round(self.seconds, 2),
            "tasks_per_s": round(self.tasks_per_s, 1),
            "stopped_early": self.stopped_early,
            "budget": self.budget,
            "unit": self.unit,
            "primary_metric": self.metric,
        }

    def write(self, run_dir: str | os.PathLike[str], **extra: Any) -> None:
        """Write ``metrics.jsonl`` (the rows) and ``summary.json`` (the summary and ``extra``)."""
        run = Path(run_dir)
        lines = "".join(json.dumps(_plain(r)) + "\n" for r in self.rows)
        atomic_write_bytes(run / METRICS_FILE, lines.encode())
        atomic_write_json(run / SUMMARY_FILE, {**self.summary(), **extra})

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> TrainingLog:
        """The log of a run directory (an empty one when it holds none)."""
        run = Path(run_dir)
        rows: list[dict[str, Any]] = []
        p = run / METRICS_FILE
        if p.is_file():
            for line in p.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if isinstance(r, dict) and "step" in r:
                    rows.append(r)
        s: dict[str, Any] = {}
        if (run / SUMMARY_FILE).is_file():
            try:
                raw = json.loads((run / SUMMARY_FILE).read_text())
                s = raw if isinstance(raw, dict) else {}
            except json.JSONDecodeError:
                s = {}
        steps = int(s.get("steps", rows[-1]["step"] if rows else 0) or 0)
        seconds = float(s.get("seconds", 0.0) or 0.0)
        tps = float(s.get("tasks_per_s", 0.0) or 0.0)
        budget = s.get("budget")
        return cls(
            steps=steps,
            best_step=int(s.get("best_step", 0) or 0),
            stopped_early=bool(s.get("stopped_early", False)),
            seconds=seconds,
            budget=None if budget is None else int(budget),
            skipped_steps=int(s.get("skipped_steps", 0) or 0),
            tasks=int(round(tps * seconds)),
            metric=s.get("primary_metric") or _metric_of(rows),
            best_val=dict(s.get("best_val") or {}),
            unit=str(s.get("unit", "step")),
            rows=tuple(rows),
        )


def _metric_of(rows: Sequence[Mapping[str, Any]]) -> str | None:
    for r in rows:
        v = r.get("val")
        if isinstance(v, Mapping) and v:
            return str(next(iter(v)))
    return None


def _plain(x: Any) -> Any:
    """JSON-ready: non-finite floats become ``None``."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
