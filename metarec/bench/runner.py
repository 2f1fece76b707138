"""One benchmark run: fit one method for one seed through the method interface, score every
test state once per shots value, and return ``(rows, resolved config, curves)``.

Every registered method runs the same path:

1. the scenario of the benchmark algorithm (:func:`metarec.bench.variants.variant_scenario`, a
   ``--tune`` configuration on top) builds the method (``build_method(name, scenario,
   **settings)``; :data:`metarec.bench.variants.VARIANT_SETTINGS` adds a benchmark algorithm's
   own settings, e.g. ``finetune`` choosing its rate on meta-val);
2. ``method.fit(FitData(..., out=runs/<algo>-s<seed>))`` trains it (a family with its own run
   format writes that folder; the learning curves come from ``fitted.training_log``);
3. each test state is scored per shots value by :func:`metarec.bench.evaluation.score_pool`
   with ``fitted.adapt(batch.support, steps=, lr=).score``, the adaptation that
   :func:`~metarec.methods.adaptation_for` says the method uses for those shots (chosen on
   meta-val where the method chooses one);
4. the rows record the training log (best step, steps, early stop, skipped steps) and the
   adaptation's report fields (``eval_steps``, ``eval_lr``, ...).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.bench.context import RunContext, evaluate_states, ranking
from metarec.bench.evaluation import score_pool
from metarec.bench.variants import VARIANT_SETTINGS, variant_scenario
from metarec.bench.writers import context_rows, metric_keys, rss_mb
from metarec.config import Scenario, config_hash, merge, scenario_from_dict, to_dict
from metarec.episodes.build import sampler_config
from metarec.episodes.sampler import SamplerConfig
from metarec.methods import (
    Adaptation,
    FitData,
    Fitted,
    adaptation_for,
    build_method,
    fitted_place,
    method_info,
    training_log_of,
)
from metarec.metrics.evaluate import evaluate_fitted
from metarec.train.log import TrainingLog

__all__ = [
    "run_method",
    "fit_method",
    "tuned_scenario",
    "tuned_settings",
    "FINETUNE_LRS",
    "ADAPT_CURVE_STEPS",
    "algo_eval_steps",
]

FINETUNE_LRS = VARIANT_SETTINGS["finetune"]["eval_lrs"]
"""Fine-tuning rates ``finetune`` chooses from on meta-val (when ``algorithm.eval_lr`` is unset)."""
ADAPT_CURVE_STEPS = (0, 1, 2, 5, 10)
"""Inner steps at which the meta-val metric-vs-adaptation-steps curve is measured."""
_MAX_CURVE_POINTS = 300

Run = tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]


def fit_method(ctx: RunContext, sc: Scenario, run_dir: Path) -> Fitted:
    """``ctx.algo`` built from ``sc`` (its benchmark settings and ``--tune`` values on top) and
    fitted on ``ctx.splits``' meta-train for ``ctx.seed``, its run files (if any) in ``run_dir``."""
    if (run_dir / "manifest.json").exists():  # a family's trainer would suggest --resume
        raise ConfigError(
            f"runs_dir={str(run_dir.parent)!r}: already holds run {run_dir.name!r} of an earlier benchmark; choose "
            "another --runs-dir (or --out), or delete that folder"
        )
    settings = {**VARIANT_SETTINGS.get(ctx.algo, {}), **tuned_settings(ctx.tuned)}
    method = build_method(ctx.algo, sc, **settings)
    data = FitData(
        ctx.table, ctx.splits, seed=ctx.seed, device=ctx.device, out=run_dir, memo=ctx.memo
    )
    return method.fit(data)


def run_method(ctx: RunContext, say) -> Run:
    """Fit and score ``ctx.algo`` for ``ctx.seed`` (see the module docstring)."""
    sc = tuned_scenario(variant_scenario(ctx.scenario, ctx.algo, quick=ctx.quick), ctx.tuned)
    run_dir = (ctx.runs or ctx.out / "runs") / ctx.run_id
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    t0 = time.perf_counter()
    fitted = fit_method(ctx, sc, run_dir)
    fit_s = time.perf_counter() - t0
    log = training_log_of(fitted)
    dtype = fitted_place(fitted)[1]
    plans: dict[int | None, Adaptation] = {}

    def plan(scfg: SamplerConfig) -> Adaptation:
        if scfg.n_support not in plans:
            plans[scfg.n_support] = adaptation_for(fitted, scfg)
        return plans[scfg.n_support]

    def score_test(pool, scfg, default=False):
        a = plan(scfg)
        return score_pool(
            ctx.table,
            pool,
            scfg,
            lambda batch: fitted.adapt(batch.support, steps=a.steps, lr=a.lr).score,
            k=sc.metrics.k,
            names=sc.metrics.names,
            seed=ctx.seed,
            cat=ctx.cat,
            device=ctx.device,
            dtype=dtype,
            **ranking(ctx, default),
        )

    t_eval = time.perf_counter()
    evals = evaluate_states(ctx, sc, score_test, catalogue=True)
    eval_s = time.perf_counter() - t_eval
    curves = learning_curves(ctx, log)
    if method_info(ctx.algo).tags.inner_loop:
        curves.append(_steps_curve(ctx, sc, fitted, plan(sampler_config(sc.protocol)), dtype))
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if cuda else rss_mb()
    cfg = {"benchmark_algorithm": ctx.algo, **fitted.config(), "scenario": to_dict(sc)}
    h = config_hash(cfg)
    train_s = log.seconds or fit_s
    rows: list[dict[str, Any]] = []
    for ev in evals:
        rows += context_rows(
            ctx,
            sc,
            [ev],
            train_seconds=train_s,
            eval_seconds=eval_s,
            peak_mb=peak,
            memory="cuda max_memory_allocated (this run)"
            if cuda
            else "ru_maxrss (process peak so far)",
            extra={**training_fields(log), **plans[ev[2]].report},
            cfg_hash=h,
        )
    best = log.best_val.get(log.metric) if log.metric else None
    seen = (
        f" (best meta-val {log.metric} {best:.4f} at {log.unit} {log.best_step})"
        if best is not None
        else ""
    )
    say(
        f"  seed {ctx.seed} {ctx.algo:<10} trained {log.steps} {log.unit}(s) in {train_s:.0f} s{seen}; "
        f"test states scored in {eval_s:.0f} s"
    )
    return rows, cfg, curves


