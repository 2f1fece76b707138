"""Meta-training throughput and peak memory of second-order MAML on the MeLU-size model.

Implementations of the same meta-gradient, measured side by side in one run:

* ``metarec-analytic`` -- :func:`metarec.algorithms.meta_loss_and_grads` with
  ``engine="analytic"`` (batched analytic inner loop, :mod:`metarec.algorithms.mlp`), tasks
  grouped by support size into ``buckets`` in {1, 2, 4} (``--buckets``);
* ``metarec-analytic-autograd`` -- the analytic path as it was before its reverse pass was
  written out (:mod:`metarec.algorithms.mlp_fused`) and MeLU's distinct rows encoded once:
  autograd through the closed-form inner loop on every padded entry's encoding
  (``metarec.algorithms.meta_grads._FAST = False`` during the call), at the largest
  ``--buckets`` value: the engine's own previous path, side by side;
* ``metarec-vmap`` -- the same function with ``engine="vmap"`` (the general ``torch.func`` path,
  one ``vmap`` per group): ``buckets=1`` is the engine as it was before grouping and the
  analytic path (every task padded to the longest), and the largest ``--buckets`` value;
* ``loop``      -- a plain per-task Python loop with ``torch.autograd.grad(create_graph=True)``
  over ``functional_call`` of the full model (written here, the naive reference);
* ``learn2learn`` -- ``l2l.algorithms.MAML(decision_layers, lr, first_order=False)`` with
  ``clone()`` / ``adapt()`` per task, as a learn2learn user would write it.

The workload: MeLU (embedding 32, decision layers 64, 64), MovieLens-1M with MeLU's features
and MeLU's meta-train users when ``$METAREC_DATA`` is set (else a synthetic table with the same
input width), 32 tasks per meta-batch (support = all but 10 random interactions, query = 10),
5 inner steps, second order. The fast weights are MeLU's decision layers and head (the paper's
"local update" parameters); the feature embeddings are meta-learned only, in all three.

Before timing, the meta-gradients of the three are compared in float64 on a small batch.
Timings: ``--warmup`` untimed calls, then ``--repeat`` rounds; each round times every method
once (interleaved, in a rotating order), and the median is reported. Peak memory: each
configuration runs once in a fresh subprocess; the RSS is sampled every ~1 ms during the
meta-batch and the peak over the RSS right before it is reported (see :func:`_child`).

metarec computes each task's MeLU feature encoding once, outside the inner loop (the embeddings
do not adapt).

FLOP accounting (``torch.utils.flop_counter.FlopCounterMode``, matrix products: mm, bmm, addmm,
baddbmm, ...): every engine's own FLOPs per meta-batch are counted on the timed batches; the
**useful** FLOPs of a meta-batch are the per-task loop's (unpadded tasks, the plain algorithm).
The **limit** is the useful FLOPs at the peak of this machine: a 1024 x 1024 (CUDA: 8192 x 8192)
matmul in ``--dtype`` (float32, or bfloat16 with every engine under autocast) on
``--threads`` threads, timed in every round of the same run (so contention from other processes
lowers the peak and the engines alike); an engine's **fraction of the limit** is
``useful FLOPs / its time / peak``. An engine that does less arithmetic than the loop (the
analytic path's kernelised first layer) can exceed 100%. CPU time (``time.process_time``) is
reported beside wall time: on a shared machine it is less sensitive to other processes.

Run ``python benchmarks/engine_throughput.py --help``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from metarec.algorithms import AlgorithmConfig, meta_grads, meta_loss_and_grads  # noqa: E402
from metarec.episodes.batch import EpisodeBatch  # noqa: E402
from metarec.episodes.sampler import SamplerConfig, TaskSampler  # noqa: E402
from metarec.models import build_model, split_params  # noqa: E402

Task = tuple[
    torch.Tensor, ...
]  # (support users, items, targets, query users, items, targets), unpadded
Grads = dict[str, torch.Tensor]


# ---------------------------------------------------------------------- learn2learn import
def import_l2l_maml() -> type | None:
    """``learn2learn.algorithms.MAML`` (:func:`metarec.interop.learn2learn.import_l2l_maml`: without
    running ``learn2learn/__init__.py``, whose vision, gym and compiled data parts are neither
    needed here nor installable on this stack), or ``None`` when learn2learn is not installed
    (``benchmarks/install_learn2learn.sh`` installs it).
    """
    from metarec.interop.learn2learn import import_l2l_maml as _import

    try:
        return _import()
    except ImportError:
        return None


# ---------------------------------------------------------------------- the workload
def melu_features(model: nn.Module, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """MeLU's input vector (the slow, embedding part of ``MeLU.forward``): ``(N,) -> (N, F)``."""
    return torch.cat([model.user_features(users), model.item_features(items)], dim=-1)


