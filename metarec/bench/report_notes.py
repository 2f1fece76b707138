"""The closing sections of ``report.md``: the training budget, the degenerate-result flags and
the cost table."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

__all__: list[str] = []


def _training_notes(rows, algos, meta) -> list[str]:
    """Which trained algorithms were still improving on meta-val when the step budget ran out."""
    L = ["## Training budget", ""]
    notes = []
    for a in algos:
        runs = {r["run_id"]: r for r in rows if r["algorithm"] == a and r.get("steps")}
        if not runs:
            continue
        at_end = [
            rid
            for rid, r in runs.items()
            if r.get("best_step") == r.get("steps") and not r.get("stopped_early")
        ]
        best_steps = ", ".join(f"{r.get('best_step')}/{r.get('steps')}" for r in runs.values())
        if len(at_end) == len(runs):
            notes.append(
                f"- **{a}**: best meta-val step = last step in every run ({best_steps}): still "
                "improving when the budget ran out, so likely **undertrained**; a larger budget "
                "may change its ranking."
            )
        else:
            notes.append(f"- {a}: best meta-val step / steps run: {best_steps}.")
    if not notes:
        return []
    return L + notes + [""]


def _flags(rows, metrics, meta) -> list[str]:
    L = ["## Degenerate-result flags", ""]
    has_hr = any(
        m.startswith("hr@") and not m.endswith(("_neg", "_all")) for m in metrics
    )  # within-query HR@k
    groups: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"shots": set(), "seeds": set(), "text": ""}
    )
    for r in rows:
        for f in r["flags"]:
            name = f.split(":")[0]
            if not has_hr and "HR@" in f:
                continue  # explicit feedback reports no HR@k
            g = groups[(r["state"], r["algorithm"], name + (" (HR)" if "HR@" in f else ""))]
            g["shots"].add(str(r["shots"]))
            g["seeds"].add(r["seed"])
            g["text"] = g["text"] or f
    if not groups:
        L += ["No result was flagged.", ""]
    else:
        L += [
            "Rows flagged by `metarec.metrics.per_task.degenerate_flags` "
            "(the full text of each is in the rows' `flags`):",
            "",
        ]
        for (state, algo, _), g in sorted(groups.items()):
            shots = ", ".join(
                sorted(g["shots"], key=lambda x: (x == "default", int(x) if x.isdigit() else 0))
            )
            L.append(
                f"- {state} / {algo} (shots {shots}; seeds "
                f"{', '.join(map(str, sorted(g['seeds'])))}): {g['text']}"
            )
        L.append("")
    if not has_hr:
        L += [
            "(The flag about HR@k being 1.0 by construction is left out: "
            "this explicit-feedback benchmark reports no HR@k.)",
            "",
        ]
    return L


def _timings(rows, algos, meta) -> list[str]:
    L = [
        "## Cost",
        "",
        "| algorithm | train s (mean over seeds) | test scoring s "
        "| adapt ms/task (default support) | peak memory MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for a in algos:
        per_seed = {r["seed"]: r for r in rows if r["algorithm"] == a}
        tr = [r["train_seconds"] for r in per_seed.values()]
        ev = [r["eval_seconds"] for r in per_seed.values()]
        ad = [
            r["adapt_ms_per_task"] for r in rows if r["algorithm"] == a and r["shots"] == "default"
        ]
        mem = max(r["peak_memory_mb"] for r in rows if r["algorithm"] == a)
        L.append(
            f"| {a} | {sum(tr) / len(tr):.1f} | {sum(ev) / len(ev):.1f} | "
            f"{sum(ad) / max(len(ad), 1):.2f} | {mem:.0f} |"
        )
    mem_kind = sorted({r["memory"] for r in rows})
    L += [
        "",
        f"Memory: {'; '.join(mem_kind)}. Train seconds include meta-val validation; test scoring "
        "covers every state and shots setting of one seed.",
        "",
    ]
    return L
