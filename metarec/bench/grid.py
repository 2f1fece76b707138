"""The loop of one benchmark over seeds and algorithms (:func:`run_grid`): each
``(seed, algorithm)`` run is fitted and scored by ``run_one`` (``jobs`` at a time in worker
processes, :mod:`metarec.bench.parallel`)
(:func:`metarec.bench.runner.run_method`, or the item warm-up protocol's
:func:`metarec.bench.warmup_rows.warmup_run`) and written as soon as it
finishes, in the order :mod:`metarec.bench.resume` reads back; the runs an interrupted benchmark
finished are kept."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metarec.bench.context import RunContext
from metarec.bench.evaluation import Catalogue
from metarec.bench.parallel import run_units
from metarec.bench.ranking import primary_metric
from metarec.bench.resume import (
    PROGRESS_FILE,
    BenchFolder,
    append_jsonl,
    clear_run_dir,
    per_task_path,
    write_run_per_task,
)
from metarec.bench.variants import seeded_scenario
from metarec.bench.warmup_rows import warmup_rows_per_seed, warmup_splits
from metarec.config import Scenario, config_hash
from metarec.data.table import InteractionTable
from metarec.episodes.build import build_splits
from metarec.episodes.splits import MetaSplits
from metarec.runs.checkpoint import atomic_write_json

__all__ = ["Grid", "run_grid", "seed_splits", "CATALOGUE_BUDGET"]

CATALOGUE_BUDGET = 2_000_000
"""Full-catalogue ranking (``*_all`` metrics, at the default support) runs when the test tasks
times the largest domain catalogue stay within this many candidates, or always outside ``--quick``."""


def seed_splits(warmup: bool, table: InteractionTable, sc: Scenario, seed: int) -> MetaSplits:
    """The splits of one seed (item warm-up: its item split)."""
    if warmup:
        return warmup_splits(table, sc, seed)
    return build_splits(table, sc.protocol)


@dataclass
class Grid:
    """What the loop over seeds and algorithms gathered."""

    by_run: dict[tuple[int, str], list[dict[str, Any]]] = field(default_factory=dict)
    pools: dict[str, dict[str, int]] = field(default_factory=dict)
    catalogue: bool | None = None
    skipped: int = 0


def run_grid(
    plan: Any,
    table: InteractionTable,
    splits0: MetaSplits,
    folder: BenchFolder,
    out: Path,
    device: Any,
    env: dict[str, Any],
    tuned: dict[str, dict[str, Any]],
    progress: bool,
    say: Callable[..., None],
    runs_path: Path | None,
    run_one: Callable[..., Any],
    jobs: int = 1,
) -> Grid:
    """Every (seed, algorithm) run, each written as it finishes (finished ones of an interrupted
    benchmark are kept)."""
    grid = Grid()
    configs: dict[str, Any] = dict(folder.configs)
    primary = primary_metric(plan.base, table.feedback)
    cat = Catalogue(table)
    no_per_task: list[str] = []
    (out / "results.jsonl").touch()
    bar = tqdm(
        total=plan.n_seeds * len(plan.algos),
        desc="bench",
        unit="run",
        disable=not progress,
        leave=False,
    )
    pending: list[RunContext] = []  # the runs to do, in seed x algorithm order
    for seed in range(plan.n_seeds):
        sc_seed = seeded_scenario(plan.base, seed)
        splits = splits0 if seed == 0 else seed_splits(plan.warmup, table, sc_seed, seed)
        grid.pools[str(seed)] = {name: len(p) for name, p in splits.pools.items()}
        if grid.catalogue is None:
            n_test = sum(len(splits.pools[s]) for s in splits.states)
            largest = max((len(v) for v in cat.by_domain.values()), default=0) or len(cat.all_items)
            grid.catalogue = not plan.quick or n_test * largest <= CATALOGUE_BUDGET
        expected = (
            warmup_rows_per_seed(splits)
            if plan.warmup
            else (1 + len(plan.shots)) * sum(len(splits.pools[s]) > 0 for s in splits.states)
        )
        memo: dict[Any, Any] = {}  # fits one seed's methods share (cross-domain m and m+adapt;
        # with jobs > 1 each worker process has its own copy, so each run fits on its own)
        for algo in plan.algos:
            key = (seed, algo)
            if folder.complete(key, expected):  # finished before the interruption: keep it
                grid.by_run[key] = folder.rows[key]
                grid.skipped += 1
                if not per_task_path(out, seed, algo).exists():
                    no_per_task.append(f"{algo}-s{seed}")
                bar.update(1)
                continue
            ctx = RunContext(
                algo,
                seed,
                sc_seed,
                table,
                splits,
                plan.shots,
                device,
                env,
                out,
                cat,
                grid.catalogue,
                runs_path,
                plan.quick,
                tuned.get(algo, {}).get("values"),
                memo,
            )
            if folder.resumed:  # an unfinished run of this benchmark: start it again
                folder.forget(key)
            if folder.resumed or folder.replaced:  # its earlier training files (any --runs-dir)
                clear_run_dir((runs_path or out / "runs") / ctx.run_id)
            pending.append(ctx)

    def finish(ctx: RunContext, result: tuple[list[dict[str, Any]], Any, Any]) -> None:
        new, cfg, cur = result
        if ctx.algo in tuned:
            for r in new:
                r["tuned"] = tuned[ctx.algo]
        configs[new[0]["config_hash"] if new else config_hash(cfg)] = cfg
        _record_run(out, (ctx.seed, ctx.algo), new, cur, configs, primary)
        grid.by_run[(ctx.seed, ctx.algo)] = new
        bar.update(1)

    run_units(pending, lambda ctx: run_one(ctx, say), finish, jobs=jobs)
    bar.close()
    if no_per_task:
        print(
            f"metarec bench: --resume: no per-task values for {len(no_per_task)} finished run(s) of an older folder "
            f"({', '.join(no_per_task[:4])}{', ...' if len(no_per_task) > 4 else ''}): the report's paired tests over "
            "tasks leave them out; rerun them with --overwrite for complete tests",
            file=sys.stderr,
        )
    if grid.skipped:
        say(
            f"metarec bench: --resume: {grid.skipped} finished run(s) kept, "
            f"{plan.n_seeds * len(plan.algos) - grid.skipped} run"
        )
    return grid


def _record_run(
    out: Path,
    key: tuple[int, str],
    rows: list[dict[str, Any]],
    curves: list[dict[str, Any]],
    configs: dict[str, Any],
    primary: str,
) -> None:
    """Write one finished run into ``out`` (the order of :mod:`metarec.bench.resume`); pops the
    rows' ``_per_task`` entries."""
    seed, algo = key
    per_task = []
    for r in rows:
        pt = r.pop("_per_task", None)
        if pt is not None and primary in pt["values"]:
            per_task.append(
                {
                    "state": r["state"],
                    "algorithm": r["algorithm"],
                    "seed": r["seed"],
                    "shots": r["shots"],
                    "metric": primary,
                    "units": pt["units"],
                    "values": pt["values"][primary],
                }
            )
    write_run_per_task(out, seed, algo, per_task)
    append_jsonl(out / "curves.jsonl", curves)
    atomic_write_json(out / "configs.json", configs)
    append_jsonl(out / "results.jsonl", rows, sync=True)
    append_jsonl(
        out / PROGRESS_FILE,
        [{"run_id": f"{algo}-s{seed}", "seed": seed, "algorithm": algo, "rows": len(rows)}],
        sync=True,
    )
