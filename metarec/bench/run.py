"""``run_bench``: the few-shot benchmark grid (scenario x state x algorithm x seed x shots).

Per seed ``s`` (``0..seeds-1``) the protocol's split seed and the training seed are both ``s``;
the table is loaded once, the splits are built per seed. Each algorithm (a scenario override, see
:mod:`metarec.bench.variants`) is trained into ``OUT/runs/<algo>-s<seed>/`` by
:func:`metarec.train.loop.train`, which selects the checkpoint and stops early on meta-val only. The
best parameters are then scored **once** per seed on every test state (``splits.states``) for
every shots value ``k`` (``n_support = k`` on the pinned evaluation pools, so every k and every
method sees the same query interactions) and for the protocol's own support (``shots =
"default"``; MeLU: all non-query ratings). Curves for plots are measured on meta-val only.

Outputs in ``OUT``: ``results.jsonl`` (one row per scenario x state x algorithm x seed x
shots), ``curves.jsonl`` (learning curves, meta-val metric vs adaptation steps), ``configs.json``
(config hash -> resolved scenario), ``bench.json`` (settings, environment, timings),
``per_task.jsonl.gz`` (each row's per-task primary metric, for the report's paired tests over
tasks; assembled at the end from ``per_task/<algo>-s<seed>.jsonl.gz``), ``report.md`` and
``plots/*.png``; ``bench_identity.json`` and ``progress.jsonl`` make the folder resumable: every
output is written run by run, and ``resume=True`` (``--resume``) continues an interrupted
benchmark (:mod:`metarec.bench.resume`). Scores come from
:func:`metarec.bench.evaluation.score_pool` (within-query metrics plus ranking against sampled
negatives and the catalogue). Other methods make rows of the same format with
:func:`make_rows` (per-state evaluations, e.g. from :func:`evaluation_from_arrays`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metarec._errors import ConfigError
from metarec._io.lock import holds_folder
from metarec.bench.context import RunContext
from metarec.bench.crossdomain_rows import is_crossdomain, quick_defaults, write_transfer_summary
from metarec.bench.evaluation import NEGATIVES, Catalogue
from metarec.bench.parallel import check_jobs, run_units
from metarec.bench.plots import write_plots
from metarec.bench.ranking import primary_metric
from metarec.bench.report import write_report
from metarec.bench.resume import (
    PROGRESS_FILE,
    append_jsonl,
    assemble_per_task,
    bench_identity,
    clear_run_dir,
    open_bench_folder,
    per_task_path,
    read_jsonl,
    rewrite_results,
    write_run_per_task,
)
from metarec.bench.runner import ADAPT_CURVE_STEPS, FINETUNE_LRS, algo_eval_steps, run_method
from metarec.bench.tuning import TUNING_FILE, trial_configs, tune_algorithm
from metarec.bench.variants import (
    QUICK_ALGORITHMS,
    QUICK_SEEDS,
    QUICK_SHOTS,
    check_algorithms,
    extra_methods,
    quick_scenario,
    seeded_scenario,
)
from metarec.bench.warmup_rows import (
    is_warmup,
    warmup_protocol,
    warmup_rows_per_seed,
    warmup_run,
    warmup_splits,
    warmup_table,
)
from metarec.bench.writers import (
    environment,
    evaluation_from_arrays,
    make_rows,
    metric_names,
)
from metarec.config import Scenario, config_hash, to_dict
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.runs.checkpoint import atomic_write_json
from metarec.train.loop import resolve_device

__all__ = [
    "BenchResult",
    "run_bench",
    "make_rows",
    "evaluation_from_arrays",
    "ADAPT_CURVE_STEPS",
    "CATALOGUE_BUDGET",
    "FINETUNE_LRS",
    "algo_eval_steps",
]

CATALOGUE_BUDGET = 2_000_000
"""Full-catalogue ranking (``*_all`` metrics, at the default support) runs when the test tasks
times the largest domain catalogue stay within this many candidates, or always outside ``--quick``."""


@dataclass
class BenchResult:
    """What :func:`run_bench` wrote.

    Attributes:
        out: the output folder.
        rows: the rows of ``results.jsonl``.
        results, report: paths of ``results.jsonl`` and ``report.md``.
        plots: the PNG files written (empty when plots were skipped).
        seconds: wall-clock time of the whole benchmark.
    """

    out: Path
    rows: list[dict[str, Any]]
    results: Path
    report: Path
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@holds_folder(
    "out", what="bench output folder", option="--out"
)  # hook (metarec._io.lock): one writer
def run_bench(
    scenario: Scenario,
    *,
    algorithms: list[str] | tuple[str, ...] | None = None,
    seeds: int | None = None,
    shots: list[int] | tuple[int, ...] | None = None,
    quick: bool = False,
    out: str | Path,
    plots: bool | None = None,
    verbose: bool = True,
    runs_dir: str | Path | None = None,
    progress: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    tune: int | None = None,
    jobs: int = 1,
) -> BenchResult:
    """Run the benchmark grid of ``scenario`` into folder ``out``.

    Args:
        scenario: the resolved scenario (:func:`metarec.config.load_scenario`).
        algorithms: benchmark algorithms (:data:`metarec.bench.variants.BENCH_ALGORITHMS`);
            default ``scenario.bench.algorithms`` (quick: ``global, finetune, popularity, maml,
            reptile, melu-ref``).
        seeds: number of seeds, ``0..seeds-1`` (default ``scenario.bench.seeds``; quick: at most 2).
        shots: support sizes ``k`` (default ``scenario.bench.shots``; quick: ``5, 10``); the
            protocol's own support is always added as ``shots = "default"``.
        quick: the reduced suite: ``bench.quick_steps`` outer steps (default 300, never more
            than ``train.steps``) of at most 16 tasks, at most 64 meta-val tasks per validation
            (see :func:`metarec.bench.variants.quick_scenario`); ranking against sampled
            negatives at the default support only, and against the full catalogue only when it
            is small (:data:`CATALOGUE_BUDGET`).
        out: output folder (created; must not already hold a benchmark unless ``resume`` or
            ``overwrite``).
        plots: ``True``: write plots (an error if matplotlib is missing); ``False``: none;
            ``None``: when matplotlib is importable.
        verbose: print one line per run.
        runs_dir: where the training run directories go (default ``out/runs``); must not hold
            runs of the same ids.
        progress: a progress bar over the (seed, algorithm) runs.
        resume: continue the benchmark in ``out`` (the same scenario, algorithms, seeds, shots
            and quick flag, else a :class:`~metarec._errors.ConfigError`): finished
            ``(seed, algorithm)`` runs are kept, the others are run; a folder without a
            benchmark starts afresh (see :mod:`metarec.bench.resume`).
        overwrite: delete the benchmark in ``out`` (only its own files) and start afresh.
        tune: ``N`` trials per algorithm before the seeds (:mod:`metarec.bench.tuning`): each
            trained on seed 0 with the benchmark's budget and scored on meta-val only; every
            seed then runs the best, and each row records it (``tuned``).
        jobs: ``(seed, algorithm)`` runs at a time, each in a worker process with one torch
            thread (:mod:`metarec.bench.parallel`); 1 (default): one after another, here. The
            rows are the same; each finished run is written as it finishes, so ``resume``
            works alike.

    Returns:
        A :class:`BenchResult`.

    Example::

        sc = load_scenario("tasks/synthetic-cold-start.toml")
        res = run_bench(sc, algorithms=["global", "maml", "popularity"], seeds=2, shots=[5, 10], quick=True, out="bench")
    """
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out)
    want_plots = _check_plots(plots)
    check_jobs(jobs)
    cd_quick = quick_defaults(scenario) if quick else None
    warmup = is_warmup(scenario)
    quick_algos, quick_seeds = cd_quick or (
        scenario.bench.algorithms if warmup else QUICK_ALGORITHMS,
        min(QUICK_SEEDS, scenario.bench.seeds),
    )
    default = (
        *(quick_algos if quick else scenario.bench.algorithms),
        *extra_methods(),
    )  # + methods registered elsewhere
    algos = check_algorithms(
        list(algorithms) if algorithms is not None else list(dict.fromkeys(default))
    )
    n_seeds = _check_seeds(
        seeds if seeds is not None else (quick_seeds if quick else scenario.bench.seeds)
    )
    if warmup and shots is not None:
        raise ConfigError(
            f"shots={list(shots)}: an item warm-up scenario's supports are its phases (warmup.k = "
            f"{scenario.warmup.k if scenario.warmup else '?'} interactions each); drop --shots, or change k with "
            "--set warmup.k=10"
        )
    shot_list = (
        ()
        if warmup
        else _check_shots(
            shots if shots is not None else (QUICK_SHOTS if quick else scenario.bench.shots)
        )
    )
    base = quick_scenario(scenario) if quick else scenario
    base = replace(base, train=replace(base.train, progress=False))
    say = print if verbose else (lambda *a, **k: None)

    if tune is not None:
        trial_configs({}, tune)  # checks N before anything is written
    identity = bench_identity(
        scenario, algorithms=algos, seeds=n_seeds, shots=shot_list, quick=quick, tune=tune
    )
    folder = open_bench_folder(out, identity, resume=resume, overwrite=overwrite)
    runs_path = Path(runs_dir) if runs_dir is not None else None
    t0 = time.perf_counter()
    table = load_table(base.data)
    if warmup:  # ratings become clicks
        table = warmup_table(table, base)
    load_s = time.perf_counter() - t0
    device = resolve_device(base.train.device)
    check_jobs(jobs, str(device))
    env = environment(device)
    primary = primary_metric(base, table.feedback)
    cat = Catalogue(table)
    catalogue = None
    say(
        f"metarec bench: {base.name}{' (quick)' if quick else ''}: {', '.join(algos)}; {n_seeds} seed(s); "
        + (
            "warm-up phases cold, warm-a, warm-b, warm-c"
            if warmup
            else f"shots {', '.join(map(str, shot_list))} + default"
        )
        + f"; {base.train.steps} steps per run; device {device}; commit {env['commit']}"
    )
    by_run: dict[tuple[int, str], list[dict[str, Any]]] = {}
    configs: dict[str, Any] = dict(folder.configs)
    pools: dict[str, dict[str, int]] = {}
    results = out / "results.jsonl"
    results.touch()
    skipped = 0
    no_per_task: list[str] = []
    seed0 = seeded_scenario(base, 0)
    split = (
        (lambda sc, s: warmup_splits(table, sc, s))
        if warmup
        else (lambda sc, s: build_splits(table, sc.protocol))
    )
    run_one = warmup_run if warmup else run_method
    splits0 = split(seed0, 0)
    tuned: dict[str, dict[str, Any]] = {}
    if tune is not None:  # before the seeds: trials see meta-train and meta-val of seed 0 only
        done = read_jsonl(out / TUNING_FILE) if folder.resumed else []
        for algo in algos:
            ctx0 = RunContext(
                algo, 0, seed0, table, splits0, shot_list, device, env, out, quick=quick
            )
            tuned[algo] = tune_algorithm(ctx0, tune, done=done, say=say)
    bar = tqdm(
        total=n_seeds * len(algos), desc="bench", unit="run", disable=not progress, leave=False
    )
    pending: list[RunContext] = []  # the runs to do, in seed x algorithm order
    for seed in range(n_seeds):
        sc_seed = seeded_scenario(base, seed)
        splits = splits0 if seed == 0 else split(sc_seed, seed)
        pools[str(seed)] = {name: len(p) for name, p in splits.pools.items()}
        if catalogue is None:
            n_test = sum(len(splits.pools[s]) for s in splits.states)
            largest = max((len(v) for v in cat.by_domain.values()), default=0) or len(cat.all_items)
            catalogue = not quick or n_test * largest <= CATALOGUE_BUDGET
        expected = (
            warmup_rows_per_seed(splits)
            if warmup
            else (1 + len(shot_list)) * sum(len(splits.pools[s]) > 0 for s in splits.states)
        )
        for algo in algos:
            key = (seed, algo)
            if folder.complete(key, expected):  # finished before the interruption: keep it
                by_run[key] = folder.rows[key]
                skipped += 1
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
                shot_list,
                device,
                env,
                out,
                cat,
                catalogue,
                runs_path,
                quick,
                tuned.get(algo, {}).get("values"),
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
        by_run[(ctx.seed, ctx.algo)] = new
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
    if skipped:
        say(
            f"metarec bench: --resume: {skipped} finished run(s) kept, {n_seeds * len(algos) - skipped} run"
        )
    order = [(s, a) for s in range(n_seeds) for a in algos]
    rows = [r for k in order for r in by_run[k]]
    rewrite_results(out, rows)  # seed x algorithm order, as an uninterrupted run writes it
    assemble_per_task(out, order)
    seconds = time.perf_counter() - t_start
    atomic_write_json(
        out / "bench.json",
        {
            "scenario": base.name,
            "description": base.description,
            "protocol": warmup_protocol(base) if warmup else to_dict(base.protocol),
            "quick": quick,
            "algorithms": list(algos),
            "seeds": list(range(n_seeds)),
            "shots": [*shot_list, "default"],
            "default_support": (
                "/".join(str(i * base.warmup.k) for i in range(4))
                if base.warmup is not None
                else base.protocol.n_support
            ),
            "n_query": base.protocol.n_query,
            "feedback": table.feedback,
            "primary_metric": primary,
            "metrics": metric_names(rows),
            "states": list(dict.fromkeys(r["state"] for r in rows)),
            "train_steps": base.train.steps,
            "val_tasks": base.train.val_tasks,
            "val_every": base.train.val_every,
            "patience": base.train.patience,
            "adapt_curve_steps": list(ADAPT_CURVE_STEPS),
            "pools": pools,
            "negatives": NEGATIVES,
            "catalogue_ranking": bool(catalogue),
            "resumed_runs": skipped,
            "tune": tune,
            "jobs": jobs,
            "load_seconds": round(load_s, 2),
            "seconds": round(time.perf_counter() - t_start, 1),
            "cpu_seconds": round(time.process_time() - cpu_start, 1),
            **env,
        },
    )
    plot_files: list[Path] = []
    if want_plots:
        plot_files = write_plots(out)
    report = write_report(
        out,
        plots=[p.relative_to(out) for p in plot_files],
        plots_note=None
        if want_plots
        else (
            "plots skipped: matplotlib is not installed; pip install 'metarec[plot]' and run "
            "`python -c \"from metarec.bench import write_plots; write_plots('OUT')\"`"
        ),
    )
    if any(is_crossdomain(a) for a in algos):  # cold users: metarec's best vs EMCDR / PTUPCDR
        write_transfer_summary(out)
    seconds = time.perf_counter() - t_start
    say(f"metarec bench: {len(rows)} rows in {seconds:.0f} s; report: {report}")
    return BenchResult(out, rows, results, report, plot_files, seconds)


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


def _check_seeds(seeds: int) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(
            f"seeds={seeds!r}: the number of seeds must be an integer >= 1; e.g. --seeds 3"
        )
    return seeds


def _check_shots(shots) -> tuple[int, ...]:
    if isinstance(shots, (int, str)):
        raise ConfigError(
            f"shots={shots!r}: expected a list of support sizes; e.g. shots=[1, 5, 10] (--shots 1,5,10)"
        )
    out = tuple(shots)
    for k in out:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(
                f"shots={list(out)}: {k!r} is not a support size >= 1; e.g. shots=[1, 5, 10] (--shots 1,5,10)"
            )
    return tuple(sorted(set(out)))


def _check_plots(plots: bool | None) -> bool:
    if plots is False:
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if plots:
            raise ConfigError(
                "plots=True: matplotlib is not installed; pip install 'metarec[plot]' (or pass plots=False / --no-plots)"
            ) from None
        return False
    return True
