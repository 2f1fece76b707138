"""Meta-training: the one outer loop (optimiser, validation, checkpoints, exact resume).

``train(scenario, out)`` is what ``metarec train SCENARIO --out RUN_DIR`` calls. The loop:

1. sample a meta-batch of ``algorithm.meta_batch`` meta-train tasks;
2. ``meta_loss_and_grads`` (vmapped over tasks, chunked if asked); a non-finite meta-gradient
   skips the step (counted, reported) and training goes on;
3. clip, Adam step;
4. every ``train.val_every`` steps: adapt + score on meta-val tasks; keep the best parameters
   (model selection on validation only); stop early after ``train.patience`` evaluations
   without improvement;
5. every ``train.checkpoint_every`` steps: write ``checkpoints/last.pt`` atomically (weights,
   optimiser, sampler and torch RNG states), so ``resume=True`` after a kill ends with exactly
   the weights of an uninterrupted run.

The run's parts are built by :mod:`metarec.train.setup` (device, algorithm config, model) and
its files written by :mod:`metarec.train.files`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metarec._errors import ConfigError
from metarec.algorithms import (
    AlgorithmConfig,
    adapt_patterns,
    init_algorithm_state,
    meta_loss_and_grads,
    msl_weights,
)
from metarec.config import Scenario
from metarec.data.load import load_table
from metarec.data.table import InteractionTable
from metarec.episodes.build import build_splits, sampler_config
from metarec.episodes.sampler import TaskSampler
from metarec.episodes.splits import MetaSplits
from metarec.metrics.evaluate import evaluate_pool, metric_selection
from metarec.models.base import split_params
from metarec.runs.checkpoint import (
    atomic_write_json,
    load_best,
)
from metarec.runs.fingerprint import check_same_data, write_fingerprint
from metarec.train import distributed  # [distributed]
from metarec.train.files import (
    _check_same_config,
    _save_checkpoint,
    _save_weights,
    _truncate_log,
    _write_run_files,
)
from metarec.train.loggers import Logger, make_loggers
from metarec.train.session import training_session
from metarec.train.setup import (
    algorithm_config,
    build_training_model,
    model_kwargs,
    resolve_device,
)

__all__ = [
    "TrainResult",
    "train",
    "algorithm_config",
    "model_kwargs",
    "resolve_device",
    "build_training_model",
]

SELECT_METRIC = {
    "explicit": ("mae", -1.0),
    "implicit": ("auc", 1.0),
}  # metric, sign (+1: higher is better)


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    steps: int
    best_step: int
    best_val: dict[str, Any]
    skipped_steps: int
    seconds: float
    tasks_per_s: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


@training_session  # hook (metarec.train.session): lock, orphan cleanup, resume/overwrite policy, disk errors
def train(
    scenario: Scenario,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    table: InteractionTable | None = None,
    splits: MetaSplits | None = None,
    stop_after: int | None = None,
    evaluate_test: bool = True,
    loggers: Sequence[Logger] = (),
    method: str | None = None,
) -> TrainResult:
    r"""Meta-train ``scenario`` into run directory ``out``.

    Args:
        scenario: the resolved scenario (see :func:`metarec.config.load_scenario`).
        out: run directory (created; must be empty or a previous run of the same config
            when ``resume``).
        resume: continue from ``out/checkpoints/last.pt`` (none yet: start from step 0).
        overwrite: delete the run in ``out`` (its own files only) and train afresh.
        table, splits: reuse already-built data (the benchmark does); default: built from the scenario.
        stop_after: stop (as if killed) after this many steps, having checkpointed; for tests.
        evaluate_test: score the best parameters once on every test state at the end.
        loggers: extra :class:`~metarec.train.loggers.Logger`\ s that get every ``metrics.jsonl`` row
            (beside those named by ``train.loggers``).
        method: the method name the manifest records (default ``algorithm.name``; ``melu-ref``
            trains as a MAML variant), written with the run's other files under the lock.
    """
    t_start = time.perf_counter()
    out = Path(out)
    tr = scenario.train
    device = resolve_device(tr.device)
    dist_ctx = distributed.init(
        device
    )  # [distributed] joins torchrun's process group (WORLD_SIZE > 1)
    device, out = (
        dist_ctx.device,
        dist_ctx.run_dir(out, resume),
    )  # [distributed] cuda:LOCAL_RANK; rank 0 writes `out`
    evaluate_test = evaluate_test and dist_ctx.is_main  # [distributed]
    if table is None:
        table = load_table(scenario.data)
    if splits is None:
        splits = build_splits(table, scenario.protocol)
    if resume:
        check_same_data(
            out, table
        )  # hook (metarec.runs.fingerprint): refuse changed data, saying what changed
    algo = algorithm_config(scenario, table.feedback)
    metric_selection(scenario.metrics.names, table.feedback, scenario.metrics.k)  # checked up front
    scfg = sampler_config(scenario.protocol)
    last = out / "checkpoints" / "last.pt"
    if not resume and (out / "manifest.json").exists():
        raise ConfigError(
            f"out={str(out)!r}: already holds a run; pass --resume to continue it, --overwrite to replace it, or choose an empty folder"
        )

    torch.manual_seed(tr.seed)
    model = build_training_model(scenario, table, splits).to(device)
    params = {k: v for k, v in model.named_parameters()}
    fast, _ = split_params(model, adapt_patterns(algo, model), params)
    state = init_algorithm_state(algo, fast)  # on the parameters' device, leaves
    opt = torch.optim.Adam(list(params.values()) + list(state.values()), lr=tr.outer_lr)
    # implicit feedback: meta-training negatives come from the meta-train items only, so no
    # held-out-only item is ever a training example (see SamplerConfig.negatives_from)
    train_scfg = replace(scfg, negatives_from="pool")
    sampler = TaskSampler(
        table,
        splits.pools[splits.train],
        train_scfg,
        seed=tr.seed,
        device=device,
        dtype=torch.float32,
    )
    metric, sign = SELECT_METRIC[table.feedback]

    step, skipped, best_score, best_step, evals_without_gain = 0, 0, -math.inf, 0, 0
    best_val: dict[str, Any] = {}
    if resume:
        ck = load_best(out, which="last", map_location=device)  # hook (metarec.runs.identity)
        _check_same_config(ck, scenario)
        with torch.no_grad():
            for k, v in ck["params"].items():
                params[k].copy_(v)
            for k, v in ck["state"].items():
                state[k].copy_(v)
        opt.load_state_dict(ck["optimizer"])
        sampler.rng.bit_generator.state = json.loads(ck["sampler_rng"])
        torch.set_rng_state(ck["torch_rng"])
        step, skipped, best_score, best_step = (
            int(ck["step"]),
            int(ck["skipped"]),
            float(ck["best_score"]),
            int(ck["best_step"]),
        )
        evals_without_gain = int(ck["evals_without_gain"])
        best_val = json.loads(ck["best_val"])
        _truncate_log(out / "metrics.jsonl", step)  # steps after the checkpoint are re-run
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_run_files(out, scenario, table, model, algo, method)
        write_fingerprint(out, table)  # hook (metarec.runs.fingerprint)

    sinks = [*make_loggers(tr.loggers, out), *loggers]
    log = (out / "metrics.jsonl").open("a")
    bar = tqdm(
        total=tr.steps,
        initial=step,
        disable=not tr.progress,
        desc=f"{algo.name}",
        unit="step",
        leave=False,
        mininterval=0.5,
    )
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if tr.bf16 else contextlib.nullcontext()
    )
    tasks_done, t_loop = 0, time.perf_counter()
    stopped_early = False
    try:
        while step < tr.steps:
            batch = sampler.sample(algo.meta_batch)
            batch = dist_ctx.shard(
                batch
            )  # [distributed] this rank's disjoint slice of the global meta-batch
            sw = (
                msl_weights(algo.inner_steps, step / max(tr.steps, 1))
                if algo.multi_step_loss
                else None
            )
            with autocast:
                loss, grads = meta_loss_and_grads(
                    algo, model, params, batch, state=state, step_weights=sw
                )
            loss, grads = dist_ctx.all_reduce(
                algo, loss, grads, batch
            )  # [distributed] global meta-gradient
            finite = bool(torch.isfinite(loss)) and all(
                bool(torch.isfinite(g).all()) for g in grads.values()
            )
            step += 1
            row: dict[str, Any] = {"step": step, "loss": float(loss)}
            if finite:
                for k, p in {**params, **state}.items():
                    p.grad = grads[k].to(p.dtype)
                if tr.grad_clip:
                    torch.nn.utils.clip_grad_norm_(
                        list(params.values()) + list(state.values()), tr.grad_clip
                    )
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                skipped += 1
                row["skipped"] = True
            tasks_done += batch.n_tasks
            tps = tasks_done / max(time.perf_counter() - t_loop, 1e-9)
            row["tasks_per_s"] = round(tps, 1)
            if step % tr.val_every == 0 or step == tr.steps:
                val = _validate(model, params, state, algo, table, splits, scfg, scenario, device)
                row["val"] = {k: v for k, v in val.items() if k != "flags"}
                score = sign * float(val[metric])
                if score > best_score:
                    best_score, best_step, best_val, evals_without_gain = score, step, row["val"], 0
                    _save_weights(out / "checkpoints" / "best.pt", model, params, state, step)
                else:
                    evals_without_gain += 1
                if tr.patience is not None and evals_without_gain >= tr.patience:
                    stopped_early = True
            log.write(json.dumps(row) + "\n")
            for sink in sinks:
                sink.log(row)
            log.flush()
            # postfix first without a redraw: update() then redraws at most every mininterval
            bar.set_postfix(
                loss=f"{float(loss):.4f}",
                tasks_s=f"{tps:.0f}",
                refresh=False,
                **({metric: f"{best_val.get(metric, float('nan')):.4f}"} if best_val else {}),
            )
            bar.update(1)
            if step % tr.checkpoint_every == 0 or step == tr.steps or stopped_early:
                _save_checkpoint(
                    last,
                    model,
                    params,
                    state,
                    opt,
                    sampler,
                    step,
                    skipped,
                    best_score,
                    best_step,
                    evals_without_gain,
                    best_val,
                    scenario,
                )
            if stopped_early or (stop_after is not None and step >= stop_after):
                break
    finally:
        bar.close()
        log.close()
        for sink in sinks:
            sink.close()
    if skipped:
        print(f"metarec: {skipped} step(s) skipped because the meta-gradient was not finite")
    result = TrainResult(
        out,
        step,
        best_step,
        best_val,
        skipped,
        time.perf_counter() - t_start,
        tasks_done / max(time.perf_counter() - t_loop, 1e-9),
        stopped_early,
    )
    if evaluate_test and (step >= tr.steps or stopped_early):
        test = evaluate_run_states(out, model, params, state, algo, table, splits, scenario, device)
        atomic_write_json(out / "test_metrics.json", test)
    atomic_write_json(
        out / "summary.json",
        {
            "steps": step,
            "best_step": best_step,
            "best_val": best_val,
            "skipped_steps": skipped,
            "seconds": round(result.seconds, 2),
            "tasks_per_s": round(result.tasks_per_s, 1),
            "stopped_early": stopped_early,
        },
    )
    dist_ctx.close()  # [distributed]
    return result


def evaluate_run_states(
    out, model, params, state, algo, table, splits, scenario, device
) -> dict[str, Any]:
    """Load the best parameters and score every test state once."""
    best = load_best(out, map_location=device)
    with torch.no_grad():
        for k, v in best["params"].items():
            params[k].copy_(v)
        for k, v in best["state"].items():
            state[k].copy_(v)
    scfg = sampler_config(scenario.protocol)
    res = {}
    for name in splits.states:
        pool = splits.pools[name]
        if len(pool) == 0:
            continue
        ev = evaluate_pool(
            model,
            params,
            algo,
            table,
            pool,
            scfg,
            state=state,
            k=scenario.metrics.k,
            names=scenario.metrics.names,
            steps=scenario.algorithm.eval_steps,
            lr=_eval_lr(scenario, algo),
            device=device,
        )
        res[name] = ev
    return {"best_step": int(best["step"]), "states": res}


def _validate(model, params, state, algo, table, splits, scfg, scenario, device) -> dict[str, Any]:
    a = scenario.algorithm
    return evaluate_pool(
        model,
        params,
        algo,
        table,
        splits.pools[splits.val],
        scfg,
        state=state,
        max_tasks=scenario.train.val_tasks,
        k=scenario.metrics.k,
        names=scenario.metrics.names,
        steps=a.eval_steps,
        lr=_eval_lr(scenario, algo),
        device=device,
    )


def _eval_lr(sc: Scenario, algo: AlgorithmConfig) -> float | None:
    """Evaluation inner rate: ``algorithm.eval_lr`` unless the algorithm learned its rates."""
    return None if algo.meta_learned_lrs else sc.algorithm.eval_lr
