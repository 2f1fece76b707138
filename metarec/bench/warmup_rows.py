"""The item warm-up protocol in ``metarec bench`` (a scenario with a ``[warmup]`` section).

Per seed ``s`` the ratings become clicks (``warmup.threshold``), the items are split with
``warmup.seed = s`` (:func:`metarec.episodes.warmup.item_warmup_split`: old items train, new
items are meta-val and meta-test), every algorithm is fitted on the old items with seed ``s``
and each test pool is scored once per warm-up phase (:data:`~metarec.episodes.warmup.PHASES`:
``cold``, ``warm-a``, ``warm-b``, ``warm-c``) by
:func:`~metarec.episodes.warmup.evaluate_warmup`: pooled ``auc``, ``logloss`` and the mean
per-item ``item_auc`` on the new items' test interactions. One row per (phase, algorithm, seed):
``state`` is the phase (``"<pool>/<phase>"`` with several test pools), ``shots = "default"`` and
``n_support`` the phase's support size (``0, k, 2k, 3k``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from metarec.bench.context import RunContext
from metarec.bench.runner import fit_method, training_fields, tuned_scenario
from metarec.bench.variants import variant_scenario
from metarec.bench.writers import context_rows, rss_mb
from metarec.config import Scenario, config_hash, to_dict
from metarec.data.table import InteractionTable
from metarec.episodes.build import sampler_config
from metarec.episodes.splits import MetaSplits
from metarec.episodes.warmup import PHASES, click_table, item_warmup_split
from metarec.methods import adaptation_for, training_log_of
from metarec.metrics.warmup import evaluate_warmup

__all__ = [
    "is_warmup",
    "warmup_table",
    "warmup_splits",
    "warmup_protocol",
    "warmup_rows_per_seed",
    "warmup_run",
    "warmup_val_score",
]

Run = tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]


def is_warmup(sc: Scenario) -> bool:
    """Whether ``sc`` is an item warm-up scenario (it has a ``[warmup]`` section)."""
    return sc.warmup is not None


def warmup_table(table: InteractionTable, sc: Scenario) -> InteractionTable:
    """The click table of the protocol (``rating >= warmup.threshold``)."""
    assert sc.warmup is not None
    return click_table(table, sc.warmup.threshold)


def warmup_splits(table: InteractionTable, sc: Scenario, seed: int) -> MetaSplits:
    """The item split of seed ``seed`` (``warmup.seed = seed``)."""
    assert sc.warmup is not None
    return item_warmup_split(table, replace(sc.warmup, seed=seed))


def warmup_protocol(sc: Scenario) -> dict[str, Any]:
    """The protocol record of ``bench.json`` for a warm-up scenario (the per-seed split seed left out)."""
    assert sc.warmup is not None
    w = {k: v for k, v in to_dict(sc.warmup).items() if k != "seed"}
    return {"split": "item-warmup", "unit": "item", **w}


def warmup_rows_per_seed(splits: MetaSplits) -> int:
    """Rows one run writes: a row per phase of every non-empty test pool."""
    return len(PHASES) * sum(len(splits.pools[s]) > 0 for s in splits.states)


def _fit(ctx: RunContext, tuned: dict[str, Any] | None, run_dir) -> tuple[Any, Scenario, Any, Any]:
    """``(fitted, scenario, steps, lr)``: ``ctx.algo`` fitted on ``ctx.splits``' meta-train, and
    the adaptation it evaluates with."""
    sc = tuned_scenario(variant_scenario(ctx.scenario, ctx.algo, quick=ctx.quick), tuned)
    fitted = fit_method(replace(ctx, tuned=tuned), sc, run_dir)
    a = adaptation_for(fitted, sampler_config(sc.protocol))
    return fitted, sc, a.steps, a.lr


def warmup_run(ctx: RunContext, say) -> Run:
    """Fit ``ctx.algo`` for ``ctx.seed`` and score every test pool per phase: ``(rows, config, [])``."""
    t0 = time.perf_counter()
    fitted, sc, steps, lr = _fit(ctx, ctx.tuned, (ctx.runs or ctx.out / "runs") / ctx.run_id)
    fit_s = time.perf_counter() - t0
    assert sc.warmup is not None
    k = sc.warmup.k
    t_eval = time.perf_counter()
    evals: list[tuple[str, int | str, Any, dict[str, Any]]] = []
    several = len(ctx.splits.states) > 1
    for state in ctx.splits.states:
        pool = ctx.splits.pools[state]
        if len(pool) == 0:
            continue
        res = evaluate_warmup(fitted, ctx.table, pool, k, steps=steps, lr=lr)
        for i, phase in enumerate(PHASES):
            r = res[phase]
            ev = {
                "auc": r["auc"],
                "logloss": r["logloss"],
                "item_auc": r["item_auc"],
                "n_tasks": r["n_items"],
                "flags": [],
                "adapt_ms_per_task": 0.0,
            }
            evals.append((f"{state}/{phase}" if several else phase, "default", i * k, ev))
    eval_s = time.perf_counter() - t_eval
    cfg = {"benchmark_algorithm": ctx.algo, **fitted.config(), "scenario": to_dict(sc)}
    log = training_log_of(fitted)
    rows = context_rows(
        ctx,
        sc,
        evals,
        train_seconds=fit_s,
        eval_seconds=eval_s,
        peak_mb=rss_mb(),
        memory="ru_maxrss (process peak so far)",
        extra={
            "protocol": "item-warmup",
            "warmup_k": k,
            "best_step": training_fields(log)["best_step"],
            "steps": log.steps,
            "eval_steps": steps,
            "eval_lr": lr,
        },
        cfg_hash=config_hash(cfg),
    )
    cold = rows[0]["metrics"] if rows else {}
    last = rows[len(PHASES) - 1]["metrics"] if len(rows) >= len(PHASES) else {}
    say(
        f"  seed {ctx.seed} {ctx.algo:<10} fitted in {fit_s:.0f} s; phases scored in {eval_s:.0f} s "
        f"(auc cold {cold.get('auc', float('nan')):.4f}, warm-c {last.get('auc', float('nan')):.4f})"
    )
    return rows, cfg, []


def warmup_val_score(ctx: RunContext, values: dict[str, Any], run_dir) -> float:
    """A ``--tune`` trial's meta-val score: the pooled AUC on the meta-val items, averaged over
    the four phases."""
    fitted, sc, steps, lr = _fit(ctx, values, run_dir)
    assert sc.warmup is not None
    res = evaluate_warmup(
        fitted, ctx.table, ctx.splits.pools[ctx.splits.val], sc.warmup.k, steps=steps, lr=lr
    )
    return float(sum(res[p]["auc"] for p in PHASES) / len(PHASES))