def training_fields(log: TrainingLog) -> dict[str, Any]:
    """A run's training fields of its rows: best step, steps run, early stop, skipped steps
    (``best_step`` is ``None`` for a method that does not train by steps)."""
    trained = bool(log.steps or log.rows)
    return {
        "best_step": log.best_step if trained else None,
        "steps": log.steps,
        "stopped_early": log.stopped_early,
        "skipped_steps": log.skipped_steps,
    }


def tuned_scenario(sc: Scenario, tuned: dict[str, Any] | None) -> Scenario:
    """``sc`` with the scenario keys (dotted: ``algorithm.inner_lr``) of a tuned configuration."""
    keys = {k: v for k, v in (tuned or {}).items() if "." in k}
    if not keys:
        return sc
    return scenario_from_dict(merge(to_dict(sc), unflatten(keys)))


def tuned_settings(tuned: dict[str, Any] | None) -> dict[str, Any]:
    """The method settings (undotted keys: ``kl_weight``) of a tuned configuration."""
    return {k: v for k, v in (tuned or {}).items() if "." not in k}


def unflatten(keys: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for dotted, v in keys.items():
        node = out
        *path, last = dotted.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def algo_eval_steps(sc: Scenario, algo: Any) -> int:
    """Inner steps used at evaluation (``algorithm.eval_steps``, else the algorithm's default:
    0 for ``global``, else ``inner_steps``)."""
    if sc.algorithm.eval_steps is not None:
        return sc.algorithm.eval_steps
    return algo.default_steps


def _steps_curve(
    ctx: RunContext, sc: Scenario, fitted: Fitted, a: Adaptation, dtype: torch.dtype
) -> dict[str, Any]:
    """Meta-val metric vs adaptation steps (:data:`ADAPT_CURVE_STEPS`; a step count the method
    refuses, e.g. more than the learned per-step rates, is left out)."""
    val_pool, val_cfg = ctx.splits.pools[ctx.splits.val], sampler_config(sc.protocol)
    steps, by_steps = [], []
    for s in ADAPT_CURVE_STEPS:
        try:
            ev = evaluate_fitted(
                fitted,
                ctx.table,
                val_pool,
                val_cfg,
                steps=s,
                lr=a.lr,
                max_tasks=sc.train.val_tasks,
                k=sc.metrics.k,
                names=sc.metrics.names,
                seed=ctx.seed,
                device=ctx.device,
                dtype=dtype,
            )
        except ConfigError:
            continue
        steps.append(s)
        by_steps.append(ev)
    return {
        "kind": "adaptation_steps",
        "run_id": ctx.run_id,
        "algorithm": ctx.algo,
        "seed": ctx.seed,
        "pool": ctx.splits.val,
        "n_tasks": by_steps[0]["n_tasks"] if by_steps else 0,
        "steps": steps,
        "metrics": {m: [e[m] for e in by_steps] for m in metric_keys(by_steps[0])}
        if by_steps
        else {},
        "adapt_ms_per_task": [e["adapt_ms_per_task"] for e in by_steps],
    }


def learning_curves(ctx: RunContext, log: TrainingLog) -> list[dict[str, Any]]:
    """Training loss (window means, at most ``_MAX_CURVE_POINTS``) and meta-val metrics vs
    step, from the method's training log (none for a method that does not train by steps)."""
    lines = [r for r in log.rows if "loss" in r]
    if not lines:
        return []
    steps = np.array([r["step"] for r in lines], dtype=np.int64)
    loss = np.array([np.nan if r["loss"] is None else r["loss"] for r in lines], dtype=np.float64)
    w = max(1, -(-len(lines) // _MAX_CURVE_POINTS))
    ends = list(range(w - 1, len(lines), w)) + ([len(lines) - 1] if len(lines) % w else [])
    starts = [e - w + 1 for e in ends]
    val = [r for r in log.rows if isinstance(r.get("val"), dict)]
    names = [
        k
        for k, v in (val[0]["val"].items() if val else [])
        if isinstance(v, float) and k != "adapt_ms_per_task"
    ]
    base = {"run_id": ctx.run_id, "algorithm": ctx.algo, "seed": ctx.seed}
    return [
        {
            "kind": "learning",
            **base,
            "step": [int(steps[e]) for e in ends],
            "loss": [_finite_mean(loss[s : e + 1]) for s, e in zip(starts, ends, strict=True)],
            "window": w,
        },
        {
            "kind": "validation",
            **base,
            "pool": ctx.splits.val,
            "step": [r["step"] for r in val],
            "metrics": {m: [r["val"].get(m) for r in val] for m in names},
        },
    ]


def _finite_mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None
