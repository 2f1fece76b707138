"""Report sections of optional benchmark parts, appended to ``report.md`` by
:func:`metarec.bench.report.write_report`: the ``--tune`` search (:func:`tuning_section`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["extra_sections", "tuning_section"]


def extra_sections(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The optional sections the rows call for, as markdown ('' when none)."""
    parts = [tuning_section(rows)]
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
