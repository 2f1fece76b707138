"""``report.md`` from a benchmark folder's ``results.jsonl``, ``per_task.jsonl.gz`` and
``bench.json`` (nothing else).

Every cell is the mean over seeds of the rows with the same (state, algorithm, shots), ``±`` the
95% Student-t half-width over seeds (:func:`metarec.metrics.mean_ci`); the best mean of each
column is bolded. Per state and shots, the best algorithm on the primary metric is tested against
the best baseline by two-sided paired t-tests (:func:`metarec.bench.stats.paired_t_test`): over
tasks (the same task units scored by both, pooled over seeds) and over seeds.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec.bench.sections import extra_sections
from metarec.bench.stats import lower_is_better, paired_t_test
from metarec.bench.variants import BASELINES, REFERENCES, VARIANTS
from metarec.metrics import mean_ci, student_t_quantile

__all__ = [
    "PUBLISHED",
    "write_report",
    "load_rows",
    "load_per_task",
    "cell_values",
    "summarize",
    "task_paired_test",
]

ALPHA = 0.05
PUBLISHED: dict[str, dict[str, Any]] = {
    "ml1m-melu": {
        "source": "MeLU (Lee et al., KDD 2019), Table 3, MAE with 5 local updates",
        "mae": {"user-cold": 0.7854, "item-cold": 0.9275, "user-item-cold": 0.9235},
    },
}
"""Published reference points per scenario name (shown beside our numbers, never compared as equals:
the split is regenerated and the published evaluation script and seeds were not released)."""
_OWN = tuple(
    a for a in VARIANTS if a not in BASELINES and a not in REFERENCES
)  # metarec's meta-learners


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


def write_report(
    out: str | Path, *, plots: Sequence[str | Path] = (), plots_note: str | None = None
) -> Path:
    """Write ``out/report.md`` from ``out/results.jsonl``, ``out/per_task.jsonl.gz`` and
    ``out/bench.json``; returns its path."""
    out = Path(out)
    rows = load_rows(out)
    meta = json.loads((out / "bench.json").read_text())
    meta["_per_task"] = load_per_task(out)
    meta["protocol"] = run_protocol(out, meta)
    text = "\n".join(_report(rows, meta, [str(p) for p in plots], plots_note)) + "\n"
    text += extra_sections(rows, meta)  # hook (metarec.bench.sections): tuning, warm-up phases
    path = out / "report.md"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------- pieces


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

    >>> protocol_line({"split": "cold_domain_users", "unit": "user", "beta": 0.5, "target_domain": "cloth",
    ...                "n_support": 3, "n_query": 10, "order": "random", "min_interactions": 5,
    ...                "max_interactions": None, "negatives": 4, "seed": 0})
    ['- protocol: split=cold_domain_users, unit=user, target_domain=cloth, beta=0.5, n_support=3, n_query=10, order=random, min_interactions=5, max_interactions=none, negatives=4']
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
    ]

    def show(v: Any) -> str:
        return "none" if v is None else ",".join(map(str, v)) if isinstance(v, list) else str(v)

    return ["- protocol: " + ", ".join(f"{k}={show(protocol[k])}" for k in keys if k in protocol)]


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


def _report(
    rows: list[dict[str, Any]], meta: dict[str, Any], plots: list[str], plots_note: str | None
) -> list[str]:
    algos = [a for a in meta["algorithms"] if any(r["algorithm"] == a for r in rows)]
    states = meta["states"]
    shots_all = meta["shots"]
    metrics = meta["metrics"]
    primary = meta["primary_metric"]
    seeds = meta["seeds"]
    n = len(seeds)
    arrow = {m: "↓" if lower_is_better(m) else "↑" for m in metrics}
    runs = {a: sorted({r["run_id"] for r in rows if r["algorithm"] == a}) for a in algos}
    L: list[str] = []
    L += [f"# Benchmark: {meta['scenario']}{' (quick suite)' if meta['quick'] else ''}", ""]
    if meta.get("description"):
        L += [meta["description"], ""]
    dirty = " (uncommitted changes)" if meta.get("dirty") else ""
    L += [
        f"- commit `{meta['commit']}`{dirty}; device {meta['device']}, {meta['threads']} torch thread(s); "
        f"torch {meta['torch']}, Python {meta['python']}",
        f"- algorithms: {', '.join(algos)}; seeds: {', '.join(map(str, seeds))}; shots: "
        + ", ".join(str(s) for s in shots_all)
        + f" (`default` = {_shots_label('default', meta)})",
        f"- budget per run: {meta['train_steps']} outer steps (validation every {meta['val_every']} steps on "
        f"{meta['val_tasks']} meta-val tasks, patience {meta['patience']}); total wall time {meta['seconds']:.0f} s "
        f"(data loading {meta['load_seconds']:.1f} s)"
        + (
            f", process CPU time {meta['cpu_seconds']:.0f} s (all threads)"
            if meta.get("cpu_seconds") is not None
            else ""
        ),
        *protocol_line(meta.get("protocol")),
        f"- primary metric: **{primary}** ({'lower' if lower_is_better(primary) else 'higher'} is better)",
        "",
    ]
    L += _summary(rows, meta, algos, states, primary)
    L += [
        "## How to read this",
        "",
        "- **Protocol.** Model selection and early stopping used **meta-val only**; each meta-test state was "
        "evaluated **once per seed** (for each shots setting) with the parameters that were best on meta-val. "
        "Per seed `s`, the split seed and the training seed are both `s`. Query sets are pinned per task, so every "
        "algorithm and every shots value is scored on the same query interactions; `k` shots means `min(k, "
        "available)` support interactions per task.",
        "- **Metrics.** `mae`, `rmse` (explicit) and the ranking metrics without a suffix are computed **within each "
        "task's query set**. `*_neg` rank the task's held-out positive (its highest-rated query item, counted when "
        "rated at least 4 on a 1..5 scale; implicit: its first positive) against "
        f"{meta.get('negatives', 99)} sampled items the user never interacted with, from the task's domain (the same "
        "candidates for every algorithm); `*_all` rank it against every such item of the domain's catalogue"
        + (
            ""
            if meta.get("catalogue_ranking")
            else " (not computed in this run: the quick suite skips the catalogue when it is large)"
        )
        + ". Ties count against the model (see `metarec.metrics`).",
        f"- **Numbers.** Each cell is the mean over the {n} seed(s) of the `results.jsonl` rows with that state, "
        "algorithm and shots (one row per seed; each row is a mean over the state's tasks); "
        + (
            f"± is the 95% Student-t half-width over seeds, t(0.975, {n - 1}) · sd / √{n} with "
            f"t = {student_t_quantile(0.975, n - 1):.3f}"
            + (" (wide by construction with so few seeds)" if n < 4 else "")
            + "."
            if n > 1
            else "with a single seed the CI is n/a."
        )
        + " The run ids in each table name the rows (`run_id`) and run folders (`runs/<run id>/`, not kept in the "
        "committed quick results); `configs.json` maps every row's `config_hash` to its resolved configuration.",
        f"- **Significance.** Per state and shots, the best algorithm on {primary} is compared with the best "
        f"baseline ({', '.join(b for b in BASELINES if b in algos) or 'none run'}) by two-sided paired t-tests "
        f"(α = {ALPHA}): **over tasks** (the same task units scored by both, pooled over seeds; this is the verdict) "
        "and over seeds (n = seeds, shown for reference). Tasks within a seed share one trained model, so the "
        "task-level test ignores training-seed variance; the best is picked on the same numbers, so treat a "
        "borderline p as exploratory.",
        "",
    ]
    for state in states:
        st_rows = [r for r in rows if r["state"] == state]
        n_tasks = sorted({r["n_tasks"] for r in st_rows})
        L += [f"## {state} ({'/'.join(map(str, n_tasks))} tasks)", ""]
        within = [m for m in metrics if not m.endswith(("_neg", "_all"))]
        ranking = [m for m in metrics if m.endswith(("_neg", "_all"))]
        L += _metric_table(
            rows,
            state,
            "default",
            algos,
            within,
            arrow,
            runs,
            meta,
            "error and within-query ranking",
        )
        if ranking:
            L += _metric_table(
                rows,
                state,
                "default",
                algos,
                ranking,
                arrow,
                runs,
                meta,
                "ranking against sampled negatives / the catalogue",
            )
        L += [f"**{primary} {arrow[primary]} vs shots**", ""]
        L += [
            "| algorithm | " + " | ".join(str(s) for s in shots_all) + " |",
            "|---|" + "---:|" * len(shots_all),
        ]
        best_by_shots = {
            s: _best(
                {a: summarize(cell_values(rows, state, a, s, primary))[0] for a in algos}, primary
            )
            for s in shots_all
        }
        for a in algos:
            cells = []
            for s in shots_all:
                txt = _fmt(*summarize(cell_values(rows, state, a, s, primary)))
                cells.append(f"**{txt}**" if best_by_shots[s] == a else txt)
            L.append(f"| {a} | " + " | ".join(cells) + " |")
        L += [""]
        L += _significance(rows, meta, state, algos, shots_all, primary, n)
        L += _reference(rows, meta, state, algos, shots_all, primary)
    L += _training_notes(rows, algos, meta)
    L += _flags(rows, metrics, meta)
    L += _timings(rows, algos, meta)
    L += ["## Plots", ""]
    if plots:
        for p in plots:
            L += [f"![{Path(p).stem}]({p})", ""]
        L += [
            "Curves (learning curves, metric vs adaptation steps) are measured on meta-val only, never on a test "
            "state; their numbers are in `curves.jsonl`.",
            "",
        ]
    else:
        L += [plots_note or "no plots were written.", ""]
    return L


def _summary(rows, meta, algos, states, primary) -> list[str]:
    """Headline: per state, the best algorithm at the default support, the best baseline, the
    best of metarec's meta-learners vs the reference re-implementation, and published points."""
    pub = PUBLISHED.get(meta["scenario"], {})
    pub_vals = pub.get(primary, {}) if isinstance(pub.get(primary), dict) else {}
    own = [a for a in algos if a in _OWN]
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
            f"Caveat: constant predictions at the default support for {which} (see the flags below): such a row "
            "measures an untrained or collapsed model, so a comparison with it says nothing about the method at a "
            "proper budget.",
            "",
        ]
    if pub_vals:
        L += [
            f"Published: {pub['source']}. Reference point only: the split is regenerated here (same rules, other "
            "random draw) and the published evaluation script and seeds were never released, so the published "
            "number is not a like-for-like comparison.",
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
        "| shots | best | best baseline | best − baseline (95% CI over tasks) | t (df), tasks | p, tasks | p, seeds | significant? |",
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
            f"| {s} | {label} | {base} | {tt['mean_diff']:+.4f} ± {tt['half']:.4f} | {tt['t']:.2f} ({tt['n'] - 1}) | "
            f"{_p(tt['p'])} | {p_seeds} | {verdict} |"
        )
    return L + [""]


