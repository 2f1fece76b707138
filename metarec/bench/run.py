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
import math
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.algorithms import adapt_batch, predict_batch
from metarec.bench.evaluation import NEGATIVES, Catalogue, score_pool
from metarec.bench.popularity import PRIOR_STRENGTH, item_scores
from metarec.bench.stats import PRIMARY
from metarec.bench.variants import (
    QUICK_ALGORITHMS,
    QUICK_SEEDS,
    QUICK_SHOTS,
    check_algorithms,
    quick_scenario,
    seeded_scenario,
    variant_scenario,
)
from metarec.checkpoint import atomic_write_json, load_tensors
from metarec.config import Scenario, config_hash, to_dict
from metarec.data.table import InteractionTable
from metarec.episodes.splits import MetaSplits
from metarec.evaluate import evaluate_pool, select_eval_lr
from metarec.runlock import holds_folder
from metarec.scenario import build_splits, load_table, sampler_config
from metarec.train import _build, algorithm_config, resolve_device, train

__all__ = ["BenchResult", "run_bench", "make_rows", "evaluation_from_arrays", "ADAPT_CURVE_STEPS", "CATALOGUE_BUDGET"]

FINETUNE_LRS = (0.001, 0.003, 0.01, 0.03, 0.1)
"""Fine-tuning rates ``finetune`` chooses from on meta-val (when ``algorithm.eval_lr`` is unset)."""
PER_TASK_FILE = "per_task.jsonl.gz"
"""Per-task primary-metric values of every row (with the task units), for paired tests over tasks."""
ADAPT_CURVE_STEPS = (0, 1, 2, 5, 10)
"""Inner steps at which the meta-val metric-vs-adaptation-steps curve is measured."""
_MAX_CURVE_POINTS = 300
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


