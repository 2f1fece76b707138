"""``run_bench``: the few-shot benchmark grid (scenario x state x algorithm x seed x shots).

Per seed ``s`` (``0..seeds-1``) the protocol's split seed and the training seed are both ``s``;
the table is loaded once, the splits are built per seed. Each algorithm (a registered method,
with the benchmark's scenario overrides, see :mod:`metarec.bench.variants`) is fitted through
the method interface (:func:`metarec.bench.runner.run_method`; a family with its own run format
writes ``OUT/runs/<algo>-s<seed>/``), selecting on meta-val only. It is then scored **once** per
seed on every test state (``splits.states``) for every shots value ``k`` (``n_support = k`` on
the pinned evaluation pools, so every k and every method sees the same query interactions) and
for the protocol's own support (``shots = "default"``; MeLU: all non-query ratings). Curves for
plots are measured on meta-val only.

Outputs in ``OUT``: ``results.jsonl`` (one row per scenario x state x algorithm x seed x
shots), ``curves.jsonl`` (learning curves, meta-val metric vs adaptation steps), ``configs.json``
(config hash -> resolved configuration), ``bench.json`` (settings, environment, timings),
``per_task.jsonl.gz`` (each row's per-task primary metric, for the report's paired tests over
tasks; assembled at the end from ``per_task/<algo>-s<seed>.jsonl.gz``), ``report.md`` and
``plots/*.png``; ``bench_identity.json`` and ``progress.jsonl`` make the folder resumable: every
output is written run by run, and ``resume=True`` (``--resume``) continues an interrupted
benchmark (:mod:`metarec.bench.resume`). Scores come from
:func:`metarec.bench.evaluation.score_pool` (within-query metrics plus ranking against sampled
negatives and the catalogue). Other methods make rows of the same format with
:func:`make_rows` (per-state evaluations, e.g. from :func:`evaluation_from_arrays`).

:func:`run_bench` reads top to bottom: :func:`_plan` (what to run), the data once, the
``--tune`` trials, one loop over seeds and algorithms (:func:`metarec.bench.grid.run_grid`), then ``bench.json``,
the plots and the report (:func:`_finish`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from metarec._errors import ConfigError
from metarec._io.lock import holds_folder
from metarec.bench.context import RunContext
from metarec.bench.crossdomain_rows import (
    is_crossdomain,
    predefined_is_warm,
    quick_defaults,
    write_transfer_summary,
)
from metarec.bench.evaluation import NEGATIVES
from metarec.bench.grid import CATALOGUE_BUDGET, Grid, run_grid, seed_splits
from metarec.bench.parallel import check_jobs
from metarec.bench.plots import write_plots
from metarec.bench.ranking import primary_metric
from metarec.bench.report import write_report
from metarec.bench.resume import (
    assemble_per_task,
    bench_identity,
    open_bench_folder,
    read_jsonl,
    rewrite_results,
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
    warmup_run,
    warmup_table,
)
from metarec.bench.writers import (
    environment,
    evaluation_from_arrays,
    make_rows,
    metric_names,
)
from metarec.config import Scenario, to_dict
from metarec.data.load import load_table
from metarec.data.table import InteractionTable
from metarec.methods.base import method_info
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


@dataclass(frozen=True)
class _Plan:
    """What one benchmark runs: the scenario at its budget, the algorithms, seeds and shots."""

    base: Scenario
    algos: tuple[str, ...]
    n_seeds: int
    shots: tuple[int, ...]
    quick: bool
    warmup: bool


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
        algorithms: benchmark algorithms (:data:`metarec.bench.variants.BENCH_ALGORITHMS`, or
            any registered method); default ``scenario.bench.algorithms`` (quick: ``global,
            finetune, popularity, maml, reptile, melu-ref``).
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

    Example:
        >>> import tempfile
        >>> from metarec.config import load_scenario
        >>> sc = load_scenario("tasks/synthetic-cold-start.toml", ["data.synthetic.n_domains=3",
        ...     "data.synthetic.n_users=60", "data.synthetic.n_items=80", "train.steps=2", "train.val_every=2"])
        >>> res = run_bench(sc, algorithms=["popularity", "global"], seeds=1, shots=[3],
        ...                 out=tempfile.mkdtemp(), plots=False, verbose=False)
        >>> sorted({r["algorithm"] for r in res.rows})
        ['global', 'popularity']
    """
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out)
    want_plots = _check_plots(plots)
    check_jobs(jobs)
    if tune is not None:
        trial_configs({}, tune)  # checks N before anything is read or written
    data = _Data(scenario)
    plan = _plan(scenario, data, algorithms, seeds, shots, quick)
    identity = bench_identity(
        scenario,
        algorithms=plan.algos,
        seeds=plan.n_seeds,
        shots=plan.shots,
        quick=quick,
        tune=tune,
    )
    folder = open_bench_folder(out, identity, resume=resume, overwrite=overwrite)
    table = data.table(bench=plan.warmup)
    say = print if verbose else (lambda *a, **k: None)
    device = resolve_device(plan.base.train.device)
    check_jobs(jobs, str(device))
    env = environment(device)
    say(_headline(plan, device, env))
    seed0 = seeded_scenario(plan.base, 0)
    splits0 = seed_splits(plan.warmup, table, seed0, 0)
    tuned: dict[str, dict[str, Any]] = {}
    if tune is not None:  # before the seeds: trials see meta-train and meta-val of seed 0 only
        done = read_jsonl(out / TUNING_FILE) if folder.resumed else []
        for algo in plan.algos:
            ctx0 = RunContext(
                algo, 0, seed0, table, splits0, plan.shots, device, env, out, quick=quick
            )
            tuned[algo] = tune_algorithm(ctx0, tune, done=done, say=say)
    grid = run_grid(
        plan,
        table,
        splits0,
        folder,
        out,
        device,
        env,
        tuned,
        progress,
        say,
        Path(runs_dir) if runs_dir is not None else None,
        warmup_run if plan.warmup else run_method,
        jobs,
    )
    order = [(s, a) for s in range(plan.n_seeds) for a in plan.algos]
    rows = [r for k in order for r in grid.by_run[k]]
    rewrite_results(out, rows)  # seed x algorithm order, as an uninterrupted run writes it
    assemble_per_task(out, order)
    _write_meta(out, plan, table, rows, grid, tune, jobs, data.seconds, t_start, cpu_start, env)
    plot_files, report = _finish(out, plan, want_plots)
    seconds = time.perf_counter() - t_start
    say(f"metarec bench: {len(rows)} rows in {seconds:.0f} s; report: {report}")
    return BenchResult(out, rows, out / "results.jsonl", report, plot_files, seconds)


