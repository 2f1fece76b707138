"""The comparison tables of ``report.md``: the headline summary, the per-state metric tables,
best vs best baseline and metarec vs the reference re-implementation (paired t-tests)."""

from __future__ import annotations

import math
from typing import Any

from metarec._errors import ConfigError
from metarec.bench.results import cell_values, summarize, task_paired_test
from metarec.bench.stats import lower_is_better, paired_t_test
from metarec.bench.variants import BASELINES, REFERENCES, VARIANTS
from metarec.methods import method_info

__all__ = ["ALPHA", "PUBLISHED"]


ALPHA = 0.05
PUBLISHED: dict[str, dict[str, Any]] = {
    "ml1m-melu": {
        "source": "MeLU (Lee et al., KDD 2019), Table 3, MAE with 5 local updates",
        "mae": {"user-cold": 0.7854, "item-cold": 0.9275, "user-item-cold": 0.9235},
    },
}
"""Published reference points per scenario name (shown beside our numbers, never compared as equals:
the split is regenerated and the published evaluation script and seeds were not released)."""


def _own(name: str) -> bool:
    """Whether ``name`` is one of metarec's meta-learners (the engine family and the cold-start
    learners, from their registration tags), not a baseline or a reference implementation."""
    if name in BASELINES or name in REFERENCES:
        return False
    try:
        return method_info(name).tags.family in ("engine", "learner")
    except ConfigError:  # a name the registry does not hold
        return name in VARIANTS


def _fmt(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f} ± {half:.4f}" if not math.isnan(half) else f"{mean:.4f} (CI n/a)"


def _p(p: float) -> str:
    """A p-value for a table: 3 significant digits, ``< 1e-4`` below that."""
    return "n/a" if math.isnan(p) else ("< 1e-4" if p < 1e-4 else f"{p:.3g}")


def _shots_label(shots: int | str, meta: dict[str, Any]) -> str:
    if shots != "default":
        return f"{shots} shots"
    d = meta.get("default_support")
    return "default support (" + ("all non-query interactions" if d is None else f"{d} shots") + ")"


def _best(means: dict[str, float], metric: str) -> str | None:
    ok = {a: m for a, m in means.items() if not math.isnan(m)}
    if not ok:
        return None
    return (min if lower_is_better(metric) else max)(ok, key=lambda a: ok[a])


