"""One benchmark run: fit one method for one seed through the method interface, score every
test state once per shots value, and return ``(rows, resolved config, curves)``.

* Methods registered with a run trainer (the MAML family): :class:`~metarec.methods.EngineMethod`
  trains into ``runs/<algo>-s<seed>/`` with the one outer loop; ``finetune`` without
  ``algorithm.eval_lr`` chooses its rate on meta-val; the curves (meta-val metric vs adaptation
  steps, learning curves) come from the run.
* Cross-domain methods: :mod:`metarec.bench.crossdomain_rows`.
* Any other registered method (``popularity``, methods added with
  :func:`~metarec.methods.register_method`): built from the scenario, fitted, scored.

Every method is scored the same way: ``fitted.adapt(batch.support, ...).score(users, items)``
inside :func:`metarec.bench.evaluation.score_pool`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.bench.context import RunContext, evaluate_states, ranking
from metarec.bench.crossdomain_rows import crossdomain_run, is_crossdomain
from metarec.bench.evaluation import score_pool
from metarec.bench.variants import variant_scenario
from metarec.bench.writers import context_rows, metric_keys, rss_mb
from metarec.config import Scenario, config_hash, merge, scenario_from_dict, to_dict
from metarec.episodes.build import sampler_config
from metarec.methods import EngineFitted, EngineMethod, FitData, build_method, method_info
from metarec.metrics.evaluate import evaluate_fitted, select_eval_lr

__all__ = [
    "run_method",
    "fit_engine",
    "tuned_scenario",
    "tuned_settings",
    "FINETUNE_LRS",
    "ADAPT_CURVE_STEPS",
    "algo_eval_steps",
]

FINETUNE_LRS = (0.001, 0.003, 0.01, 0.03, 0.1)
"""Fine-tuning rates ``finetune`` chooses from on meta-val (when ``algorithm.eval_lr`` is unset)."""
ADAPT_CURVE_STEPS = (0, 1, 2, 5, 10)
"""Inner steps at which the meta-val metric-vs-adaptation-steps curve is measured."""
_MAX_CURVE_POINTS = 300

Run = tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]


def run_method(ctx: RunContext, say) -> Run:
    """Fit and score ``ctx.algo`` for ``ctx.seed`` (see the module docstring)."""
    if is_crossdomain(ctx.algo):
        return crossdomain_run(ctx, say)
    if method_info(ctx.algo).trainer is not None:  # its outer loop writes its run directory
        return _engine(ctx, say)
    return _interface(ctx, say)


def _engine(ctx: RunContext, say) -> Run:
    sc = tuned_scenario(variant_scenario(ctx.scenario, ctx.algo), ctx.tuned)
    run_dir = (ctx.runs or ctx.out / "runs") / ctx.run_id
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    fitted, lr, lr_scores = fit_engine(ctx, sc, run_dir)
    res = fitted.info["train_result"]
    algo = fitted.algo
    dtype = next(iter(fitted.params.values())).dtype
    t_eval = time.perf_counter()

    def scorer_for(batch):
        return fitted.adapt(batch.support, steps=sc.algorithm.eval_steps, lr=lr).score

    def score_test(pool, scfg, default=False):
        return score_pool(
            ctx.table,
            pool,
            scfg,
            scorer_for,
            k=sc.metrics.k,
            names=sc.metrics.names,
            seed=ctx.seed,
            cat=ctx.cat,
            device=ctx.device,
            dtype=dtype,
            **ranking(ctx, default),
        )

    evals = evaluate_states(ctx, sc, score_test, catalogue=True)
    eval_s = time.perf_counter() - t_eval
    curves = _learning_curves(ctx, run_dir) + [_steps_curve(ctx, sc, fitted, lr)]
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if cuda else rss_mb()
    rows = context_rows(
        ctx,
        sc,
        evals,
        train_seconds=res.seconds,
        eval_seconds=eval_s,
        peak_mb=peak,
        memory="cuda max_memory_allocated (this run)"
        if cuda
        else "ru_maxrss (process peak so far)",
        extra={
            "best_step": res.best_step,
            "steps": res.steps,
            "stopped_early": res.stopped_early,
            "skipped_steps": res.skipped_steps,
            "eval_steps": algo_eval_steps(sc, algo),
            "eval_lr": _eval_lr_label(sc, algo, lr),
            **(
                {"eval_lr_meta_val": {str(k): v for k, v in lr_scores.items()}} if lr_scores else {}
            ),
        },
    )
    p = "mae" if ctx.table.feedback == "explicit" else "auc"
    best_val = res.best_val.get(p)
    say(
        f"  seed {ctx.seed} {ctx.algo:<10} trained {res.steps} steps in {res.seconds:.0f} s (best meta-val {p} "
        f"{best_val:.4f} at step {res.best_step}); test states scored in {eval_s:.0f} s"
        if best_val is not None
        else f"  seed {ctx.seed} {ctx.algo:<10} trained {res.steps} steps in {res.seconds:.0f} s"
    )
    return rows, to_dict(sc), curves


def fit_engine(
    ctx: RunContext, sc: Scenario, run_dir: Path
) -> tuple[EngineFitted, float | None, dict[float, float] | None]:
    """Train engine method ``ctx.algo`` with the resolved scenario ``sc`` into ``run_dir``:
    ``(fitted, evaluation lr, meta-val score per fine-tuning rate)``. ``finetune`` without
    ``algorithm.eval_lr`` chooses its rate on meta-val (never on a test state)."""
    if (
        run_dir / "manifest.json"
    ).exists():  # train() would suggest --resume, which a benchmark run does not take
        raise ConfigError(
            f"runs_dir={str(run_dir.parent)!r}: already holds run {run_dir.name!r} of an earlier benchmark; choose "
            "another --runs-dir (or --out), or delete that folder"
        )
    fitted = EngineMethod(ctx.algo, sc).fit(
        FitData(ctx.table, ctx.splits, seed=ctx.seed, device=ctx.device, out=run_dir)
    )
    algo = fitted.algo
    lr = None if algo.meta_learned_lrs else sc.algorithm.eval_lr
    lr_scores = None
    if ctx.algo == "finetune" and sc.algorithm.eval_lr is None:
        lr, lr_scores = select_eval_lr(
            fitted.model,
            fitted.params,
            algo,
            ctx.table,
            ctx.splits.pools[ctx.splits.val],
            sampler_config(sc.protocol),
            lrs=FINETUNE_LRS,
            steps=sc.algorithm.eval_steps,
            max_tasks=sc.train.val_tasks,
            k=sc.metrics.k,
        )
    return fitted, lr, lr_scores


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


def _steps_curve(
    ctx: RunContext, sc: Scenario, fitted: EngineFitted, lr: float | None
) -> dict[str, Any]:
    """Meta-val metric vs adaptation steps (:data:`ADAPT_CURVE_STEPS`)."""
    algo = fitted.algo
    val_pool, val_cfg = ctx.splits.pools[ctx.splits.val], sampler_config(sc.protocol)
    steps = [s for s in ADAPT_CURVE_STEPS if not (algo.per_step_lr and s > algo.inner_steps)]
    dtype = next(iter(fitted.params.values())).dtype
    by_steps = [
        evaluate_fitted(
            fitted,
            ctx.table,
            val_pool,
            val_cfg,
            steps=s,
            lr=lr,
            max_tasks=sc.train.val_tasks,
            k=sc.metrics.k,
            names=sc.metrics.names,
            seed=ctx.seed,
            device=ctx.device,
            dtype=dtype,
        )
        for s in steps
    ]
    return {
        "kind": "adaptation_steps",
        "run_id": ctx.run_id,
        "algorithm": ctx.algo,
        "seed": ctx.seed,
        "pool": ctx.splits.val,
        "n_tasks": by_steps[0]["n_tasks"],
        "steps": steps,
        "metrics": {m: [e[m] for e in by_steps] for m in metric_keys(by_steps[0])},
        "adapt_ms_per_task": [e["adapt_ms_per_task"] for e in by_steps],
    }


def _interface(ctx: RunContext, say) -> Run:
    """Any other registered method, through the interface only."""
    sc = tuned_scenario(ctx.scenario, ctx.tuned)
    t0 = time.perf_counter()
    fitted = build_method(ctx.algo, sc, **tuned_settings(ctx.tuned)).fit(
        FitData(ctx.table, ctx.splits, seed=ctx.seed, device=ctx.device)
    )
    fit_s = time.perf_counter() - t0
    dtype = getattr(
        getattr(fitted, "scores", None), "dtype", torch.float32
    )  # popularity scores in float64
    t_eval = time.perf_counter()

    def score_test(pool, scfg, default=False):
        return score_pool(
            ctx.table,
            pool,
            scfg,
            lambda batch: fitted.adapt(batch.support).score,
            k=sc.metrics.k,
            names=sc.metrics.names,
            seed=ctx.seed,
            cat=ctx.cat,
            device=ctx.device,
            dtype=dtype,
            **ranking(ctx, default),
        )

    evals = evaluate_states(ctx, sc, score_test, catalogue=True)
    eval_s = time.perf_counter() - t_eval
    cfg = {"benchmark_algorithm": ctx.algo, **fitted.config(), "scenario": to_dict(sc)}
    steps = getattr(fitted, "steps", 0) or 0
    log = getattr(fitted, "log", None)  # the learners' episodic loop: best step, steps run
    log = log if isinstance(log, dict) else {}  # (other methods keep other kinds of logs)
    budget = getattr(getattr(fitted, "settings", None), "steps", None)
    ran = int(log.get("steps", 0) or 0)
    trained = {
        "best_step": log.get("best_step"),
        "steps": ran,
        **({"stopped_early": ran < budget} if "steps" in log and budget is not None else {}),
    }
    rows = context_rows(
        ctx,
        sc,
        evals,
        train_seconds=fit_s,
        eval_seconds=eval_s,
        peak_mb=rss_mb(),
        memory="ru_maxrss (process peak so far)",
        extra={**trained, "eval_steps": steps, "eval_lr": None},
        cfg_hash=config_hash(cfg),
    )
    best = log.get("best_val")
    seen = f" (best meta-val {best:.4f} at step {log.get('best_step')})" if best is not None else ""
    say(
        f"  seed {ctx.seed} {ctx.algo:<10} fitted in {fit_s:.0f} s{seen}; test states scored in {eval_s:.0f} s"
    )
    return rows, cfg, []


def _eval_lr_label(sc: Scenario, algo: Any, lr: float | None) -> float | str | None:
    if algo_eval_steps(sc, algo) == 0:
        return None
    return "learned" if algo.meta_learned_lrs else (lr if lr is not None else algo.inner_lr)


def algo_eval_steps(sc: Scenario, algo: Any) -> int:
    """Inner steps used at evaluation (``algorithm.eval_steps``; else 0 for ``global``, else ``inner_steps``)."""
    if sc.algorithm.eval_steps is not None:
        return sc.algorithm.eval_steps
    return algo.default_steps


def _learning_curves(ctx: RunContext, run_dir: Path) -> list[dict[str, Any]]:
    """Training loss (window means, at most ``_MAX_CURVE_POINTS``) and validation metrics vs step."""
    lines = [
        json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()
    ]
    steps = np.array([r["step"] for r in lines], dtype=np.int64)
    loss = np.array([r["loss"] for r in lines], dtype=np.float64)
    w = max(1, -(-len(lines) // _MAX_CURVE_POINTS))
    ends = list(range(w - 1, len(lines), w)) + ([len(lines) - 1] if len(lines) % w else [])
    starts = [e - w + 1 for e in ends]
    val = [r for r in lines if "val" in r]
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
            "metrics": {m: [r["val"][m] for r in val] for m in names},
        },
    ]


def _finite_mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


# ---------------------------------------------------------------------------------- helpers
