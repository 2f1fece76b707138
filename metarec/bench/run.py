"""``run_bench``: the few-shot benchmark grid (scenario x state x algorithm x seed x shots).

Per seed ``s`` (``0..seeds-1``) the protocol's split seed and the training seed are both ``s``;
the table is loaded once, the splits are built per seed. Each algorithm (a scenario override, see
:mod:`metarec.bench.variants`) is trained into ``OUT/runs/<algo>-s<seed>/`` by
:func:`metarec.train.train`, which selects the checkpoint and stops early on meta-val only. The
best parameters are then scored **once** per seed on every test state (``splits.states``) for
every shots value ``k`` (``n_support = k`` on the pinned evaluation pools, so every k and every
method sees the same query interactions) and for the protocol's own support (``shots =
"default"``; MeLU: all non-query ratings). Curves for plots are measured on meta-val only.

Outputs in ``OUT``: ``results.jsonl`` (one row per scenario x state x algorithm x seed x
shots), ``curves.jsonl`` (learning curves, meta-val metric vs adaptation steps), ``configs.json``
(config hash -> resolved scenario), ``bench.json`` (settings, environment, timings),
``per_task.jsonl.gz`` (each row's per-task primary metric, for the report's paired tests over
tasks), ``report.md`` and ``plots/*.png``. Scores come from
:func:`metarec.bench.evaluation.score_pool` (within-query metrics plus ranking against sampled
negatives and the catalogue). Other methods make rows of the same format with
:func:`make_rows` (per-state evaluations, e.g. from :func:`evaluation_from_arrays`).
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metarec._errors import ConfigError
from metarec.bench.context import RunContext
from metarec.bench.crossdomain_rows import is_crossdomain, quick_defaults, write_transfer_summary
from metarec.bench.evaluation import NEGATIVES, Catalogue
from metarec.bench.plots import write_plots
from metarec.bench.report import write_report
from metarec.bench.runner import ADAPT_CURVE_STEPS, FINETUNE_LRS, algo_eval_steps, run_method
from metarec.bench.stats import PRIMARY
from metarec.bench.variants import (
    QUICK_ALGORITHMS,
    QUICK_SEEDS,
    QUICK_SHOTS,
    check_algorithms,
    extra_methods,
    quick_scenario,
    seeded_scenario,
)
from metarec.bench.writers import (
    environment,
    evaluation_from_arrays,
    make_rows,
    metric_names,
    write_jsonl,
)
from metarec.checkpoint import atomic_write_json
from metarec.config import Scenario, config_hash, to_dict
from metarec.runlock import holds_folder
from metarec.scenario import build_splits, load_table
from metarec.train import resolve_device

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

PER_TASK_FILE = "per_task.jsonl.gz"
"""Per-task primary-metric values of every row (with the task units), for paired tests over tasks."""
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
)  # hook (metarec.runlock): one writer
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
        out: output folder (created; must not already hold a ``results.jsonl``).
        plots: ``True``: write plots (an error if matplotlib is missing); ``False``: none;
            ``None``: when matplotlib is importable.
        verbose: print one line per run.
        runs_dir: where the training run directories go (default ``out/runs``); must not hold
            runs of the same ids.
        progress: a progress bar over the (seed, algorithm) runs.

    Returns:
        A :class:`BenchResult`.

    Example::

        sc = load_scenario("tasks/synthetic-cold-start.toml")
        res = run_bench(sc, algorithms=["global", "maml", "popularity"], seeds=2, shots=[5, 10], quick=True, out="bench")
    """
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out)
    if (out / "results.jsonl").exists():
        raise ConfigError(
            f"out={str(out)!r}: already holds a benchmark (results.jsonl); choose an empty folder"
        )
    want_plots = _check_plots(plots)
    cd_quick = quick_defaults(scenario) if quick else None
    quick_algos, quick_seeds = cd_quick or (
        QUICK_ALGORITHMS,
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
    shot_list = _check_shots(
        shots if shots is not None else (QUICK_SHOTS if quick else scenario.bench.shots)
    )
    base = quick_scenario(scenario) if quick else scenario
    base = replace(base, train=replace(base.train, progress=False))
    say = print if verbose else (lambda *a, **k: None)

    out.mkdir(parents=True, exist_ok=True)
    runs_path = Path(runs_dir) if runs_dir is not None else None
    t0 = time.perf_counter()
    table = load_table(base.data)
    load_s = time.perf_counter() - t0
    device = resolve_device(base.train.device)
    env = environment(device)
    primary = PRIMARY[table.feedback]
    cat = Catalogue(table)
    catalogue = None
    say(
        f"metarec bench: {base.name}{' (quick)' if quick else ''}: {', '.join(algos)}; {n_seeds} seed(s); shots "
        f"{', '.join(map(str, shot_list))} + default; {base.train.steps} steps per run; device {device}; commit {env['commit']}"
    )
    rows: list[dict[str, Any]] = []
    configs: dict[str, Any] = {}
    curves: list[dict[str, Any]] = []
    pools: dict[str, dict[str, int]] = {}
    results = out / "results.jsonl"
    results.write_text("")
    with results.open("a") as log, gzip.open(out / PER_TASK_FILE, "wt") as tasks_log:
        bar = tqdm(
            total=n_seeds * len(algos), desc="bench", unit="run", disable=not progress, leave=False
        )
        for seed in range(n_seeds):
            sc_seed = seeded_scenario(base, seed)
            splits = build_splits(table, sc_seed.protocol)
            pools[str(seed)] = {name: len(p) for name, p in splits.pools.items()}
            if catalogue is None:
                n_test = sum(len(splits.pools[s]) for s in splits.states)
                largest = max((len(v) for v in cat.by_domain.values()), default=0) or len(
                    cat.all_items
                )
                catalogue = not quick or n_test * largest <= CATALOGUE_BUDGET
            for algo in algos:
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
                )
                new, cfg, cur = run_method(ctx, say)
                configs[new[0]["config_hash"] if new else config_hash(cfg)] = cfg
                curves.extend(cur)
                for r in new:
                    per_task = r.pop("_per_task", None)
                    if per_task is not None and primary in per_task["values"]:
                        tasks_log.write(
                            json.dumps(
                                {
                                    "state": r["state"],
                                    "algorithm": r["algorithm"],
                                    "seed": r["seed"],
                                    "shots": r["shots"],
                                    "metric": primary,
                                    "units": per_task["units"],
                                    "values": per_task["values"][primary],
                                }
                            )
                            + "\n"
                        )
                    log.write(json.dumps(r) + "\n")
                log.flush()
                rows.extend(new)
                bar.update(1)
        bar.close()
    write_jsonl(out / "curves.jsonl", curves)
    atomic_write_json(out / "configs.json", configs)
    seconds = time.perf_counter() - t_start
    atomic_write_json(
        out / "bench.json",
        {
            "scenario": base.name,
            "description": base.description,
            "protocol": to_dict(base.protocol),
            "quick": quick,
            "algorithms": list(algos),
            "seeds": list(range(n_seeds)),
            "shots": [*shot_list, "default"],
            "default_support": base.protocol.n_support,
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
