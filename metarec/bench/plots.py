"""Benchmark plots (PNG) from a benchmark folder's ``results.jsonl``, ``curves.jsonl`` and
``bench.json``. Needs matplotlib (``pip install 'metarec[plot]'``), imported here only.

* ``plots/metric_vs_shots.png``: the primary metric on each test state vs shots (mean over
  seeds, 95% CI bars);
* ``plots/learning_curves.png``: training loss and the meta-val primary metric vs outer step,
  one line per run;
* ``plots/adaptation_steps.png``: the meta-val primary metric vs inner adaptation steps at
  evaluation (never measured on a test state).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from metarec._errors import ConfigError
from metarec.bench.report import cell_values, load_rows, summarize

__all__ = ["write_plots"]


def _figure_cls():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(
            "plots need matplotlib, which is not installed; pip install 'metarec[plot]' (or pass --no-plots)"
        ) from None
    return Figure


def write_plots(out: str | Path) -> list[Path]:
    """Write the three plots into ``out/plots/``; returns their paths."""
    Figure = _figure_cls()
    out = Path(out)
    meta = json.loads((out / "bench.json").read_text())
    rows = load_rows(out)
    curves_file = out / "curves.jsonl"
    curves = (
        [json.loads(x) for x in curves_file.read_text().splitlines() if x.strip()]
        if curves_file.exists()
        else []
    )
    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    algos = [a for a in meta["algorithms"] if any(r["algorithm"] == a for r in rows)]
    colors = {a: f"C{i % 10}" for i, a in enumerate(meta["algorithms"])}
    primary = meta["primary_metric"]
    paths = [
        _shots(Figure, rows, meta, algos, colors, primary, folder / "metric_vs_shots.png"),
        _learning(Figure, curves, meta, colors, primary, folder / "learning_curves.png"),
        _adaptation(Figure, curves, meta, colors, primary, folder / "adaptation_steps.png"),
    ]
    return [p for p in paths if p is not None]


def _shots(Figure, rows, meta, algos, colors, primary, path: Path) -> Path:
    states, shots = meta["states"], meta["shots"]
    cols = min(len(states), 2) or 1
    nrows = max(1, math.ceil(len(states) / cols))
    fig = Figure(figsize=(5.5 * cols, 3.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    x = list(range(len(shots)))
    for ax, state in zip(axes, states, strict=False):
        for i, a in enumerate(algos):
            stats = [summarize(cell_values(rows, state, a, s, primary)) for s in shots]
            m = [v[0] for v in stats]
            h = [0.0 if math.isnan(v[1]) else v[1] for v in stats]
            off = (i - (len(algos) - 1) / 2) * 0.04
            ax.errorbar(
                [xi + off for xi in x],
                m,
                yerr=h,
                marker="o",
                ms=4,
                capsize=3,
                label=a,
                color=colors[a],
            )
        ax.set_xticks(x, [str(s) for s in shots])
        ax.set_title(state)
        ax.set_xlabel("shots (support interactions)")
        ax.set_ylabel(primary)
        ax.grid(alpha=0.3)
    for ax in axes[len(states) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{meta['scenario']}: test {primary} vs shots\n(mean over {len(meta['seeds'])} seed(s), 95% CI over seeds)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    return path


def _learning(Figure, curves, meta, colors, primary, path: Path) -> Path | None:
    learn = [c for c in curves if c["kind"] == "learning"]
    val = [c for c in curves if c["kind"] == "validation"]
    if not learn:
        return None
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    seen: set[str] = set()
    for c in learn:
        pts = [(s, v) for s, v in zip(c["step"], c["loss"], strict=True) if v is not None]
        label = c["algorithm"] if c["algorithm"] not in seen else None
        seen.add(c["algorithm"])
        ax1.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=colors.get(c["algorithm"], "k"),
            lw=1,
            alpha=0.8,
            label=label,
        )
    ax1.set_xlabel("outer step")
    ax1.set_ylabel(
        "training loss"
        + (f" (mean over windows of {learn[0]['window']})" if learn[0].get("window", 1) > 1 else "")
    )
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    for c in val:
        if primary in c["metrics"]:
            ax2.plot(
                c["step"],
                c["metrics"][primary],
                marker="o",
                ms=3,
                color=colors.get(c["algorithm"], "k"),
                lw=1,
            )
    ax2.set_xlabel("outer step")
    ax2.set_ylabel(f"meta-val {primary}")
    ax2.grid(alpha=0.3)
    fig.suptitle(f"{meta['scenario']}: learning curves (one line per run)")
    fig.savefig(path, dpi=110)
    return path


def _adaptation(Figure, curves, meta, colors, primary, path: Path) -> Path | None:
    adapt = [c for c in curves if c["kind"] == "adaptation_steps" and primary in c["metrics"]]
    if not adapt:
        return None
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    by_algo: dict[str, list[dict[str, Any]]] = {}
    for c in adapt:
        by_algo.setdefault(c["algorithm"], []).append(c)
    for a, cs in by_algo.items():
        steps = sorted({s for c in cs for s in c["steps"]})
        m, h = [], []
        for s in steps:
            vals = [c["metrics"][primary][c["steps"].index(s)] for c in cs if s in c["steps"]]
            mean, half = summarize(vals)
            m.append(mean)
            h.append(0.0 if math.isnan(half) else half)
        ax.errorbar(
            steps, m, yerr=h, marker="o", ms=4, capsize=3, label=a, color=colors.get(a, "k")
        )
    ax.set_xlabel("inner adaptation steps at evaluation")
    ax.set_ylabel(f"meta-val {primary}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{meta['scenario']}: meta-val {primary} vs adaptation steps")
    fig.savefig(path, dpi=110)
    return path
