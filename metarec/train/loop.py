"""Meta-training of the MAML family: :func:`prepare` builds a run once, :func:`train` runs the
one outer loop (:func:`metarec.train.outer.outer_loop`) over it.

``train(scenario, out)`` is what ``metarec train SCENARIO --out RUN_DIR`` calls for the MAML
family. Each step:

1. sample a meta-batch of ``algorithm.meta_batch`` meta-train tasks;
2. ``meta_loss_and_grads`` (vmapped over tasks, chunked if asked); a non-finite meta-gradient
   skips the step (counted, reported) and training goes on;
3. clip, Adam step.

The loop validates on meta-val tasks every ``train.val_every`` steps and keeps the best
parameters (model selection on validation only; ``checkpoints/best.pt``), stops early after
``train.patience`` validations without improvement, and every ``train.checkpoint_every`` steps
writes ``checkpoints/last.pt`` atomically (weights, optimiser, sampler and torch RNG states), so
``resume=True`` after a kill ends with exactly the weights of an uninterrupted run.

Randomness: the task sampler has its own generator (``train.seed``); dropout and vmapped
randomness draw from torch's generator, which a module cannot be handed, so the loop runs in a
fork of torch's RNG seeded with ``train.seed`` (restored from the checkpoint on resume) and the
caller's RNG state is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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
from metarec.episodes.relevance import NegativeCatalogue, training_sampler
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import MetaSplits
from metarec.metrics.evaluate import evaluate_pool, metric_selection
from metarec.metrics.select import SELECT_METRIC
from metarec.models.base import split_params
from metarec.runs.checkpoint import atomic_write_json, load_best
from metarec.runs.fingerprint import check_same_data, write_fingerprint
from metarec.train import distributed  # [distributed]
from metarec.train.files import (
    _check_same_config,
    _save_checkpoint,
    _save_weights,
    _truncate_log,
    _write_run_files,
)
from metarec.train.log import TrainingLog
from metarec.train.loggers import JsonlLogger, Logger, make_loggers
from metarec.train.outer import LoopState, Step, Validation, outer_loop
from metarec.train.ranking import RANK_METRIC, evaluate_engine_ranking
from metarec.train.session import training_session
from metarec.train.setup import (
    algorithm_config,
    build_training_model,
    model_kwargs,
    resolve_device,
)

__all__ = [
    "TrainResult",
    "Prepared",
    "prepare",
    "train",
    "algorithm_config",
    "model_kwargs",
    "resolve_device",
    "build_training_model",
    "SELECT_METRIC",
]

_log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        run_dir: the run directory (``checkpoints/best.pt``, ``metrics.jsonl``,
            ``summary.json``, ...).
        steps: outer steps done; best_step: the step whose weights are ``checkpoints/best.pt``.
        best_val: the validation metrics at ``best_step`` (``{metric: value, "n_tasks", ...}``).
        skipped_steps: steps skipped because their meta-gradient was not finite.
        seconds: wall time of the call; tasks_per_s: tasks per second of the outer loop.
        stopped_early: ``train.patience`` validations passed without improvement.
        history: not filled by :func:`train` (empty); the per-step rows are in ``training_log``.
        training_log: the run's :class:`~metarec.train.log.TrainingLog` (loss and validation
            curves), ``None`` on the non-main ranks of a distributed run.

    Example:
        >>> import tempfile, metarec as mr
        >>> sc = mr.load_scenario("tasks/synthetic-cold-start.toml", [  # a tiny MAML run
        ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80",
        ...     "model.embedding_dim=4", "model.hidden=[8]", "algorithm.inner_steps=1", "algorithm.meta_batch=4",
        ...     "train.steps=2", "train.val_every=2", "train.val_tasks=8", "train.progress=false"])
        >>> res = train(sc, tempfile.mkdtemp() + "/run", evaluate_test=False)
        >>> res.steps, res.best_step, res.skipped_steps, res.stopped_early
        (2, 2, 0, False)
        >>> sorted(k for k in res.best_val if k != "adapt_ms_per_task"), res.training_log.curve[-1][0]
        (['mae', 'n_tasks', 'ndcg@10', 'rmse'], 2)
        >>> (res.run_dir / "checkpoints" / "best.pt").is_file()
        True
    """

    run_dir: Path
    steps: int
    best_step: int
    best_val: dict[str, Any]
    skipped_steps: int
    seconds: float
    tasks_per_s: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    training_log: TrainingLog | None = None


