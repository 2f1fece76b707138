"""Report sections of optional benchmark parts, appended to ``report.md`` by
:func:`metarec.bench.report.write_report`: the item warm-up phases (:func:`warmup_section`) and
the ``--tune`` search (:func:`tuning_section`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from metarec.metrics.per_task import mean_ci

__all__ = ["extra_sections", "tuning_section", "warmup_section"]

WARMUP_PHASES = ("cold", "warm-a", "warm-b", "warm-c")


def extra_sections(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The optional sections the rows call for, as markdown ('' when none)."""
    parts = [warmup_section(rows, meta), tuning_section(rows)]
    return "".join("\n" + "\n".join(p) + "\n" for p in parts if p)


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) if values else "own settings"


def tuning_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """``## Tuning``: per algorithm, every trial's meta-val score and the configuration chosen
    (from the rows' ``tuned`` records; empty without them)."""
    by_algo: dict[str, dict[str, Any]] = {}
    for r in rows:
        if isinstance(r.get("tuned"), dict):
            by_algo.setdefault(r["algorithm"], r["tuned"])
    if not by_algo:
        return []
    n = next(iter(by_algo.values())).get("n")
    out = [
        "## Tuning",
        "",
        f"`--tune {n}`: per algorithm, up to {n} configurations (trial 0: its own settings, then distinct points of "
        "its search space drawn with a fixed seed), each trained on seed 0 with the benchmark's budget and scored on "
        "**meta-val only**; every seed above ran the chosen one (bold). The test states were not seen by any trial.",
        "",
    ]
    for algo, t in by_algo.items():
        if "trials" not in t:
            out += [f"- **{algo}**: not tuned ({t.get('note', 'no search space')})", ""]
            continue
        metric = t["metric"]
        out += [
            f"**{algo}**: chosen trial {t['trial']} ({_show(t['values'])})",
            "",
            f"| trial | configuration | meta-val {metric} |",
            "|---|---|---|",
        ]
        for tr in t["trials"]:
            score = "n/a" if tr["score"] is None else f"{tr['score']:.4f}"
            if tr["trial"] == t["trial"]:
                score = f"**{score}**"
            out.append(f"| {tr['trial']} | {_show(tr['values'])} | {score} |")
        out.append("")
    return out


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean, half = mean_ci(values)
    return f"{mean:.4f}" + (f" ± {half:.4f}" if not math.isnan(half) else "")


def warmup_section(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """``## Item warm-up``: AUC and logloss per phase (cold, warm-a, warm-b, warm-c) per
    algorithm, mean ± 95% half-width over seeds, then every seed's values (empty without
    warm-up rows)."""
    wu = [r for r in rows if r.get("protocol") == "item-warmup"]
    if not wu:
        return []
    algos = list(dict.fromkeys(r["algorithm"] for r in wu))
    states = list(dict.fromkeys(r["state"] for r in wu))
    seeds = sorted({r["seed"] for r in wu})
    p = meta.get("protocol") or {}
    k = wu[0].get("warmup_k")
    out = [
        "## Item warm-up",
        "",
        f"Items are tasks; a new item's first {k}, {2 * k if k else '?'} and {3 * k if k else '?'} interactions (time "
        "order) are the supports of phases warm-a, warm-b and warm-c (cold: none; the item's embedding comes from "
        f"its features). Clicks: rating >= {p.get('threshold', '?')}. Pooled AUC and logloss over the new items' test "
        f"interactions; mean ± 95% half-width over {len(seeds)} seed(s) (split and training seed both `s`).",
        "",
    ]
    for metric, arrow in (("auc", "↑"), ("logloss", "↓")):
        out += [
            f"**{metric} {arrow} per phase**",
            "",
            "| algorithm | " + " | ".join(states) + " |",
            "|---|" + "---:|" * len(states),
        ]
        for a in algos:
            cells = []
            for st in states:
                vals = [
                    float(r["metrics"][metric])
                    for r in wu
                    if r["algorithm"] == a and r["state"] == st and metric in r["metrics"]
                ]
                cells.append(_cell(vals))
            out.append(f"| {a} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["**Per seed (auc / logloss)**", "", "| algorithm | seed | " + " | ".join(states) + " |"]
    out.append("|---|---:|" + "---:|" * len(states))
    for a in algos:
        for s in seeds:
            by_state = {
                r["state"]: r["metrics"] for r in wu if r["algorithm"] == a and r["seed"] == s
            }
            cells = [
                f"{by_state[st]['auc']:.4f} / {by_state[st]['logloss']:.4f}"
                if st in by_state
                else "n/a"
                for st in states
            ]
            out.append(f"| {a} | {s} | " + " | ".join(cells) + " |")
    out.append("")
    return out
