"""What a benchmark writes: ``results.jsonl`` rows (:func:`make_rows`), evaluations from
per-task arrays (:func:`evaluation_from_arrays`), the environment record and JSONL files."""

from __future__ import annotations

import json
import math
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.bench.context import RunContext
from metarec.config import Scenario, config_hash
from metarec.metrics.catalogue import BEYOND_ACCURACY
from metarec.metrics.evaluate import metric_selection
from metarec.metrics.per_task import mean_over_tasks

__all__ = [
    "evaluation_from_arrays",
    "make_rows",
    "context_rows",
    "metric_keys",
    "metric_names",
    "rss_mb",
    "environment",
    "write_jsonl",
]


def evaluation_from_arrays(
    per_task: dict[str, Any],
    *,
    units: Any = None,
    flags: list[str] | tuple[str, ...] = (),
    adapt_ms_per_task: float = 0.0,
) -> dict[str, Any]:
    """An evaluation (the shape :func:`metarec.metrics.evaluate.evaluate_pool` returns) from per-task
    metric arrays ``{metric: (T,)}`` of one state: means over the finite values, ``n_tasks``,
    ``flags``, ``adapt_ms_per_task``, and the arrays themselves (``per_task``, ``units``) for the
    report's paired tests over tasks.

    >>> ev = evaluation_from_arrays({"mae": [0.5, 1.0, float("nan")]}, units=[3, 4, 5])
    >>> ev["mae"], ev["n_tasks"]
    (0.75, 3)
    """
    arrays = {m: np.asarray(v, dtype=np.float64).reshape(-1) for m, v in per_task.items()}
    n = len(next(iter(arrays.values()))) if arrays else 0
    if any(len(v) != n for v in arrays.values()):
        raise ConfigError(
            f"per_task: arrays of lengths {[len(v) for v in arrays.values()]}; pass one value per task for every metric"
        )
    ev: dict[str, Any] = {m: mean_over_tasks(v.tolist()) for m, v in arrays.items()}
    ev.update(
        n_tasks=n, flags=list(flags), adapt_ms_per_task=float(adapt_ms_per_task), per_task=arrays
    )
    if units is not None:
        ev["units"] = np.asarray(units).reshape(-1)
    return ev


def make_rows(
    evaluations,
    *,
    scenario: str,
    algorithm: str,
    seed: int,
    run_id: str,
    config_hash: str,
    env: dict[str, Any],
    train_seconds: float,
    eval_seconds: float,
    peak_memory_mb: float,
    memory: str,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``results.jsonl`` rows, one per ``(state, shots, n_support, evaluation)`` of ``evaluations``.

    Each evaluation has :func:`metarec.metrics.evaluate.evaluate_pool`'s keys (metric means, ``n_tasks``,
    ``flags``, ``adapt_ms_per_task``; see :func:`evaluation_from_arrays` to build one from
    per-task arrays). When it carries ``per_task`` arrays, the row gets a ``"_per_task"`` entry
    (``{"units", "values": {metric: [...]}}``) that :func:`run_bench` moves to
    ``per_task.jsonl.gz`` before writing the row. ``env`` is the environment record (``commit``,
    ``device``); ``extra`` is merged into every row.
    """
    rows = []
    for state, shots, n_support, ev in evaluations:
        row = {
            "scenario": scenario,
            "state": state,
            "algorithm": algorithm,
            "seed": seed,
            "shots": shots,
            "n_support": n_support,
            "run_id": run_id,
            "metrics": {m: ev[m] for m in metric_keys(ev)},
            "n_tasks": int(ev["n_tasks"]),
            "train_seconds": round(train_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "adapt_ms_per_task": round(float(ev["adapt_ms_per_task"]), 4),
            "peak_memory_mb": round(peak_memory_mb, 1),
            "memory": memory,
            "commit": env["commit"],
            "config_hash": config_hash,
            "device": env["device"],
            "flags": list(ev["flags"]),
            **(extra or {}),
        }
        if isinstance(ev.get("per_task"), dict):
            n = int(ev["n_tasks"])
            units = ev.get("units")
            row["_per_task"] = {
                "units": [
                    int(u)
                    for u in (np.asarray(units).reshape(-1) if units is not None else np.arange(n))
                ],
                "values": {
                    m: [_round(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]
                    for m, v in ev["per_task"].items()
                },
            }
        rows.append(row)
    return rows


def _round(x: float) -> float | None:
    return round(float(x), 5) if math.isfinite(x) else None


def context_rows(
    ctx: RunContext,
    sc: Scenario,
    evals,
    *,
    train_seconds: float,
    eval_seconds: float,
    peak_mb: float,
    memory: str,
    extra: dict[str, Any],
    cfg_hash: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`make_rows` for one run of ``ctx``; the within-query metrics are those the scenario's
    ``metrics.names`` selects (:func:`metarec.metrics.evaluate.metric_selection`), whatever the method
    computed; the ranking metrics (``*_neg``, ``*_all``) and the beyond-accuracy ones
    (``coverage@10``, ``overlap@10``, ``pop@10``) are kept."""
    keep = set(metric_selection(sc.metrics.names, ctx.table.feedback, sc.metrics.k))

    def wanted(m: str) -> bool:
        return m in keep or m.endswith(("_neg", "_all")) or m in BEYOND_ACCURACY

    def selected(ev: dict[str, Any]) -> dict[str, Any]:
        drop = {m for m in metric_keys(ev) if not wanted(m)}
        out = {m: v for m, v in ev.items() if m not in drop}
        if isinstance(out.get("per_task"), dict):
            out["per_task"] = {m: v for m, v in out["per_task"].items() if m not in drop}
        return out

    evals = [(state, shots, n_support, selected(ev)) for state, shots, n_support, ev in evals]
    return make_rows(
        evals,
        scenario=sc.name,
        algorithm=ctx.algo,
        seed=ctx.seed,
        run_id=ctx.run_id,
        config_hash=cfg_hash or config_hash(sc),
        env=ctx.env,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        peak_memory_mb=peak_mb,
        memory=memory,
        extra=extra,
    )


def metric_keys(ev: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in ev.items()
        if k not in ("n_tasks", "flags", "adapt_ms_per_task", "per_task") and isinstance(v, float)
    ]


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """Every metric name of the rows, in first-seen order."""
    return list(dict.fromkeys(m for r in rows for m in r["metrics"]))


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def environment(device: torch.device) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    commit, dirty = "unknown", None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            or "unknown"
        )
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        pass
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return {
        "commit": commit,
        "dirty": dirty,
        "device": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