@dataclass
class Prepared:
    """Everything the loop of one run needs, built once by :func:`prepare`."""

    scenario: Scenario
    out: Path
    device: torch.device
    dist: Any  # [distributed] the process group context
    table: InteractionTable
    splits: MetaSplits
    algo: AlgorithmConfig
    scfg: SamplerConfig
    model: torch.nn.Module
    params: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    opt: torch.optim.Optimizer
    sampler: TaskSampler
    loop: LoopState
    torch_rng: torch.Tensor | None  # the RNG state to resume from (None: seed train.seed)
    catalogue: NegativeCatalogue | None = None  # a run trained to rank: adaptation's negatives


def prepare(
    scenario: Scenario,
    out: str | Path,
    *,
    resume: bool = False,
    table: InteractionTable | None = None,
    splits: MetaSplits | None = None,
    method: str | None = None,
) -> Prepared:
    """Build a run once: device, data, model, optimiser, sampler; on ``resume`` restore them
    (and the loop's state) from ``out/checkpoints/last.pt``, else write the run's files."""
    out = Path(out)
    tr = scenario.train
    device = resolve_device(tr.device)
    dist_ctx = distributed.init(device)  # [distributed] joins torchrun's group (WORLD_SIZE > 1)
    device, out = dist_ctx.device, dist_ctx.run_dir(out, resume)  # [distributed] rank 0 writes
    table = load_table(scenario.data) if table is None else table
    splits = build_splits(table, scenario.protocol) if splits is None else splits
    if resume:
        check_same_data(out, table)  # hook (metarec.runs.fingerprint): refuse changed data
    algo = algorithm_config(scenario, table.feedback, table)
    metric_selection(scenario.metrics.names, table.feedback, scenario.metrics.k)  # checked up front
    if not resume and (out / "manifest.json").exists():
        raise ConfigError(
            f"out={str(out)!r}: already holds a run; pass --resume to continue it, "
            "--overwrite to replace it, or choose an empty folder"
        )
    model = build_training_model(scenario, table, splits).to(device)  # seeded by train.seed
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    fast, _ = split_params(model, adapt_patterns(algo, model), params)
    state = init_algorithm_state(algo, fast)  # on the parameters' device, leaves
    opt = torch.optim.Adam(list(params.values()) + list(state.values()), lr=tr.outer_lr)
    scfg = sampler_config(scenario.protocol)
    # implicit feedback: meta-training negatives come from the meta-train items only, so no
    # held-out-only item is ever a training example (see SamplerConfig.negatives_from); a run
    # trained to rank on ratings: relevance labels and its negatives (metarec.episodes.relevance)
    sampler = TaskSampler(
        table,
        splits.pools[splits.train],
        training_sampler(scfg, algo.ranking),
        seed=tr.seed,
        device=device,
        dtype=torch.float32,
    )
    loop, rng = LoopState(), None
    if resume:
        # hook (metarec.runs.identity): this run's own last.pt, never another run's
        ck = load_best(out, which="last", map_location=device)
        _check_same_config(ck, scenario)
        with torch.no_grad():
            for k, v in ck["params"].items():
                params[k].copy_(v)
            for k, v in ck["state"].items():
                state[k].copy_(v)
        opt.load_state_dict(ck["optimizer"])
        sampler.rng.bit_generator.state = json.loads(ck["sampler_rng"])
        rng = ck["torch_rng"]
        loop = LoopState(
            step=int(ck["step"]),
            best_score=float(ck["best_score"]),
            best_step=int(ck["best_step"]),
            since=int(ck["evals_without_gain"]),
            best_val=json.loads(ck["best_val"]),
            skipped=int(ck["skipped"]),
        )
        _truncate_log(out / "metrics.jsonl", loop.step)  # steps after the checkpoint are re-run
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_run_files(out, scenario, table, model, algo, method)
        write_fingerprint(out, table)  # hook (metarec.runs.fingerprint)
    return Prepared(
        scenario,
        out,
        device,
        dist_ctx,
        table,
        splits,
        algo,
        scfg,
        model,
        params,
        state,
        opt,
        sampler,
        loop,
        rng,
        NegativeCatalogue.of(table) if algo.ranking is not None else None,
    )


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

    Example:
        >>> import tempfile
        >>> from metarec.config import load_scenario
        >>> sc = load_scenario("tasks/synthetic-cold-start.toml", ["train.steps=2",
        ...     "train.val_every=2", "train.val_tasks=8", "train.progress=false",
        ...     "algorithm.meta_batch=4", "data.synthetic.n_domains=3", "data.synthetic.n_users=60",
        ...     "data.synthetic.n_items=80"])
        >>> res = train(sc, tempfile.mkdtemp() + "/run", evaluate_test=False)
        >>> res.steps, res.training_log.steps
        (2, 2)
    """
    t_start = time.perf_counter()
    run = prepare(scenario, out, resume=resume, table=table, splits=splits, method=method)
    tr, out, algo = scenario.train, run.out, run.algo
    evaluate_test = evaluate_test and run.dist.is_main  # [distributed]
    metric, sign = SELECT_METRIC[run.table.feedback]
    if algo.ranking is not None:  # scores that rank, not ratings: the ranking protocol's criterion
        metric, sign = RANK_METRIC, 1.0
    everything = [*run.params.values(), *run.state.values()]
    autocast = (
        torch.autocast(run.device.type, dtype=torch.bfloat16)
        if tr.bf16
        else contextlib.nullcontext()
    )

    def step(i: int) -> Step:
        batch = run.dist.shard(
            run.sampler.sample(algo.meta_batch)
        )  # [distributed] this rank's slice
        sw = msl_weights(algo.inner_steps, i / max(tr.steps, 1)) if algo.multi_step_loss else None
        with autocast:
            loss, grads = meta_loss_and_grads(
                algo, run.model, run.params, batch, state=run.state, step_weights=sw
            )
        loss, grads = run.dist.all_reduce(algo, loss, grads, batch)  # [distributed] global grads
        finite = bool(torch.isfinite(loss)) and all(
            bool(torch.isfinite(g).all()) for g in grads.values()
        )
        if finite:
            for k, p in {**run.params, **run.state}.items():
                p.grad = grads[k].to(p.dtype)
            if tr.grad_clip:
                torch.nn.utils.clip_grad_norm_(everything, tr.grad_clip)
            run.opt.step()
            run.opt.zero_grad(set_to_none=True)
        return Step(float(loss), batch.n_tasks, skipped=not finite)

    def validate() -> Validation:
        val = _evaluate(run, run.splits.pools[run.splits.val], max_tasks=tr.val_tasks)
        shown = {k: v for k, v in val.items() if k != "flags"}
        return Validation(sign * float(val[metric]), shown)

    def keep_best(at: int) -> None:
        _save_weights(out / "checkpoints" / "best.pt", run.model, run.params, run.state, at)

    def checkpoint(st: LoopState) -> None:
        _save_checkpoint(
            out / "checkpoints" / "last.pt",
            run.model,
            run.params,
            run.state,
            run.opt,
            run.sampler,
            st.step,
            st.skipped,
            st.best_score,
            st.best_step,
            st.since,
            st.best_val,
            scenario,
        )

    named = make_loggers(tr.loggers, out)  # first: a missing extra is refused before any write
    sinks = [JsonlLogger(out / "metrics.jsonl"), *named, *loggers]
    t_loop = time.perf_counter()
    try:
        with _torch_rng(run.device, tr.seed, run.torch_rng):
            st = outer_loop(
                step,
                steps=tr.steps,
                val_every=tr.val_every,
                validate=validate,
                keep_best=keep_best,
                patience=tr.patience,
                state=run.loop,
                checkpoint=checkpoint,
                checkpoint_every=tr.checkpoint_every,
                sinks=sinks,
                progress=tr.progress,
                desc=algo.name,
                stop_after=stop_after,
                keep_rows=False,
            )
    finally:
        for sink in sinks:
            sink.close()
    if st.skipped:
        _log.warning("%d step(s) skipped because the meta-gradient was not finite", st.skipped)
    seconds, loop_s = time.perf_counter() - t_start, time.perf_counter() - t_loop
    tps = st.tasks / max(loop_s, 1e-9)
    if evaluate_test and (st.step >= tr.steps or st.stopped_early):
        atomic_write_json(out / "test_metrics.json", evaluate_run_states(run))
    atomic_write_json(
        out / "summary.json",
        {
            "steps": st.step,
            "best_step": st.best_step,
            "best_val": st.best_val,
            "skipped_steps": st.skipped,
            "seconds": round(seconds, 2),
            "tasks_per_s": round(tps, 1),
            "stopped_early": st.stopped_early,
            "budget": tr.steps,
            "unit": "step",
            "primary_metric": metric,
        },
    )
    run.dist.close()  # [distributed]
    log = TrainingLog.read(out) if run.dist.is_main else None
    return TrainResult(
        out,
        st.step,
        st.best_step,
        st.best_val,
        st.skipped,
        seconds,
        tps,
        st.stopped_early,
        training_log=log,
    )


@contextlib.contextmanager
def _torch_rng(device: torch.device, seed: int, resume: torch.Tensor | None) -> Iterator[None]:
    """Torch's RNG for the loop: forked (the caller's state is kept), seeded with ``seed`` or
    set to a checkpoint's state."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        if resume is not None:
            torch.set_rng_state(resume)
        yield