@holds_folder("out", what="bench output folder", option="--out")  # hook (metarec.runlock): one writer
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

    Returns:
        A :class:`BenchResult`.

    Example::

        sc = load_scenario("tasks/synthetic-cold-start.toml")
        res = run_bench(sc, algorithms=["global", "maml", "popularity"], seeds=2, shots=[5, 10], quick=True, out="bench")
    """
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out)
    if (out / "results.jsonl").exists():
        raise ConfigError(f"out={str(out)!r}: already holds a benchmark (results.jsonl); choose an empty folder")
    want_plots = _check_plots(plots)
    # cold-domain-users scenarios: cross-domain methods (imported here: that module imports this one)
    from metarec.bench.crossdomain_rows import crossdomain_run, is_crossdomain, quick_defaults

    cd_quick = quick_defaults(scenario) if quick else None
    quick_algos, quick_seeds = cd_quick or (QUICK_ALGORITHMS, min(QUICK_SEEDS, scenario.bench.seeds))
    algos = check_algorithms(list(algorithms) if algorithms is not None else (quick_algos if quick else scenario.bench.algorithms))
    n_seeds = _check_seeds(seeds if seeds is not None else (quick_seeds if quick else scenario.bench.seeds))
    shot_list = _check_shots(shots if shots is not None else (QUICK_SHOTS if quick else scenario.bench.shots))
    base = quick_scenario(scenario) if quick else scenario
    base = replace(base, train=replace(base.train, progress=False))
    say = print if verbose else (lambda *a, **k: None)

    out.mkdir(parents=True, exist_ok=True)
    runs_path = Path(runs_dir) if runs_dir is not None else None
    t0 = time.perf_counter()
    table = load_table(base.data)
    load_s = time.perf_counter() - t0
    device = resolve_device(base.train.device)
    env = _environment(device)
    primary = PRIMARY[table.feedback]
    cat = Catalogue(table)
    catalogue = None
    say(f"metarec bench: {base.name}{' (quick)' if quick else ''}: {', '.join(algos)}; {n_seeds} seed(s); shots "
        f"{', '.join(map(str, shot_list))} + default; {base.train.steps} steps per run; device {device}; commit {env['commit']}")
    rows: list[dict[str, Any]] = []
    configs: dict[str, Any] = {}
    curves: list[dict[str, Any]] = []
    pools: dict[str, dict[str, int]] = {}
    results = out / "results.jsonl"
    results.write_text("")
    with results.open("a") as log, gzip.open(out / PER_TASK_FILE, "wt") as tasks_log:
        for seed in range(n_seeds):
            sc_seed = seeded_scenario(base, seed)
            splits = build_splits(table, sc_seed.protocol)
            pools[str(seed)] = {name: len(p) for name, p in splits.pools.items()}
            if catalogue is None:
                n_test = sum(len(splits.pools[s]) for s in splits.states)
                largest = max((len(v) for v in cat.by_domain.values()), default=0) or len(cat.all_items)
                catalogue = not quick or n_test * largest <= CATALOGUE_BUDGET
            for algo in algos:
                ctx = _Context(algo, seed, sc_seed, table, splits, shot_list, device, env, out, cat, catalogue, runs_path, quick)
                if is_crossdomain(algo):  # metarec.crossdomain methods (EMCDR, PTUPCDR, transfer, DA)
                    new, cfg, cur = crossdomain_run(ctx, say)
                else:
                    new, cfg, cur = _popularity(ctx) if algo == "popularity" else _trained(ctx, say)
                configs[new[0]["config_hash"] if new else config_hash(cfg)] = cfg
                curves.extend(cur)
                for r in new:
                    per_task = r.pop("_per_task", None)
                    if per_task is not None and primary in per_task["values"]:
                        tasks_log.write(json.dumps({
                            "state": r["state"], "algorithm": r["algorithm"], "seed": r["seed"], "shots": r["shots"],
                            "metric": primary, "units": per_task["units"], "values": per_task["values"][primary],
                        }) + "\n")
                    log.write(json.dumps(r) + "\n")
                log.flush()
                rows.extend(new)
    _write_jsonl(out / "curves.jsonl", curves)
    atomic_write_json(out / "configs.json", configs)
    seconds = time.perf_counter() - t_start
    atomic_write_json(out / "bench.json", {
        "scenario": base.name, "description": base.description, "protocol": to_dict(base.protocol),
        "quick": quick, "algorithms": list(algos),
        "seeds": list(range(n_seeds)), "shots": [*shot_list, "default"], "default_support": base.protocol.n_support,
        "n_query": base.protocol.n_query, "feedback": table.feedback, "primary_metric": primary,
        "metrics": _metric_names(rows), "states": list(dict.fromkeys(r["state"] for r in rows)),
        "train_steps": base.train.steps, "val_tasks": base.train.val_tasks, "val_every": base.train.val_every,
        "patience": base.train.patience, "adapt_curve_steps": list(ADAPT_CURVE_STEPS), "pools": pools,
        "negatives": NEGATIVES, "catalogue_ranking": bool(catalogue),
        "load_seconds": round(load_s, 2), "seconds": round(time.perf_counter() - t_start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1), **env,
    })
    from metarec.bench.report import write_report

    plot_files: list[Path] = []
    if want_plots:
        from metarec.bench.plots import write_plots

        plot_files = write_plots(out)
    report = write_report(out, plots=[p.relative_to(out) for p in plot_files], plots_note=None if want_plots else (
        "plots skipped: matplotlib is not installed; pip install 'metarec[plot]' and run "
        "`python -c \"from metarec.bench import write_plots; write_plots('OUT')\"`"))
    if any(is_crossdomain(a) for a in algos):  # cold users: metarec's best vs EMCDR / PTUPCDR
        from metarec.bench.crossdomain_rows import write_transfer_summary

        write_transfer_summary(out)
    seconds = time.perf_counter() - t_start
    say(f"metarec bench: {len(rows)} rows in {seconds:.0f} s; report: {report}")
    return BenchResult(out, rows, results, report, plot_files, seconds)


# ---------------------------------------------------------------------------------- one run


@dataclass
class _Context:
    algo: str
    seed: int
    scenario: Scenario  # seeded, not yet the variant
    table: InteractionTable
    splits: MetaSplits
    shots: tuple[int, ...]
    device: torch.device
    env: dict[str, Any]
    out: Path
    cat: Catalogue | None = None  # per-user seen items and per-domain catalogues (ranking metrics)
    catalogue: bool = False  # rank against the whole catalogue at the default support
    runs: Path | None = None  # folder of the run directories (default: out/runs)
    quick: bool = False  # quick suite: sampled-negative ranking at the default support only

    @property
    def run_id(self) -> str:
        return f"{self.algo}-s{self.seed}"


def _trained(ctx: _Context, say) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    sc = variant_scenario(ctx.scenario, ctx.algo)
    run_dir = (ctx.runs or ctx.out / "runs") / ctx.run_id
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    res = train(sc, run_dir, table=ctx.table, splits=ctx.splits, evaluate_test=False)
    model = _build(sc, ctx.table, ctx.splits).to(ctx.device)
    params = dict(model.named_parameters())
    best = load_tensors(run_dir / "checkpoints" / "best.pt", map_location=ctx.device)
    with torch.no_grad():
        for k, v in best["params"].items():
            params[k].copy_(v)
    state = {k: v.to(ctx.device) for k, v in best["state"].items()}
    algo = algorithm_config(sc, ctx.table.feedback)
    lr = None if algo.meta_learned_lrs else sc.algorithm.eval_lr
    lr_scores = None
    if ctx.algo == "finetune" and sc.algorithm.eval_lr is None:
        # plain fine-tuning has no meta-learned rate: choose it on meta-val (never on a test state)
        lr, lr_scores = select_eval_lr(model, params, algo, ctx.table, ctx.splits.pools[ctx.splits.val], sampler_config(sc.protocol),
                                       lrs=FINETUNE_LRS, steps=sc.algorithm.eval_steps, max_tasks=sc.train.val_tasks, k=sc.metrics.k)
    t_eval = time.perf_counter()

    def score(pool, scfg, steps=sc.algorithm.eval_steps, max_tasks=None):
        return evaluate_pool(model, params, algo, ctx.table, pool, scfg, state=state, steps=steps, lr=lr,
                             max_tasks=max_tasks, k=sc.metrics.k, seed=ctx.seed, device=ctx.device)

    def scorer_for(batch):
        fast = adapt_batch(algo, model, params, batch.support, sc.algorithm.eval_steps, lr, state=state)
        return lambda users, items: predict_batch(model, params, fast, users, items)

    def score_test(pool, scfg, default=False):
        return score_pool(ctx.table, pool, scfg, scorer_for, k=sc.metrics.k, seed=ctx.seed, cat=ctx.cat, device=ctx.device,
                          dtype=next(iter(params.values())).dtype, **_ranking(ctx, default))

    evals = _evaluate_states(ctx, sc, score_test, catalogue=True)
    eval_s = time.perf_counter() - t_eval
    # curves (meta-val only): metric vs adaptation steps, and the run's learning curves
    val_pool, val_cfg = ctx.splits.pools[ctx.splits.val], sampler_config(sc.protocol)
    steps = [s for s in ADAPT_CURVE_STEPS if not (algo.per_step_lr and s > algo.inner_steps)]
    by_steps = [score(val_pool, val_cfg, steps=s, max_tasks=sc.train.val_tasks) for s in steps]
    curves = _learning_curves(ctx, run_dir) + [{
        "kind": "adaptation_steps", "run_id": ctx.run_id, "algorithm": ctx.algo, "seed": ctx.seed, "pool": ctx.splits.val,
        "n_tasks": by_steps[0]["n_tasks"], "steps": steps,
        "metrics": {m: [e[m] for e in by_steps] for m in _metric_keys(by_steps[0])},
        "adapt_ms_per_task": [e["adapt_ms_per_task"] for e in by_steps],
    }]
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if cuda else _rss_mb()
    rows = _rows(ctx, sc, evals, train_seconds=res.seconds, eval_seconds=eval_s, peak_mb=peak,
                 memory="cuda max_memory_allocated (this run)" if cuda else "ru_maxrss (process peak so far)",
                 extra={"best_step": res.best_step, "steps": res.steps, "stopped_early": res.stopped_early,
                        "skipped_steps": res.skipped_steps, "eval_steps": algo_eval_steps(sc, algo),
                        "eval_lr": _eval_lr_label(sc, algo, lr),
                        **({"eval_lr_meta_val": {str(k): v for k, v in lr_scores.items()}} if lr_scores else {})})
    p = PRIMARY[ctx.table.feedback]
    best_val = res.best_val.get(p)
    say(f"  seed {ctx.seed} {ctx.algo:<10} trained {res.steps} steps in {res.seconds:.0f} s (best meta-val {p} "
        f"{best_val:.4f} at step {res.best_step}); test states scored in {eval_s:.0f} s" if best_val is not None else
        f"  seed {ctx.seed} {ctx.algo:<10} trained {res.steps} steps in {res.seconds:.0f} s")
    return rows, to_dict(sc), curves


def _eval_lr_label(sc: Scenario, algo, lr: float | None) -> float | str | None:
    if algo_eval_steps(sc, algo) == 0:
        return None
    return "learned" if algo.meta_learned_lrs else (lr if lr is not None else algo.inner_lr)


def algo_eval_steps(sc: Scenario, algo) -> int:
    """Inner steps used at evaluation (``algorithm.eval_steps``; else 0 for ``global``, else ``inner_steps``)."""
    if sc.algorithm.eval_steps is not None:
        return sc.algorithm.eval_steps
    return 0 if algo.name == "global" else algo.inner_steps


def _popularity(ctx: _Context) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    t0 = time.perf_counter()
    scores = item_scores(ctx.table, ctx.splits.pools[ctx.splits.train].rows)
    fit_s = time.perf_counter() - t0
    t_eval = time.perf_counter()
    s = torch.as_tensor(scores, dtype=torch.float64)

    def score_test(pool, scfg, default=False):
        return score_pool(ctx.table, pool, scfg, lambda batch: (lambda users, items: s[items.cpu()]), k=ctx.scenario.metrics.k,
                          seed=ctx.seed, cat=ctx.cat, dtype=torch.float64, **_ranking(ctx, default))

    evals = _evaluate_states(ctx, ctx.scenario, score_test, catalogue=True)
    eval_s = time.perf_counter() - t_eval
    cfg = {"benchmark_algorithm": "popularity", "prior_strength": PRIOR_STRENGTH, "scenario": to_dict(ctx.scenario)}
    rows = _rows(ctx, ctx.scenario, evals, train_seconds=fit_s, eval_seconds=eval_s, peak_mb=_rss_mb(),
                 memory="ru_maxrss (process peak so far)", extra={"best_step": None, "steps": 0, "eval_steps": 0, "eval_lr": None},
                 cfg_hash=config_hash(cfg))
    return rows, cfg, []


def _ranking(ctx: _Context, default: bool) -> dict[str, Any]:
    """Ranking settings of one scoring: sampled negatives everywhere (quick: at the default
    support only), the full catalogue at the default support when ``ctx.catalogue``."""
    return {"negatives": NEGATIVES if (default or not ctx.quick) else None, "catalogue": bool(default and ctx.catalogue)}


def _evaluate_states(ctx: _Context, sc: Scenario, evaluate, *, catalogue: bool = False) -> list[tuple[str, int | str, Any, dict[str, Any]]]:
    """``[(state, shots, n_support, evaluation)]``; identical sampler settings are scored once.

    ``evaluate(pool, sampler_config)`` scores one pool; with ``catalogue`` the default support is
    scored as ``evaluate(pool, sampler_config, True)`` (the evaluator may add ranking metrics there)."""
    out = []
    for state in ctx.splits.states:
        pool = ctx.splits.pools[state]
        if len(pool) == 0:
            continue
        cache: dict[Any, dict[str, Any]] = {}
        for shots in ("default", *ctx.shots):
            scfg = sampler_config(sc.protocol) if shots == "default" else sampler_config(sc.protocol, n_support=shots)
            if scfg not in cache:
                cache[scfg] = evaluate(pool, scfg, True) if (catalogue and shots == "default") else evaluate(pool, scfg)
            out.append((state, shots, scfg.n_support, cache[scfg]))
    order = {s: i for i, s in enumerate((*ctx.shots, "default"))}
    return sorted(out, key=lambda e: (ctx.splits.states.index(e[0]), order[e[1]]))


def evaluation_from_arrays(
    per_task: dict[str, Any], *, units: Any = None, flags: list[str] | tuple[str, ...] = (), adapt_ms_per_task: float = 0.0
) -> dict[str, Any]:
    """An evaluation (the shape :func:`metarec.evaluate.evaluate_pool` returns) from per-task
    metric arrays ``{metric: (T,)}`` of one state: means over the finite values, ``n_tasks``,
    ``flags``, ``adapt_ms_per_task``, and the arrays themselves (``per_task``, ``units``) for the
    report's paired tests over tasks.

    >>> ev = evaluation_from_arrays({"mae": [0.5, 1.0, float("nan")]}, units=[3, 4, 5])
    >>> ev["mae"], ev["n_tasks"]
    (0.75, 3)
    """
    from metarec.metrics import mean_over_tasks

    arrays = {m: np.asarray(v, dtype=np.float64).reshape(-1) for m, v in per_task.items()}
    n = len(next(iter(arrays.values()))) if arrays else 0
    if any(len(v) != n for v in arrays.values()):
        raise ConfigError(f"per_task: arrays of lengths {[len(v) for v in arrays.values()]}; pass one value per task for every metric")
    ev: dict[str, Any] = {m: mean_over_tasks(v.tolist()) for m, v in arrays.items()}
    ev.update(n_tasks=n, flags=list(flags), adapt_ms_per_task=float(adapt_ms_per_task), per_task=arrays)
    if units is not None:
        ev["units"] = np.asarray(units).reshape(-1)
    return ev


def make_rows(
    evaluations,
    *,
    scenario: str,
    algorithm: str,
    seed: int,
    run_id: str,
    config_hash: str,
    env: dict[str, Any],
    train_seconds: float,
    eval_seconds: float,
    peak_memory_mb: float,
    memory: str,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``results.jsonl`` rows, one per ``(state, shots, n_support, evaluation)`` of ``evaluations``.

    Each evaluation has :func:`metarec.evaluate.evaluate_pool`'s keys (metric means, ``n_tasks``,
    ``flags``, ``adapt_ms_per_task``; see :func:`evaluation_from_arrays` to build one from
    per-task arrays). When it carries ``per_task`` arrays, the row gets a ``"_per_task"`` entry
    (``{"units", "values": {metric: [...]}}``) that :func:`run_bench` moves to
    ``per_task.jsonl.gz`` before writing the row. ``env`` is the environment record (``commit``,
    ``device``); ``extra`` is merged into every row.
    """
    rows = []
    for state, shots, n_support, ev in evaluations:
        row = {
            "scenario": scenario, "state": state, "algorithm": algorithm, "seed": seed, "shots": shots,
            "n_support": n_support, "run_id": run_id, "metrics": {m: ev[m] for m in _metric_keys(ev)},
            "n_tasks": int(ev["n_tasks"]), "train_seconds": round(train_seconds, 3), "eval_seconds": round(eval_seconds, 3),
            "adapt_ms_per_task": round(float(ev["adapt_ms_per_task"]), 4), "peak_memory_mb": round(peak_memory_mb, 1),
            "memory": memory, "commit": env["commit"], "config_hash": config_hash, "device": env["device"],
            "flags": list(ev["flags"]), **(extra or {}),
        }
        if isinstance(ev.get("per_task"), dict):
            n = int(ev["n_tasks"])
            units = ev.get("units")
            row["_per_task"] = {
                "units": [int(u) for u in (np.asarray(units).reshape(-1) if units is not None else np.arange(n))],
                "values": {m: [_round(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)] for m, v in ev["per_task"].items()},
            }
        rows.append(row)
    return rows


