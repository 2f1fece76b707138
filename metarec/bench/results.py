"""A benchmark folder's rows, read back: ``results.jsonl`` rows and their per-seed cells,
``per_task.jsonl.gz`` values and the paired test over tasks, and the protocol the rows were
produced under (:func:`run_protocol`, :func:`protocol_line`)."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec.bench.stats import paired_t_test
from metarec.metrics.per_task import mean_ci, student_t_quantile

__all__ = [
    "cell_values",
    "load_per_task",
    "load_rows",
    "protocol_line",
    "run_protocol",
    "summarize",
    "task_paired_test",
]


def load_rows(out: str | Path) -> list[dict[str, Any]]:
    """The rows of ``out/results.jsonl``."""
    text = (Path(out) / "results.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def cell_values(
    rows: Sequence[dict[str, Any]], state: str, algorithm: str, shots: int | str, metric: str
) -> list[float]:
    """Per-seed values (in seed order) of one cell: the rows with this state, algorithm and shots."""
    sel = sorted(
        (
            r
            for r in rows
            if r["state"] == state and r["algorithm"] == algorithm and r["shots"] == shots
        ),
        key=lambda r: r["seed"],
    )
    return [float(r["metrics"][metric]) for r in sel if metric in r["metrics"]]


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, 95% half-width)`` over seeds (half-width ``NaN`` with one seed)."""
    return mean_ci(list(values))


def load_per_task(out: str | Path) -> dict[tuple[str, str, int, int | str], dict[int, float]]:
    """``{(state, algorithm, seed, shots): {unit: primary-metric value}}`` from
    ``out/per_task.jsonl.gz`` (empty when the file is absent); undefined values are left out."""
    path = Path(out) / "per_task.jsonl.gz"
    if not path.exists():
        return {}
    res = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                res[(r["state"], r["algorithm"], r["seed"], r["shots"])] = {
                    int(u): float(v)
                    for u, v in zip(r["units"], r["values"], strict=True)
                    if v is not None
                }
    return res


def task_paired_test(
    per_task, state: str, a: str, b: str, shots: int | str, seeds: Sequence[int]
) -> dict[str, float]:
    """Paired t-test of ``a - b`` over the tasks both scored (matched by unit within each seed,
    pooled over seeds): ``{"n", "mean_diff", "t", "p", "half"}`` (``half``: 95% half-width of
    the mean difference)."""
    xa, xb = [], []
    for s in seeds:
        va, vb = per_task.get((state, a, s, shots)), per_task.get((state, b, s, shots))
        if va is None or vb is None:
            continue
        for u in sorted(va.keys() & vb.keys()):
            xa.append(va[u])
            xb.append(vb[u])
    t = paired_t_test(xa, xb)
    half = math.nan
    if t["n"] >= 2 and math.isfinite(t["t"]) and t["t"] != 0:
        half = student_t_quantile(0.975, t["n"] - 1) * abs(t["mean_diff"] / t["t"])
    elif t["n"] >= 2 and t["t"] == 0:
        half = 0.0
    return {**t, "half": half}


_PROTOCOL_KEYS = {
    "cold_domain_users": ("target_domain", "beta"),
    "melu": ("existing_user_fraction", "new_item_year"),
    "random": ("fractions",),
    "time": ("fractions",),
}


def run_protocol(out: str | Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The protocol a benchmark's rows were produced under: ``bench.json``'s record, else (results
    written before it was recorded) the first ``configs.json`` entry's resolved scenario."""
    if meta.get("protocol"):
        return meta["protocol"]
    path = Path(out) / "configs.json"
    configs = json.loads(path.read_text()) if path.exists() else {}
    first: dict[str, Any] = next(iter(configs.values()), {})
    return first.get("scenario", first).get("protocol")  # cross-domain entries nest the scenario


def protocol_line(protocol: dict[str, Any] | None) -> list[str]:
    """The report's protocol bullet: the split and the settings it uses, as resolved for the run
    (after any ``--set`` override; the per-seed split seed is left out), or ``[]`` if unknown.

    >>> protocol_line({"split": "cold_domain_users", "unit": "user", "beta": 0.5,
    ...                "target_domain": "cloth", "n_support": 3, "n_query": 10, "order": "random",
    ...                "min_interactions": 5, "max_interactions": None, "negatives": 4, "seed": 0})
    ['- protocol: split=cold_domain_users, unit=user, target_domain=cloth, beta=0.5, n_support=3,
      n_query=10, order=random, min_interactions=5, max_interactions=none, negatives=4']
    """
    if not protocol:
        return []
    split: Any = protocol.get("split")
    keys = [
        "split",
        "unit",
        *(["cohort_by"] if protocol.get("unit") == "cohort" else []),
        *_PROTOCOL_KEYS.get(split, ()),
        "n_support",
        "n_query",
        "order",
        "min_interactions",
        "max_interactions",
        "negatives",
        *(
            ["ranking", "relevance", "support_pool", "ranking_negatives"]
            if protocol.get("ranking")
            else []
        ),
    ]

    def show(v: Any) -> str:
        return "none" if v is None else ",".join(map(str, v)) if isinstance(v, list) else str(v)

    return ["- protocol: " + ", ".join(f"{k}={show(protocol[k])}" for k in keys if k in protocol)]