def _evaluate(run: Prepared, pool: Any, *, max_tasks: int | None = None) -> dict[str, Any]:
    sc = run.scenario
    if run.algo.ranking is not None:
        return evaluate_engine_ranking(
            run.model,
            run.params,
            run.algo,
            run.table,
            run.splits,
            pool.name,
            run.scfg,
            state=run.state,
            relevance=sc.protocol.relevance,
            max_tasks=max_tasks,
            steps=sc.algorithm.eval_steps,
            lr=None if run.algo.meta_learned_lrs else sc.algorithm.eval_lr,
            catalogue=run.catalogue,
            device=run.device,
        )
    return evaluate_pool(
        run.model,
        run.params,
        run.algo,
        run.table,
        pool,
        run.scfg,
        state=run.state,
        max_tasks=max_tasks,
        k=sc.metrics.k,
        names=sc.metrics.names,
        steps=sc.algorithm.eval_steps,
        lr=None if run.algo.meta_learned_lrs else sc.algorithm.eval_lr,
        device=run.device,
    )


def evaluate_run_states(run: Prepared) -> dict[str, Any]:
    """Load the best parameters and score every test state once."""
    best = load_best(run.out, map_location=run.device)
    with torch.no_grad():
        for k, v in best["params"].items():
            run.params[k].copy_(v)
        for k, v in best["state"].items():
            run.state[k].copy_(v)
    states = {
        name: _evaluate(run, run.splits.pools[name])
        for name in run.splits.states
        if len(run.splits.pools[name])
    }
    return {"best_step": int(best["step"]), "states": states}
