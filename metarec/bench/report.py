"""``report.md`` from a benchmark folder's ``results.jsonl``, ``per_task.jsonl.gz`` and
``bench.json`` (nothing else).

Every cell is the mean over seeds of the rows with the same (state, algorithm, shots), ``±`` the
95% Student-t half-width over seeds (:func:`metarec.metrics.per_task.mean_ci`); the best mean of each
column is bolded. Per state and shots, the best algorithm on the primary metric is tested against
the best baseline by two-sided paired t-tests (:func:`metarec.bench.stats.paired_t_test`): over
tasks (the same task units scored by both, pooled over seeds) and over seeds.

The rows are read by :mod:`metarec.bench.results`; the tables are built by
:mod:`metarec.bench.report_tables` and the closing sections by :mod:`metarec.bench.report_notes`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec.bench.report_notes import _flags, _timings, _training_notes
from metarec.bench.report_tables import (
    ALPHA,
    PUBLISHED,
    _best,
    _fmt,
    _metric_table,
    _reference,
    _shots_label,
    _significance,
    _summary,
)
from metarec.bench.results import (
    cell_values,
    load_per_task,
    load_rows,
    protocol_line,
    run_protocol,
    summarize,
    task_paired_test,
)
from metarec.bench.sections import extra_sections
from metarec.bench.stats import lower_is_better
from metarec.bench.variants import BASELINES
from metarec.metrics.catalogue import BEYOND_ACCURACY
from metarec.metrics.per_task import student_t_quantile

__all__ = [
    "PUBLISHED",
    "write_report",
    "load_rows",
    "load_per_task",
    "cell_values",
    "summarize",
    "task_paired_test",
]


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


def _is_ranking(meta: dict[str, Any]) -> bool:
    return bool((meta.get("protocol") or {}).get("ranking"))


def _tables(metrics: Sequence[str], meta: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The per-state tables: ``(title, metrics)``. A ranking scenario leads with the catalogue
    ranking and the served lists, then the sampled negatives, then the within-query ranking
    (no error metric); a rating scenario keeps error and within-query metrics first."""
    cat = [m for m in metrics if m.endswith("_all") or m in BEYOND_ACCURACY]
    neg = [m for m in metrics if m.endswith("_neg")]
    within = [m for m in metrics if m not in cat and m not in neg]
    if _is_ranking(meta):
        within = [m for m in within if m.split("@")[0] not in ("mae", "rmse")]
        out = [
            ("ranking the catalogue (every relevant query item) and the served top-10", cat),
            ("each relevant query item against its 100 sampled negatives", neg),
            ("ranking within the query set", within),
        ]
    else:
        out = [
            ("error and within-query ranking", within),
            ("ranking against sampled negatives / the catalogue", cat + neg),
        ]
    return [(what, names) for what, names in out if names]