def _reference(rows, meta, state, algos, shots_all, primary) -> list[str]:
    refs = [a for a in algos if a in REFERENCES]
    own = [a for a in algos if a in _OWN]
    if not refs or not own:
        return []
    L = [
        f"**metarec's best meta-learner vs the reference re-implementation(s) on {primary}**",
        "",
        "| shots | metarec best | reference | difference (95% CI over tasks) | p, tasks | 95% CIs over seeds overlap? | p, seeds |",
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
                f"| {s} | {best} {_fmt(m1, h1)} | {ref} {_fmt(m2, h2)} | {dt} | {pt} | {overlap} | {p} |"
            )
    return L + [""]


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
                f"- **{a}**: best meta-val step = last step in every run ({best_steps}): still improving when the "
                "budget ran out, so likely **undertrained**; a larger budget may change its ranking."
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
            "Rows flagged by `metarec.metrics.degenerate_flags` (the full text of each is in the rows' `flags`):",
            "",
        ]
        for (state, algo, _), g in sorted(groups.items()):
            shots = ", ".join(
                sorted(g["shots"], key=lambda x: (x == "default", int(x) if x.isdigit() else 0))
            )
            L.append(
                f"- {state} / {algo} (shots {shots}; seeds {', '.join(map(str, sorted(g['seeds'])))}): {g['text']}"
            )
        L.append("")
    if not has_hr:
        L += [
            "(The flag about HR@k being 1.0 by construction is left out: this explicit-feedback benchmark reports no HR@k.)",
            "",
        ]
    return L


def _timings(rows, algos, meta) -> list[str]:
    L = [
        "## Cost",
        "",
        "| algorithm | train s (mean over seeds) | test scoring s | adapt ms/task (default support) | peak memory MiB |",
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
            f"| {a} | {sum(tr) / len(tr):.1f} | {sum(ev) / len(ev):.1f} | {sum(ad) / max(len(ad), 1):.2f} | {mem:.0f} |"
        )
    mem_kind = sorted({r["memory"] for r in rows})
    L += [
        "",
        f"Memory: {'; '.join(mem_kind)}. Train seconds include meta-val validation; test scoring covers every "
        "state and shots setting of one seed.",
        "",
    ]
    return L