class DecisionLayers(nn.Module):
    """MeLU's fast part (decision layers + head) as its own module, for learn2learn's MAML.

    It holds MeLU's own ``decision`` and ``head`` submodules (the same Parameter objects), so
    learn2learn adapts exactly metarec's fast weights and meta-gradients land on the model.
    """

    def __init__(self, melu: nn.Module) -> None:
        super().__init__()
        self.decision = melu.decision
        self.head = melu.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.decision:
            x = F.relu(layer(x))
        return self.head(x).squeeze(-1)


def unpad(batch: EpisodeBatch) -> list[Task]:
    """Per-task tensors without padding, as a per-task loop would receive them."""
    s, q = batch.support, batch.query
    out = []
    for t in range(batch.n_tasks):
        ms, mq = s.mask[t], q.mask[t]
        out.append(
            (
                s.users[t][ms],
                s.items[t][ms],
                s.targets[t][ms],
                q.users[t][mq],
                q.items[t][mq],
                q.targets[t][mq],
            )
        )
    return out


def load_workload(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """``(table, pool, description)``: MeLU's MovieLens-1M meta-train users, or synthetic."""
    root = C.data_root()
    if args.data != "synthetic" and root is not None and (root / "movielens-1m").is_dir():
        table, splits = C.load_melu_movielens(root)
        pool = splits.pools[splits.train]
        desc = {
            "data": "movielens-1m (MeLU features, melu_split meta-train pool)",
            "data_root": str(root),
        }
    else:
        n_users, n_items = (60, 150) if args.quick else (300, 500)
        table, pool = C.load_synthetic_melu_like(args.seed, n_users, n_items)
        why = "--data synthetic" if args.data == "synthetic" else "METAREC_DATA not set"
        desc = {
            "data": f"synthetic (make_synthetic, 8 domains x {n_users} users x {n_items} items, "
            f"4 user + 4 item features + tags; {why})"
        }
    desc["pool_units"] = len(pool)
    return table, pool, desc


# ---------------------------------------------------------------------- the three engines
def metarec_grads(
    cfg: AlgorithmConfig,
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batch: EpisodeBatch,
    fused: bool = True,
) -> Grads:
    """metarec's meta-gradients; ``fused=False``: the analytic path as it was before the
    written-out reverse pass and the distinct-row encoding (``meta_grads._FAST``)."""
    saved, meta_grads._FAST = meta_grads._FAST, fused
    try:
        return meta_loss_and_grads(cfg, model, params, batch)[1]
    finally:
        meta_grads._FAST = saved


def loop_grads(
    model: nn.Module, params: dict[str, torch.Tensor], tasks: list[Task], steps: int, lr: float
) -> Grads:
    """Reference: second-order MAML one task at a time with ``autograd.grad(create_graph=True)``.

    Each inner step runs the full model (``functional_call``) on the support set, as metarec's
    inner loop does; each task's query loss / T is differentiated on its own and accumulated.
    """
    fast0, slow0 = split_params(model, None, params)
    names = list(params)
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    slow = {k: leaves[k] for k in slow0}
    acc: Grads = {k: torch.zeros_like(v) for k, v in leaves.items()}
    T = len(tasks)
    for su, si, sy, qu, qi, qy in tasks:
        fast = {k: leaves[k] for k in fast0}
        for _ in range(steps):
            pred = functional_call(model, {**fast, **slow}, (su, si))  # (Ns,)
            loss = F.mse_loss(pred, sy)
            g = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {k: w - lr * gk for (k, w), gk in zip(fast.items(), g, strict=True)}
        qloss = F.mse_loss(functional_call(model, {**fast, **slow}, (qu, qi)), qy) / T
        for k, g in zip(names, torch.autograd.grad(qloss, [leaves[k] for k in names]), strict=True):
            acc[k] += g
    return acc


def l2l_grads(maml: nn.Module, model: nn.Module, tasks: list[Task], steps: int) -> Grads:
    """learn2learn's idiom: ``clone()``, ``adapt()`` per inner step, ``backward()`` per task.

    The features (slow embedding part) are computed once per task outside the MAML wrapper,
    as in learn2learn's ANIL examples; the query loss / T is back-propagated task by task.
    """
    model.zero_grad(set_to_none=True)
    T = len(tasks)
    for su, si, sy, qu, qi, qy in tasks:
        learner = maml.clone()
        xs = melu_features(model, su, si)  # (Ns, F)
        for _ in range(steps):
            learner.adapt(F.mse_loss(learner(xs), sy))
        (F.mse_loss(learner(melu_features(model, qu, qi)), qy) / T).backward()
    return {
        k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
        for k, p in model.named_parameters()
    }


def engines(
    args: argparse.Namespace, model: nn.Module, maml_cls: type | None
) -> dict[str, Callable[[EpisodeBatch, list[Task]], Grads]]:
    """``{config name: fn(batch, tasks) -> grads}`` for every configuration of this run."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    out: dict[str, Callable[[EpisodeBatch, list[Task]], Grads]] = {}
    variants = (
        [("analytic", b) for b in args.buckets]
        + [("analytic-autograd", max(args.buckets))]
        + ([("analytic-compiled", max(args.buckets))] if getattr(args, "compile", False) else [])
        + [("vmap", b) for b in sorted({1, max(args.buckets)})]
    )
    for engine, b in variants:
        cfg = AlgorithmConfig(
            "maml",
            inner_steps=args.inner_steps,
            inner_lr=args.inner_lr,
            meta_batch=args.tasks,
            buckets=b,
            engine=engine.partition("-")[0],
        )
        fused = engine != "analytic-autograd"
        run = lambda bt, t, cfg=cfg, fused=fused: metarec_grads(cfg, model, params, bt, fused)  # noqa: E731
        out[f"metarec-{engine}/buckets={b}"] = (
            _compiled(run) if engine.endswith("compiled") else run
        )
    out["loop"] = lambda b, t: loop_grads(model, params, t, args.inner_steps, args.inner_lr)
    if maml_cls is not None:
        maml = maml_cls(DecisionLayers(model), lr=args.inner_lr, first_order=False)
        out["learn2learn"] = lambda b, t: l2l_grads(maml, model, t, args.inner_steps)
    return out


_COMPILED: dict[str, Callable] = {}
FIRST_COMPILED_CALL: list[float] = []  # seconds of the compiled variant's first call (it compiles)


def _compiled(
    fn: Callable[[EpisodeBatch, list[Task]], Grads],
) -> Callable[[EpisodeBatch, list[Task]], Grads]:
    """``fn`` with the written-out inner loop's forward and reverse passes
    (``mlp_fused._forward``, ``mlp_fused._reverse``: tensor code without autograd, so
    ``torch.compile`` applies) compiled by ``torch.compile(dynamic=True)`` (inductor, C++ on CPU)
    for the duration of each call; the first call compiles (its seconds are recorded in
    :data:`FIRST_COMPILED_CALL`, the float64 gradient check's call: a second compile follows for
    float32, in the FLOP count or the warm-up)."""
    from metarec.algorithms import mlp_fused

    def run(b: EpisodeBatch, t: list[Task]) -> Grads:
        if not _COMPILED:
            _COMPILED["_forward"] = torch.compile(mlp_fused._forward, dynamic=True)
            _COMPILED["_reverse"] = torch.compile(mlp_fused._reverse, dynamic=True)
        saved = mlp_fused._forward, mlp_fused._reverse
        mlp_fused._forward, mlp_fused._reverse = _COMPILED["_forward"], _COMPILED["_reverse"]
        t0 = time.perf_counter()
        try:
            return fn(b, t)
        finally:
            mlp_fused._forward, mlp_fused._reverse = saved
            if not FIRST_COMPILED_CALL:
                FIRST_COMPILED_CALL.append(time.perf_counter() - t0)

    return run


def count_flops(
    fns: dict[str, Callable], batches: list[EpisodeBatch], tasks: list[list[Task]]
) -> dict[str, float]:
    """Mean FLOPs per meta-batch of every engine over ``batches`` (``FlopCounterMode``)."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for name, fn in fns.items():
        total = 0
        for b, t in zip(batches, tasks, strict=True):
            counter = FlopCounterMode(display=False)
            with counter:
                fn(b, t)
            total += counter.get_total_flops()
        out[name] = total / len(batches)
    return out


def matmul_peak(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None, reps: int = 3
) -> tuple[float, float]:
    """``(wall, CPU-time)`` FLOP/s of an ``n x n`` matmul in ``dtype`` (best of ``reps``) on the
    current threads; ``n`` defaults to 1024 on CPU and 8192 on CUDA (large enough to reach a
    GPU's peak)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best, best_cpu = float("inf"), float("inf")
    for _ in range(reps):
        sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        a @ b
        sync(device)
        best, best_cpu = (
            min(best, time.perf_counter() - t0),
            min(best_cpu, time.process_time() - c0),
        )
    return 2 * n**3 / best, 2 * n**3 / max(best_cpu, 1e-9)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _autocast(
    fns: dict[str, Callable[[EpisodeBatch, list[Task]], Grads]], device: torch.device, dtype: str
) -> dict[str, Callable[[EpisodeBatch, list[Task]], Grads]]:
    """Every engine under ``torch.autocast(device, bfloat16)`` for ``dtype="bfloat16"`` (the
    mixed precision a user would run); unchanged for float32."""
    if dtype == "float32":
        return fns

    def wrap(fn: Callable[[EpisodeBatch, list[Task]], Grads]) -> Callable:
        def run(b: EpisodeBatch, t: list[Task]) -> Grads:
            with torch.autocast(device.type, dtype=DTYPES[dtype]):
                return fn(b, t)

        return run

    return {name: wrap(fn) for name, fn in fns.items()}


# ---------------------------------------------------------------------- gradient check
def gradient_check(
    args: argparse.Namespace, model: nn.Module, batch: EpisodeBatch, maml_cls: type | None
) -> dict[str, dict[str, Any]]:
    """Meta-gradients of every engine vs the loop, in float64 on ``--check-tasks`` tasks."""
    m64 = copy.deepcopy(model).to(torch.float64)
    small = batch.select(slice(0, args.check_tasks)).to(batch.support.users.device, torch.float64)
    fns = engines(args, m64, maml_cls)
    tasks = unpad(small)
    ref = fns["loop"](small, tasks)
    scale = max(float(g.abs().max()) for g in ref.values())
    out = {}
    for name, fn in fns.items():
        g = fn(small, tasks)
        diff = max(float((g[k] - ref[k]).abs().max()) for k in ref)
        ok = all(torch.allclose(g[k], ref[k], rtol=1e-9, atol=1e-12) for k in ref)
        out[name] = {
            "max_abs_diff_vs_loop": diff,
            "max_abs_grad": scale,
            "allclose": ok,
            "dtype": "float64",
            "tasks": args.check_tasks,
        }
    return out


# ---------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_all(
    args: argparse.Namespace,
    fns: dict[str, Callable],
    batches: list[EpisodeBatch],
    tasks: list[list[Task]],
    device: torch.device,
) -> tuple[
    dict[str, list[float]], dict[str, list[float]], list[tuple[float, float]], dict[str, float]
]:
    """``(wall seconds, CPU seconds, matmul peaks, CUDA peak MiB)``: per engine one call per
    round, and the matmul peak (wall and CPU-time FLOP/s, in ``--dtype``) once per round, all
    interleaved in a rotating order. On CUDA, each engine's first timed call also records
    ``torch.cuda.max_memory_allocated`` minus the memory allocated right before it."""
    names = list(fns)
    cuda_peak: dict[str, float] = {}
    for name in names:  # warm-up (allocator, kernels, vmap/functorch caches)
        for r in range(args.warmup):
            fns[name](batches[r % len(batches)], tasks[r % len(tasks)])
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    peaks: list[tuple[float, float]] = []
    for r in range(args.repeat):
        order = (
            names[r % len(names) :] + names[: r % len(names)]
        )  # rotate, so no engine is always first
        k = r % len(batches)
        peaks.append(matmul_peak(device, DTYPES[args.dtype]))
        for name in order:
            sync(device)
            if device.type == "cuda" and r == 0:
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name](batches[k], tasks[k])
            sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            if device.type == "cuda" and r == 0:
                cuda_peak[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return times, cpu, peaks, cuda_peak


# ---------------------------------------------------------------------- memory (subprocess)
def _rss_bytes() -> int:
    """Current resident set size of this process (``/proc/self/statm``, field 2, in pages)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _RssSampler:
    """Samples the current RSS every ``interval`` seconds from a background thread; ``peak``
    is the largest sample (the call's own samples, plus one taken at start and at stop)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak, self.samples = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, _rss_bytes())
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> _RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _child(path: str, name: str, device: str, threads: int) -> None:
    """Peak memory of one configuration, in a fresh process: load the saved model and batch,
    warm up on ONE task (library initialisation, small), then run the full meta-batch once.
    CPU: the current RSS (``/proc/self/statm``) is read right before the call (baseline) and
    sampled every ~1 ms by a background thread during it; the result is peak sample minus
    baseline. The parent starts the child with ``MALLOC_MMAP_THRESHOLD_=65536`` so that large
    freed blocks go back to the OS and the RSS follows the live memory (``ru_maxrss``, a
    process-lifetime high-water mark, hides the step behind the loading peak). CUDA:
    ``torch.cuda.max_memory_allocated`` minus the allocated baseline (tensor memory only).
    Prints one JSON line."""
    torch.set_num_threads(threads)
    saved = torch.load(path, weights_only=False)
    args, dev = saved["args"], torch.device(device)
    model = saved["model"].to(dev)
    batch = saved["batch"].to(dev)
    maml_cls = import_l2l_maml() if name == "learn2learn" else None
    fn = _autocast(engines(args, model, maml_cls), dev, getattr(args, "dtype", "float32"))[name]
    one = batch.select(slice(0, 1))
    fn(one, unpad(one))
    tasks = unpad(batch)
    del saved
    gc.collect()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    base = _rss_bytes()
    with _RssSampler() as sampler:
        fn(batch, tasks)
        sync(dev)
    mib = 2**20
    out = {
        "rss_baseline_mib": base / mib,
        "rss_peak_mib": sampler.peak / mib,
        "rss_peak_delta_mib": (sampler.peak - base) / mib,
        "rss_samples": sampler.samples,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if dev.type == "cuda":
        out["cuda_peak_delta_mib"] = (torch.cuda.max_memory_allocated(dev) - base_cuda) / mib
    print(json.dumps(out))


def measure_memory(
    args: argparse.Namespace, model: nn.Module, batch: EpisodeBatch, names: list[str]
) -> dict[str, dict[str, float]]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "state.pt")
        torch.save(
            {"args": args, "model": copy.deepcopy(model).cpu(), "batch": batch.to("cpu")}, path
        )
        for name in names:
            cmd = [sys.executable, __file__, "--_child", path, name, args.device, str(args.threads)]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed blocks return to the OS
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=C.ROOT, env=env)
            if res.returncode != 0:
                print(
                    f"memory measurement of {name} failed:\n{res.stderr[-2000:]}", file=sys.stderr
                )
                continue
            out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------------- profile
def profile_metarec(
    args: argparse.Namespace,
    fns: dict[str, Callable],
    batch: EpisodeBatch,
    tasks: list[Task],
    path: Path,
) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if args.device.startswith("cuda") else []
    )
    parts = []
    for name in [
        f"metarec-analytic/buckets={max(args.buckets)}",
        f"metarec-vmap/buckets={max(args.buckets)}",
        "loop",
        "learn2learn",
    ]:
        if name not in fns:
            continue
        with profile(activities=acts) as prof:
            fns[name](batch, tasks)
        parts.append(
            f"## {name}\n\n```\n{prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=25)}\n```\n"
        )
    text = "\n".join(parts)
    path.write_text(text)
    return text


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument(
        "--data",
        choices=["auto", "synthetic", "movielens"],
        default="auto",
        help="auto: MovieLens-1M with MeLU features when $METAREC_DATA holds movielens-1m/, else synthetic",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run on a tiny workload (4 tasks, 2 inner steps, buckets 1,2, one round, no memory "
        "runs): checks the script end to end in seconds; its numbers are not measurements",
    )
    p.add_argument(
        "--tasks", type=C.positive_int, default=32, help="tasks per meta-batch (default 32)"
    )
    p.add_argument("--inner-steps", type=C.positive_int, default=5, help="inner steps (default 5)")
    p.add_argument(
        "--inner-lr", type=float, default=0.01, help="inner learning rate (default 0.01)"
    )
    p.add_argument(
        "--buckets",
        type=C.int_list,
        default=[1, 2, 4],
        help="metarec support-size groups, comma-separated (default 1,2,4)",
    )
    p.add_argument(
        "--warmup", type=int, default=2, help="untimed calls per configuration (default 2)"
    )
    p.add_argument(
        "--repeat",
        type=C.positive_int,
        default=7,
        help="interleaved timing rounds, median reported (default 7)",
    )
    p.add_argument(
        "--batches",
        type=C.positive_int,
        default=4,
        help="distinct pre-sampled meta-batches, cycled (default 4)",
    )
    p.add_argument(
        "--check-tasks",
        type=C.positive_int,
        default=4,
        help="tasks in the float64 gradient check (default 4)",
    )
    p.add_argument(
        "--threads",
        type=C.positive_int,
        default=1,
        help="torch intra-op threads (default 1: a per-core comparison, and stable on a shared machine)",
    )
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="float32",
        help="float32, or bfloat16: every engine's timed calls under torch.autocast(bfloat16), and "
        "the matmul peak in bfloat16 (the float64 gradient check is unchanged)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-l2l", action="store_true", help="skip learn2learn even when installed")
    p.add_argument(
        "--compile",
        action="store_true",
        help="add metarec-analytic-compiled: the written-out inner loop under torch.compile "
        "(needs a C++ compiler on CPU; compiling takes minutes, in the warm-up)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the subprocess peak-memory runs")
    p.add_argument(
        "--profile",
        action="store_true",
        help="torch.profiler tables -> engine_profile.md beside --out",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=C.RESULTS / "engine_throughput.jsonl",
        help="JSONL rows are appended here; the markdown report goes beside it (.md)",
    )
    args = p.parse_args(argv)
    if args.quick:  # tiny sizes; an explicit --tasks is kept (the GPU check's dry run sets two)
        args.tasks = 4 if args.tasks == p.get_default("tasks") else args.tasks
        args.inner_steps, args.buckets = 2, [1, 2]
        args.warmup, args.repeat, args.batches, args.check_tasks, args.no_memory = 0, 1, 1, 2, True
    if args.warmup < 0:
        p.error(f"--warmup {args.warmup}: must be >= 0; pass e.g. --warmup 2")
    if not (args.inner_lr > 0 and args.inner_lr < float("inf")):
        p.error(
            f"--inner-lr {args.inner_lr}: must be a finite number > 0; pass e.g. --inner-lr 0.01"
        )
    if args.check_tasks > args.tasks:
        p.error(
            f"--check-tasks {args.check_tasks}: the check uses tasks of one meta-batch, so it must "
            f"be <= --tasks {args.tasks}; pass --check-tasks {min(4, args.tasks)}"
        )
    try:
        dev = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r}: not a torch device; pass cpu, cuda or cuda:0")
    if dev.type not in ("cpu", "cuda"):
        p.error(
            f"--device {args.device!r}: only cpu and cuda are supported; pass --device cpu or "
            "--device cuda"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error(
            f"--device {args.device}: CUDA is not available (torch {torch.__version__}, no visible "
            "GPU); use --device cpu or run on a CUDA machine with a CUDA build of torch"
        )
    if args.data == "movielens" and not (
        C.data_root() and (C.data_root() / "movielens-1m").is_dir()
    ):
        p.error(
            "--data movielens: $METAREC_DATA must name a folder holding movielens-1m/; export "
            "METAREC_DATA=/path/to/datasets or pass --data synthetic"
        )
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _child(*sys.argv[2:5], int(sys.argv[5]))
        return []
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    load_before = os.getloadavg()
    maml_cls = None if args.no_l2l else import_l2l_maml()
    if args.no_l2l:
        l2l_status = "skipped (--no-l2l)"
    elif maml_cls is None:
        l2l_status = (
            "skipped: not installed; install it with "
            f"PYTHON={sys.executable} benchmarks/install_learn2learn.sh"
        )
        print(f"learn2learn {l2l_status}", file=sys.stderr)
    else:
        l2l_status = f"learn2learn {_l2l_version()} (learn2learn.algorithms.MAML)"

    table, pool, desc = load_workload(args)
    model = build_model("melu", table, embedding_dim=32, hidden=(64, 64)).to(device)
    sampler = TaskSampler(
        table, pool, SamplerConfig(n_support=None, n_query=10), seed=args.seed, device=device
    )
    batches = [sampler.sample(args.tasks) for _ in range(args.batches)]
    tasks = [unpad(b) for b in batches]
    fast, slow = split_params(model)
    desc.update(
        {
            "support_sizes_mean": float(
                sum(b.support.mask.sum() for b in batches) / (len(batches) * args.tasks)
            ),
            "support_padded_width": [int(b.support.users.shape[1]) for b in batches],
            "fast_params": sum(v.numel() for v in fast.values()),
            "slow_params": sum(v.numel() for v in slow.values()),
            "input_width": model.decision[0].in_features,
        }
    )

    with warnings.catch_warnings(record=True) as caught:  # e.g. vmap fallbacks ("performance drop")
        warnings.simplefilter("always")
        check = gradient_check(args, model, batches[0], maml_cls)
        failed = {n: c for n, c in check.items() if not c["allclose"]}
        if failed:
            raise SystemExit(
                "float64 meta-gradient check failed (rtol=1e-9, atol=1e-12 vs the per-task loop): "
                f"{failed}; the engines do not compute the same meta-gradient, so their timings "
                "are not comparable"
            )
        fns = _autocast(engines(args, model, maml_cls), device, args.dtype)
        flops = count_flops(fns, batches, tasks)
        times, cpu, peaks, cuda_peak = time_all(args, fns, batches, tasks, device)
    perf_warnings = sorted({str(w.message)[:200] for w in caught})
    memory = {} if args.no_memory else measure_memory(args, model, batches[0], list(fns))
    for name, mib in cuda_peak.items():  # in-process on CUDA; the subprocess figure wins if any
        memory.setdefault(name, {}).setdefault("cuda_peak_delta_mib", mib)
    if args.profile:
        profile_metarec(args, fns, batches[0], tasks[0], args.out.with_name("engine_profile.md"))

    base = {
        "benchmark": "engine_throughput",
        "model": "melu",
        "embedding_dim": 32,
        "hidden": [64, 64],
        "tasks": args.tasks,
        "inner_steps": args.inner_steps,
        "inner_lr": args.inner_lr,
        "second_order": True,
        "fast_weights": sorted(fast),
        "dtype": args.dtype,
        "autocast": args.dtype != "float32",
        "device_type": device.type,
        "seed": args.seed,
        "quick": args.quick,
        **{k: v for k, v in desc.items() if k != "data_root"},
    }
    env = {
        **C.git_commit(),
        **C.device_info(args.device),
        "loadavg_1_5_15_before": load_before,
        "loadavg_1_5_15_after": os.getloadavg(),
    }
    run_id = C.config_hash({"t": C.stamp(), "pid": os.getpid()})
    rate = {n: args.tasks / C.median(ts) for n, ts in times.items()}
    peak, peak_cpu = C.median([p[0] for p in peaks]), C.median([p[1] for p in peaks])
    useful = flops["loop"]
    rows = []
    for name, ts in times.items():
        engine, _, buckets = name.partition("/buckets=")
        cfg = {**base, "engine": engine, "buckets": int(buckets) if buckets else None}
        mem = memory.get(name, {})
        t = C.median(ts)
        rows.append(
            {
                "run_id": run_id,
                "time": C.stamp(),
                **env,
                "config_hash": C.config_hash(cfg),
                **cfg,
                "warmup": args.warmup,
                "repeat": args.repeat,
                "seconds_per_meta_batch": ts,
                "median_seconds": t,
                "tasks_per_s": rate[name],
                "cpu_seconds_per_meta_batch": cpu[name],
                "median_cpu_seconds": C.median(cpu[name]),
                "tasks_per_cpu_s": args.tasks / C.median(cpu[name]),
                "flops_per_meta_batch": flops[name],
                "useful_flops_per_meta_batch": useful,
                "achieved_gflops": flops[name] / t / 1e9,
                "useful_gflops": useful / t / 1e9,
                "matmul_peak_gflops": peak / 1e9,
                "matmul_peaks_gflops": [x[0] / 1e9 for x in peaks],
                "matmul_peak_cpu_gflops": peak_cpu / 1e9,
                "matmul_peaks_cpu_gflops": [x[1] / 1e9 for x in peaks],
                "limit_seconds": useful / peak,
                "limit_tasks_per_s": args.tasks * peak / useful,
                "fraction_of_limit": useful / t / peak,
                "fraction_of_limit_cpu_time": useful / C.median(cpu[name]) / peak_cpu,
                "ratio_vs_loop": rate[name] / rate["loop"],
                "ratio_vs_learn2learn": rate[name] / rate["learn2learn"]
                if "learn2learn" in rate
                else None,
                "peak_memory": mem,
                "memory_method": (
                    (
                        "fresh subprocess per configuration (MALLOC_MMAP_THRESHOLD_=65536), after "
                        "a 1-task warm-up: peak of the RSS (/proc/self/statm) sampled every ~1 ms "
                        "during the meta-batch minus the RSS right before it"
                        if not args.no_memory
                        else "no subprocess runs (--no-memory)"
                    )
                    + (
                        "; CUDA: torch.cuda.max_memory_allocated minus the allocated memory right "
                        "before the call (the subprocess's when it ran, else the first timed "
                        "round's, in process)"
                        if device.type == "cuda"
                        else ""
                    )
                ),
                "gradient_check": check.get(name),
                "first_call_seconds": FIRST_COMPILED_CALL[0]
                if name.startswith("metarec-analytic-compiled") and FIRST_COMPILED_CALL
                else None,
                "learn2learn": l2l_status,
                "perf_warnings": perf_warnings,
                "command": C.command_line(),
            }
        )
    C.write_jsonl(args.out, rows)
    report = render(rows, desc, env, perf_warnings, l2l_status)
    args.out.with_suffix(".md").write_text(report)
    print(report)
    return rows


def _l2l_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("learn2learn")
    except metadata.PackageNotFoundError:  # found on sys.path without metadata
        return "(version unknown)"


def render(
    rows: list[dict[str, Any]],
    desc: dict[str, Any],
    env: dict[str, Any],
    warns: list[str],
    l2l: str,
) -> str:
    mem_key = "cuda_peak_delta_mib" if env["device"].startswith("cuda") else "rss_peak_delta_mib"
    table = C.markdown_table(
        [
            "engine",
            "buckets",
            "tasks/s",
            "ms / meta-batch",
            "CPU ms",
            "GFLOP / meta-batch",
            "GFLOP/s",
            "useful GFLOP/s",
            "fraction of limit",
            "fraction (CPU time)",
            "x loop",
            "x learn2learn",
            "peak mem delta (MiB)",
            "grad max |diff| vs loop (f64)",
        ],
        [
            [
                r["engine"],
                r["buckets"] or "-",
                f"{r['tasks_per_s']:.1f}",
                f"{1000 * r['median_seconds']:.1f}",
                f"{1000 * r['median_cpu_seconds']:.1f}",
                f"{r['flops_per_meta_batch'] / 1e9:.3f}",
                f"{r['achieved_gflops']:.1f}",
                f"{r['useful_gflops']:.1f}",
                f"{100 * r['fraction_of_limit']:.1f}%",
                f"{100 * r['fraction_of_limit_cpu_time']:.1f}%",
                f"{r['ratio_vs_loop']:.2f}",
                "-" if r["ratio_vs_learn2learn"] is None else f"{r['ratio_vs_learn2learn']:.2f}",
                f"{r['peak_memory'][mem_key]:.1f}" if mem_key in r["peak_memory"] else "-",
                f"{r['gradient_check']['max_abs_diff_vs_loop']:.1e}"
                + ("" if r["gradient_check"]["allclose"] else " (NOT allclose)"),
            ]
            for r in rows
        ],
    )
    r0 = rows[0]
    dev = env.get(
        "gpu", f"{env['cpu']}, {env['torch_threads']} torch threads, {env['cpu_affinity']} cores"
    )
    by = {(r["engine"], r["buckets"]): r for r in rows}
    best = max(
        (r for r in rows if r["engine"].startswith("metarec")), key=lambda r: r["tasks_per_s"]
    )
    gpu = env["device"].startswith("cuda")
    frac = best["fraction_of_limit"]
    target = (
        "target (one CPU core) >= 60% of the limit and >= 5x learn2learn: best metarec engine "
        f"{best['engine']} buckets={best['buckets']}: {100 * frac:.1f}% of the limit in wall time "
        f"({'met' if frac >= 0.6 else 'MISSED'}; {100 * best['fraction_of_limit_cpu_time']:.1f}% "
        f"in CPU time), {best['tasks_per_s']:.0f} tasks/s ({best['tasks_per_cpu_s']:.0f} per CPU "
        "second)"
    )
    if ("learn2learn", None) in by:
        ratio = best["ratio_vs_learn2learn"]
        target += f", {ratio:.1f}x learn2learn ({'met' if ratio >= 5 else 'MISSED'})"
    else:
        target += f"; learn2learn not measured ({l2l})"
    if gpu:
        target = target.replace("(one CPU core) ", "(set for one CPU core; this run is on a GPU) ")
    limit = (
        f"limit: useful (per-task loop) {r0['useful_flops_per_meta_batch'] / 1e9:.3f} GFLOP / "
        "meta-batch at the matmul peak measured in this run, median "
        f"{r0['matmul_peak_gflops']:.1f} GFLOP/s (per round: "
        f"{', '.join(f'{x:.0f}' for x in r0['matmul_peaks_gflops'])}) = "
        f"{1000 * r0['limit_seconds']:.1f} ms, {r0['limit_tasks_per_s']:.0f} tasks/s; in CPU time "
        "(process_time, less sensitive to other processes) the peak is "
        f"{r0['matmul_peak_cpu_gflops']:.1f} GFLOP/s"
    )
    load = (
        f"load average (1, 5, 15 min) {tuple(round(x, 1) for x in env['loadavg_1_5_15_before'])} "
        f"before, {tuple(round(x, 1) for x in env['loadavg_1_5_15_after'])} after"
    )
    lines = [
        f"Engine throughput ({r0['time']}, commit "
        f"{r0['commit'][:12]}{' + uncommitted changes' if r0['dirty'] else ''})"
        + (" -- QUICK SMOKE RUN on a tiny workload, not a measurement" if r0["quick"] else ""),
        f"command: `{r0['command']}`",
        f"device: {env['device']} ({dev}); torch {env['torch']}; {load}",
        f"data: {desc['data']}; learn2learn: {l2l}",
        f"{r0['tasks']} tasks/meta-batch, {r0['inner_steps']} inner steps, second order, "
        f"{r0['dtype']}{' (autocast)' if r0['autocast'] else ''}; mean support "
        f"{desc['support_sizes_mean']:.1f} (padded width {desc['support_padded_width']}), query "
        f"10; fast params {desc['fast_params']}, slow {desc['slow_params']}; median of "
        f"{r0['repeat']} rounds",
        "",
        table,
        "",
        limit,
        target,
        "float64 meta-gradient check (before timing, vs the per-task loop): "
        + (
            "passed for every engine"
            if all(r["gradient_check"]["allclose"] for r in rows)
            else "FAILED"
        ),
        "",
    ]
    if warns:
        lines += ["Warnings raised during the run:", *[f"- {w}" for w in warns], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