class _Data:
    """The scenario's table, read once, when first asked for (the plan may need it: a quick
    ``predefined`` scenario's suite depends on its split)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario, self.seconds = scenario, 0.0
        self._table: InteractionTable | None = None

    def table(self, *, bench: bool = False) -> InteractionTable:
        """The table; ``bench``: as the item warm-up protocol uses it (ratings become clicks)."""
        if self._table is None:
            t0 = time.perf_counter()
            self._table = load_table(self.scenario.data)
            self.seconds = time.perf_counter() - t0
        if bench and is_warmup(self.scenario):
            return warmup_table(self._table, self.scenario)
        return self._table


def _plan(
    scenario: Scenario,
    data: _Data,
    algorithms: list[str] | tuple[str, ...] | None,
    seeds: int | None,
    shots: list[int] | tuple[int, ...] | None,
    quick: bool,
) -> _Plan:
    """The algorithms, seeds and shots asked for (checked), and the scenario at its budget."""
    warmup = is_warmup(scenario)
    cd_quick = quick_defaults(scenario, data) if quick else None
    quick_algos, quick_seeds = cd_quick or (
        scenario.bench.algorithms if warmup else QUICK_ALGORITHMS,
        min(QUICK_SEEDS, scenario.bench.seeds),
    )
    default = (*(quick_algos if quick else scenario.bench.algorithms), *extra_methods())
    algos = check_algorithms(
        list(algorithms) if algorithms is not None else list(dict.fromkeys(default))
    )
    _check_warm_predefined(scenario, data, algos)
    n_seeds = _check_seeds(
        seeds if seeds is not None else (quick_seeds if quick else scenario.bench.seeds)
    )
    if warmup and shots is not None:
        raise ConfigError(
            f"shots={list(shots)}: an item warm-up scenario's supports are its phases (warmup.k = "
            f"{scenario.warmup.k if scenario.warmup else '?'} interactions each); drop --shots, or "
            "change k with --set warmup.k=10"
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
    return _Plan(base, algos, n_seeds, shot_list, quick, warmup)


def _check_warm_predefined(scenario: Scenario, data: _Data, algos: tuple[str, ...]) -> None:
    """Refuse, before any run, the cross-domain methods on a ``predefined`` split whose test users
    also train in the target domain (each would fail only when its turn came)."""
    if scenario.protocol.split != "predefined":
        return
    cross = [a for a in algos if method_info(a).tags.family == "crossdomain"]
    if cross and predefined_is_warm(scenario, data.table()):
        others = [a for a in algos if a not in cross]
        keep = f"--algorithms {','.join(others)}" if others else "--algorithms elae,popularity"
        raise ConfigError(
            f"--algorithms: {cross} are cross-domain methods, which need cold target users; the "
            f"split of {scenario.name!r} (protocol.split = 'predefined') is warm: its test users "
            "also train in the target domain; drop them (e.g. "
            f"{keep}) or draw cold users with protocol.split = 'cold_domain_users'"
        )


def _headline(plan: _Plan, device: Any, env: dict[str, Any]) -> str:
    what = (
        "warm-up phases cold, warm-a, warm-b, warm-c"
        if plan.warmup
        else f"shots {', '.join(map(str, plan.shots))} + default"
    )
    return (
        f"metarec bench: {plan.base.name}{' (quick)' if plan.quick else ''}: "
        f"{', '.join(plan.algos)}; {plan.n_seeds} seed(s); {what}; {plan.base.train.steps} steps "
        f"per run; device {device}; commit {env['commit']}"
    )


def _write_meta(
    out: Path,
    plan: _Plan,
    table: InteractionTable,
    rows: list[dict[str, Any]],
    grid: Grid,
    tune: int | None,
    jobs: int,
    load_s: float,
    t_start: float,
    cpu_start: float,
    env: dict[str, Any],
) -> None:
    """``bench.json``: the settings, environment and timings of the benchmark."""
    base = plan.base
    atomic_write_json(
        out / "bench.json",
        {
            "scenario": base.name,
            "description": base.description,
            "protocol": warmup_protocol(base) if plan.warmup else to_dict(base.protocol),
            "quick": plan.quick,
            "algorithms": list(plan.algos),
            "seeds": list(range(plan.n_seeds)),
            "shots": [*plan.shots, "default"],
            "default_support": (
                "/".join(str(i * base.warmup.k) for i in range(4))
                if base.warmup is not None
                else base.protocol.n_support
            ),
            "n_query": base.protocol.n_query,
            "feedback": table.feedback,
            "primary_metric": primary_metric(base, table.feedback),
            "metrics": metric_names(rows),
            "states": list(dict.fromkeys(r["state"] for r in rows)),
            "train_steps": base.train.steps,
            "val_tasks": base.train.val_tasks,
            "val_every": base.train.val_every,
            "patience": base.train.patience,
            "adapt_curve_steps": list(ADAPT_CURVE_STEPS),
            "pools": grid.pools,
            "negatives": NEGATIVES,
            "catalogue_ranking": bool(grid.catalogue),
            "resumed_runs": grid.skipped,
            "tune": tune,
            "jobs": jobs,
            "load_seconds": round(load_s, 2),
            "seconds": round(time.perf_counter() - t_start, 1),
            "cpu_seconds": round(time.process_time() - cpu_start, 1),
            **env,
        },
    )


def _finish(out: Path, plan: _Plan, want_plots: bool) -> tuple[list[Path], Path]:
    """The plots, ``report.md`` and, with source-history methods, ``transfer-summary.md``."""
    plot_files = write_plots(out) if want_plots else []
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
    if any(is_crossdomain(a) for a in plan.algos):  # cold users: metarec's best vs EMCDR / PTUPCDR
        write_transfer_summary(out)
    return plot_files, report


def _check_seeds(seeds: int) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(
            f"seeds={seeds!r}: the number of seeds must be an integer >= 1; e.g. --seeds 3"
        )
    return seeds


def _check_shots(shots) -> tuple[int, ...]:
    if isinstance(shots, (int, str)):
        raise ConfigError(
            f"shots={shots!r}: expected a list of support sizes; e.g. shots=[1, 5, 10] (--shots "
            "1,5,10)"
        )
    out = tuple(shots)
    for k in out:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(
                f"shots={list(out)}: {k!r} is not a support size >= 1; e.g. shots=[1, 5, 10] "
                "(--shots 1,5,10)"
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
                "plots=True: matplotlib is not installed; pip install 'metarec[plot]' "
                "(or pass plots=False / --no-plots)"
            ) from None
        return False
    return True