def _metrics_note(meta: dict[str, Any]) -> str:
    """The "Metrics" bullet of "How to read this"."""
    if _is_ranking(meta):
        p = meta.get("protocol") or {}
        rel = p.get("relevance")
        return (
            "- **Metrics (catalogue ranking protocol).** Each task's query is every interaction "
            f"outside its pinned support pool of {p.get('support_pool')} (the same query at every "
            "shots value); a query item is **relevant** "
            + (
                f"when rated at least {rel}"
                if rel is not None
                else "when rated at least 4 on a 1..5 scale (implicit: every positive)"
            )
            + ". Each task ranks its state's **whole catalogue minus its support pool**; "
            "query items below the threshold stay candidates and count as non-relevant. "
            "`recall@20_all` = |top-20 ∩ relevant| / min(20, |relevant|); `ndcg@10_all`: binary "
            "gains, IDCG over min(10, |relevant|); `hr@10_all`: a relevant item in the top 10; "
            "`mrr_all`: 1 / rank of the best relevant item. Ties count against the model. On the "
            "served top-10 (ties by lower item index): `coverage@10` = share of the catalogue in "
            "any task's list, `overlap@10` = mean share of its list a task has in common with "
            "another task's (all pairs), `pop@10` = mean meta-train popularity percentile of the "
            "listed items (1 = most popular). `*_neg`: each relevant item against "
            f"{p.get('ranking_negatives', 100)} items sampled from those the user never interacted "
            "with, averaged per task. Tasks without a relevant query item are left out of these "
            "means (counted in the flags). Error metrics (MAE) are not shown: this is a ranking "
            "scenario (they stay in `results.jsonl` for methods that predict ratings). See "
            "`metarec.metrics.catalogue`."
        )
    return (
        "- **Metrics.** `mae`, `rmse` (explicit) and the ranking metrics without a suffix are "
        "computed **within each task's query set**. `*_neg` rank the task's held-out positive (its "
        "highest-rated query item, counted when rated at least 4 on a 1..5 scale; implicit: its "
        f"first positive) against {meta.get('negatives', 99)} sampled items the user never "
        "interacted with, from the task's domain (the same candidates for every algorithm); "
        "`*_all` rank it against every such item of the domain's catalogue"
        + (
            ""
            if meta.get("catalogue_ranking")
            else " (not computed in this run: the quick suite skips the catalogue when it is large)"
        )
        + ". Ties count against the model (see `metarec.metrics.per_task`)."
    )


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
        f"- commit `{meta['commit']}`{dirty}; device {meta['device']}, {meta['threads']} torch "
        f"thread(s); torch {meta['torch']}, Python {meta['python']}",
        f"- algorithms: {', '.join(algos)}; seeds: {', '.join(map(str, seeds))}; shots: "
        + ", ".join(str(s) for s in shots_all)
        + f" (`default` = {_shots_label('default', meta)})",
        f"- budget per run: {meta['train_steps']} outer steps (validation every "
        f"{meta['val_every']} steps on {meta['val_tasks']} meta-val tasks, patience "
        f"{meta['patience']}); total wall time {meta['seconds']:.0f} s (data loading "
        f"{meta['load_seconds']:.1f} s)"
        + (
            f", process CPU time {meta['cpu_seconds']:.0f} s (all threads)"
            if meta.get("cpu_seconds") is not None
            else ""
        ),
        *protocol_line(meta.get("protocol")),
        f"- primary metric: **{primary}** ({'lower' if lower_is_better(primary) else 'higher'} is "
        "better)",
        "",
    ]
    L += _summary(rows, meta, algos, states, primary)
    L += [
        "## How to read this",
        "",
        "- **Protocol.** Model selection and early stopping used **meta-val only**; each meta-test "
        "state was evaluated **once per seed** (for each shots setting) with the parameters that "
        "were best on meta-val. Per seed `s`, the split seed and the training seed are both `s`. "
        "Query sets are pinned per task, so every algorithm and every shots value is scored on the "
        "same query interactions; `k` shots means `min(k, available)` support interactions per "
        "task.",
        _metrics_note(meta),
        f"- **Numbers.** Each cell is the mean over the {n} seed(s) of the `results.jsonl` rows "
        "with that state, algorithm and shots (one row per seed; each row is a mean over the "
        "state's tasks); "
        + (
            f"± is the 95% Student-t half-width over seeds, t(0.975, {n - 1}) · sd / √{n} with "
            f"t = {student_t_quantile(0.975, n - 1):.3f}"
            + (" (wide by construction with so few seeds)" if n < 4 else "")
            + "."
            if n > 1
            else "with a single seed the CI is n/a."
        )
        + " The run ids in each table name the rows (`run_id`) and run folders (`runs/<run id>/`, not kept in the "
        "committed quick results); `configs.json` maps every row's `config_hash` to its resolved "
        "configuration.",
        f"- **Significance.** Per state and shots, the best algorithm on {primary} is compared "
        f"with the best baseline ({', '.join(b for b in BASELINES if b in algos) or 'none run'}) "
        f"by two-sided paired t-tests (α = {ALPHA}): **over tasks** (the same task units scored by "
        "both, pooled over seeds; this is the verdict) and over seeds (n = seeds, shown for "
        "reference). Tasks within a seed share one trained model, so the task-level test ignores "
        "training-seed variance; the best is picked on the same numbers, so treat a borderline p "
        "as exploratory.",
        "",
    ]
    for state in states:
        st_rows = [r for r in rows if r["state"] == state]
        n_tasks = sorted({r["n_tasks"] for r in st_rows})
        L += [f"## {state} ({'/'.join(map(str, n_tasks))} tasks)", ""]
        for what, names in _tables(metrics, meta):
            L += _metric_table(rows, state, "default", algos, names, arrow, runs, meta, what)
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
            "Curves (learning curves, metric vs adaptation steps) are measured on meta-val only, "
            "never on a test state; their numbers are in `curves.jsonl`.",
            "",
        ]
    else:
        L += [plots_note or "no plots were written.", ""]
    return L