def _summary(rows, meta, algos, states, primary) -> list[str]:
    """Headline: per state, the best algorithm at the default support, the best baseline, the
    best of metarec's meta-learners vs the reference re-implementation, and published points."""
    pub = PUBLISHED.get(meta["scenario"], {})
    pub_vals = pub.get(primary, {}) if isinstance(pub.get(primary), dict) else {}
    own = [a for a in algos if _own(a)]
    refs = [a for a in algos if a in REFERENCES]
    bases = [a for a in algos if a in BASELINES]
    head = ["state", "best (all)", "best baseline", "best meta-learner"] + [f"{r}" for r in refs]
    head += ["meta-learner − reference (95% CI over tasks)"] if refs and own else []
    head += ["published"] if pub_vals else []
    L = [
        f"## Summary ({primary}, default support)",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for state in states:
        means = {a: summarize(cell_values(rows, state, a, "default", primary)) for a in algos}
        best, base, mine = (
            _best({a: means[a][0] for a in pool}, primary) for pool in (algos, bases, own)
        )
        line = (
            [state]
            + [f"{a} {_fmt(*means[a])}" if a else "n/a" for a in (best, base, mine)]
            + [_fmt(*means[r]) for r in refs]
        )
        if refs and own:
            diffs = []
            for r in refs:
                if mine is None:
                    continue
                t = task_paired_test(
                    meta.get("_per_task", {}), state, mine, r, "default", meta["seeds"]
                )
                if t["n"] >= 2 and math.isfinite(t["half"]):
                    better = (t["mean_diff"] < 0) == lower_is_better(primary)
                    verdict = (
                        ""
                        if t["p"] >= ALPHA
                        else (" metarec better" if better else " reference better")
                    )
                    diffs.append(
                        f"{t['mean_diff']:+.4f} ± {t['half']:.4f} (p {_p(t['p'])}{verdict})"
                    )
                else:
                    diffs.append("n/a")
            line.append("; ".join(diffs) or "n/a")
        if pub_vals:
            line.append(f"{pub_vals[state]:.4f}" if state in pub_vals else "")
        L.append("| " + " | ".join(line) + " |")
    L.append("")
    const = sorted(
        {
            (r["algorithm"], r["state"])
            for r in rows
            if r["shots"] == "default"
            and any(f.startswith("constant predictions") for f in r["flags"])
        }
    )
    if const:
        which = "; ".join(
            f"{a} ({', '.join(st for b, st in const if b == a)})"
            for a in dict.fromkeys(a for a, _ in const)
        )
        L += [
            f"Caveat: constant predictions at the default support for {which} (see the flags "
            "below): such a row measures an untrained or collapsed model, so a comparison with it "
            "says nothing about the method at a proper budget.",
            "",
        ]
    if pub_vals:
        L += [
            f"Published: {pub['source']}. Reference point only: the split is regenerated here "
            "(same rules, other random draw) and the published evaluation script and seeds were "
            "never released, so the published number is not a like-for-like comparison.",
            "",
        ]
    return L


def _metric_table(
    rows, state, shots, algos, metrics, arrow, runs, meta, what: str = ""
) -> list[str]:
    L = [f"**{_shots_label(shots, meta)}{': ' + what if what else ''}**", ""]
    L += [
        "| algorithm | "
        + " | ".join(f"{m} {arrow[m]}" for m in metrics)
        + " | adapt ms/task | runs |",
        "|---|" + "---:|" * len(metrics) + "---:|---|",
    ]
    stats = {
        (a, m): summarize(cell_values(rows, state, a, shots, m)) for a in algos for m in metrics
    }
    best = {m: _best({a: stats[(a, m)][0] for a in algos}, m) for m in metrics}
    for a in algos:
        cells = []
        for m in metrics:
            txt = _fmt(*stats[(a, m)])
            cells.append(f"**{txt}**" if best[m] == a else txt)
        adapt = [
            r["adapt_ms_per_task"]
            for r in rows
            if r["state"] == state and r["algorithm"] == a and r["shots"] == shots
        ]
        ms = f"{sum(adapt) / len(adapt):.2f}" if adapt else "n/a"
        L.append(f"| {a} | " + " | ".join(cells) + f" | {ms} | {', '.join(runs[a])} |")
    return L + [""]


def _significance(rows, meta, state, algos, shots_all, primary, n) -> list[str]:
    bases = [a for a in algos if a in BASELINES]
    L = [f"**Best vs best baseline on {primary}** (paired t-tests; verdict over tasks)", ""]
    if not bases:
        return L + ["no baseline in this benchmark.", ""]
    L += [
        "| shots | best | best baseline | best − baseline (95% CI over tasks) "
        "| t (df), tasks | p, tasks | p, seeds | significant? |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    per_task = meta.get("_per_task", {})
    for s in shots_all:
        means = {a: summarize(cell_values(rows, state, a, s, primary))[0] for a in algos}
        best = _best(means, primary)
        base = _best({a: means[a] for a in bases}, primary)
        if best is None or base is None:
            L.append(f"| {s} | n/a | n/a | | | | | |")
            continue
        label = best
        if best == base:  # then say how the best non-baseline compares with it
            other = _best({a: means[a] for a in algos if a not in bases}, primary)
            if other is None:
                L.append(f"| {s} | {best} | {base} | 0 | | | | the best is a baseline |")
                continue
            best, label = other, f"{base} (baseline); best other: {other}"
        ts = paired_t_test(
            cell_values(rows, state, best, s, primary), cell_values(rows, state, base, s, primary)
        )
        tt = task_paired_test(per_task, state, best, base, s, meta["seeds"])
        p_seeds = _p(ts["p"])
        if tt["n"] < 2 or math.isnan(tt["p"]):
            diff = f"{ts['mean_diff']:+.4f}" if not math.isnan(ts["mean_diff"]) else "n/a"
            verdict = "n/a (no per-task values)" if tt["n"] < 2 else "n/a"
            L.append(f"| {s} | {label} | {base} | {diff} | n/a | n/a | {p_seeds} | {verdict} |")
            continue
        if label != best:
            verdict = f"no: the baseline is best{' (significantly, p < ' + str(ALPHA) + ')' if tt['p'] < ALPHA else ''}"
        else:
            verdict = f"yes (p < {ALPHA})" if tt["p"] < ALPHA else "no"
        L.append(
            f"| {s} | {label} | {base} | {tt['mean_diff']:+.4f} ± {tt['half']:.4f} | {tt['t']:.2f} "
            f"({tt['n'] - 1}) | {_p(tt['p'])} | {p_seeds} | {verdict} |"
        )
    return L + [""]


def _reference(rows, meta, state, algos, shots_all, primary) -> list[str]:
    refs = [a for a in algos if a in REFERENCES]
    own = [a for a in algos if _own(a)]
    if not refs or not own:
        return []
    L = [
        f"**metarec's best meta-learner vs the reference re-implementation(s) on {primary}**",
        "",
        "| shots | metarec best | reference | difference (95% CI over tasks) "
        "| p, tasks | 95% CIs over seeds overlap? | p, seeds |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    per_task = meta.get("_per_task", {})
    for s in shots_all:
        best = _best(
            {a: summarize(cell_values(rows, state, a, s, primary))[0] for a in own}, primary
        )
        for ref in refs:
            if best is None:
                continue
            (m1, h1), (m2, h2) = (
                summarize(cell_values(rows, state, best, s, primary)),
                summarize(cell_values(rows, state, ref, s, primary)),
            )
            if math.isnan(h1) or math.isnan(h2):
                overlap = "n/a (one seed)"
            else:
                sep = (m1 + h1 < m2 - h2) or (m2 + h2 < m1 - h1)
                better = (m1 < m2) == lower_is_better(primary)
                overlap = (
                    "no: " + ("metarec better" if better else "reference better") if sep else "yes"
                )
            t = paired_t_test(
                cell_values(rows, state, best, s, primary),
                cell_values(rows, state, ref, s, primary),
            )
            p = _p(t["p"])
            tt = task_paired_test(per_task, state, best, ref, s, meta["seeds"])
            if tt["n"] >= 2 and math.isfinite(tt["half"]):
                better = (tt["mean_diff"] < 0) == lower_is_better(primary)
                word = (
                    ""
                    if tt["p"] >= ALPHA
                    else (" (metarec better)" if better else " (reference better)")
                )
                dt, pt = f"{tt['mean_diff']:+.4f} ± {tt['half']:.4f}", f"{_p(tt['p'])}{word}"
            else:
                dt, pt = "n/a", "n/a"
            L.append(
                f"| {s} | {best} {_fmt(m1, h1)} | {ref} {_fmt(m2, h2)} | {dt} | {pt} | {overlap} | "
                f"{p} |"
            )
    return L + [""]