def _round(x: float) -> float | None:
    return round(float(x), 5) if math.isfinite(x) else None


def _rows(ctx: _Context, sc: Scenario, evals, *, train_seconds: float, eval_seconds: float, peak_mb: float,
          memory: str, extra: dict[str, Any], cfg_hash: str | None = None) -> list[dict[str, Any]]:
    return make_rows(evals, scenario=sc.name, algorithm=ctx.algo, seed=ctx.seed, run_id=ctx.run_id,
                     config_hash=cfg_hash or config_hash(sc), env=ctx.env, train_seconds=train_seconds,
                     eval_seconds=eval_seconds, peak_memory_mb=peak_mb, memory=memory, extra=extra)


def _metric_keys(ev: dict[str, Any]) -> list[str]:
    return [k for k, v in ev.items() if k not in ("n_tasks", "flags", "adapt_ms_per_task", "per_task") and isinstance(v, float)]


def _metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """Every metric name of the rows, in first-seen order."""
    return list(dict.fromkeys(m for r in rows for m in r["metrics"]))


def _learning_curves(ctx: _Context, run_dir: Path) -> list[dict[str, Any]]:
    """Training loss (window means, at most ``_MAX_CURVE_POINTS``) and validation metrics vs step."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = np.array([r["step"] for r in lines], dtype=np.int64)
    loss = np.array([r["loss"] for r in lines], dtype=np.float64)
    w = max(1, -(-len(lines) // _MAX_CURVE_POINTS))
    ends = list(range(w - 1, len(lines), w)) + ([len(lines) - 1] if len(lines) % w else [])
    starts = [e - w + 1 for e in ends]
    val = [r for r in lines if "val" in r]
    names = [k for k, v in (val[0]["val"].items() if val else []) if isinstance(v, float) and k != "adapt_ms_per_task"]
    base = {"run_id": ctx.run_id, "algorithm": ctx.algo, "seed": ctx.seed}
    return [
        {"kind": "learning", **base, "step": [int(steps[e]) for e in ends],
         "loss": [_finite_mean(loss[s : e + 1]) for s, e in zip(starts, ends, strict=True)], "window": w},
        {"kind": "validation", **base, "pool": ctx.splits.val, "step": [r["step"] for r in val],
         "metrics": {m: [r["val"][m] for r in val] for m in names}},
    ]


def _finite_mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


# ---------------------------------------------------------------------------------- helpers


def _check_seeds(seeds: int) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds={seeds!r}: the number of seeds must be an integer >= 1; e.g. --seeds 3")
    return seeds


def _check_shots(shots) -> tuple[int, ...]:
    if isinstance(shots, (int, str)):
        raise ConfigError(f"shots={shots!r}: expected a list of support sizes; e.g. shots=[1, 5, 10] (--shots 1,5,10)")
    out = tuple(shots)
    for k in out:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"shots={list(out)}: {k!r} is not a support size >= 1; e.g. shots=[1, 5, 10] (--shots 1,5,10)")
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


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def _environment(device: torch.device) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    commit, dirty = "unknown", None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip() or "unknown"
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                    text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return {
        "commit": commit, "dirty": dirty, "device": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
