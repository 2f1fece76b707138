"""Fast-adapt serving latency: one cold user, and a thousand cold users in one batched call.

Two measurements on a meta-trained MeLU run (embedding 32, decision layers 64, 64; MAML, 5
inner steps at lr 0.01, as in ``tasks/ml1m-melu.toml``):

(a) **single cold user**: a user id the run has never seen arrives with ``--shots`` ratings;
    ``meta.adapt(rows, user=u, steps=5)`` then ``rec.recommend(u, k=10)`` over the whole item
    catalogue (3,706 MovieLens-1M movies; 3,700 synthetic items without data). Timed end to end,
    ``--warmup`` untimed calls then ``--repeat`` timed ones (median, p90, min, mean); the adapt
    and recommend parts are also timed on their own.
(b) **batched cold users**: ``--users`` cold users (``--shots`` ratings each) adapted by one
    ``meta.adapt_many(frame, steps=5)`` call (all tasks padded and adapted under one ``vmap``),
    against a per-user Python loop of ``meta.adapt(rows_of_u, steps=5)`` over the same users,
    measured in the same run (median of ``--batch-repeat`` / ``--loop-repeat`` rounds); the
    ratio is loop / batched. The batched result is checked equal to the loop's for a few users.

Both use one torch thread by default (``--single-threads``, ``--threads``): a serving process
runs one request per core, and on a machine whose cores are shared more intra-op threads only
add contention. ``--device cuda`` runs everything on the GPU.

The run: ``--run RUN_DIR`` (written by ``metarec train``), else one trained here into a
temporary folder for ``--train-steps`` steps (latency does not depend on how well the model is
trained): ``tasks/ml1m-melu.toml`` when ``$METAREC_DATA`` holds MovieLens-1M (``--data auto``),
else ``tasks/synthetic-cold-start.toml`` resized to 10 domains x 370 items = 3,700 items and the
MeLU model size above. Support ratings are drawn from the catalogue with a seeded generator.

Writes ``results/adapt_latency.json`` (one object: provenance, settings, timings) and
``results/adapt_latency.md``, and replaces the ``## Fast-adapt latency`` section of
``benchmarks/RESULTS.md`` (the rest of that file is left as it is; created if absent).

    python benchmarks/adapt_latency.py                      # CPU, run trained here
    python benchmarks/adapt_latency.py --device cuda --run runs/melu
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from metarec.recommend.load import RunModel, load_run  # noqa: E402

SECTION = "## Fast-adapt latency"
TARGET_SINGLE_MS = 10.0
TARGET_BATCH_S = 1.0
MELU_SIZE = [
    "model.name='melu'",
    "model.embedding_dim=32",
    "model.hidden=[64, 64]",
    "algorithm.name='maml'",
    "algorithm.inner_steps=5",
    "algorithm.inner_lr=0.01",
]


# ---------------------------------------------------------------------- the run
def _train_run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train a short run into ``out``; returns what was trained (for the report)."""
    from metarec.config import load_scenario
    from metarec.train.loop import train

    use_ml1m = args.data == "ml1m" or (
        args.data == "auto"
        and C.data_root() is not None
        and (C.data_root() / "movielens-1m").is_dir()
    )
    if args.data == "ml1m" and C.data_root() is None:
        raise SystemExit("--data ml1m: set METAREC_DATA to the folder holding movielens-1m/")
    budget = [
        f"train.steps={args.train_steps}",
        f"train.val_every={args.train_steps}",
        "train.val_tasks=16",
        f"train.checkpoint_every={args.train_steps}",
        "train.progress=false",
        f"train.device='{args.device}'",
    ]
    if use_ml1m:
        name, overrides = "ml1m-melu", budget
    else:
        n_domains = max(1, round(args.items / 370))
        synth = [
            f"data.synthetic.n_domains={n_domains}",
            f"data.synthetic.n_items={args.items // n_domains}",
            "data.synthetic.n_users=100",
            "data.synthetic.density=0.05",
        ]
        name, overrides = "synthetic-cold-start", [*synth, *MELU_SIZE, *budget]
    sc = load_scenario(
        C.ROOT / "tasks" / f"{name}.toml",
        overrides,
        data_root=str(C.data_root()) if use_ml1m else None,
    )
    t0 = time.perf_counter()
    train(sc, out, evaluate_test=False)
    return {"scenario": name, "overrides": overrides, "train_s": round(time.perf_counter() - t0, 2)}


def _support_frame(
    meta: RunModel, n_users: int, shots: int, seed: int, prefix: str
) -> pd.DataFrame:
    """``shots`` distinct catalogue items per cold user with ratings on the run's scale."""
    rng = np.random.default_rng(seed)
    catalogue = np.asarray(meta.item_ids.values, dtype=object)
    idx = np.argsort(rng.random((n_users, len(catalogue))), axis=1)[
        :, :shots
    ]  # (users, shots) distinct items
    if meta.feedback == "implicit":
        ratings = rng.integers(0, 2, size=idx.shape).astype(float)
    else:
        lo, hi = meta.rating_scale or (1.0, 5.0)
        ratings = rng.integers(int(lo), int(hi) + 1, size=idx.shape).astype(float)
    users = np.repeat(np.asarray([f"{prefix}{k}" for k in range(n_users)], dtype=object), shots)
    return pd.DataFrame(
        {"user": users, "item": catalogue[idx.reshape(-1)], "rating": ratings.reshape(-1)}
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stats(ms: list[float]) -> dict[str, float]:
    xs = sorted(ms)
    return {
        "median_ms": round(statistics.median(xs), 4),
        "p90_ms": round(float(np.percentile(xs, 90)), 4),
        "min_ms": round(xs[0], 4),
        "mean_ms": round(statistics.fmean(xs), 4),
        "n": len(xs),
    }


# ---------------------------------------------------------------------- (a) one cold user
def bench_single(meta: RunModel, args: argparse.Namespace) -> dict[str, Any]:
    frame = _support_frame(
        meta, args.warmup + args.repeat, args.shots, args.seed, prefix="cold-single-"
    )
    per_user = [
        list(zip(g["item"], g["rating"], strict=True)) for _, g in frame.groupby("user", sort=False)
    ]
    users = list(frame["user"].unique())
    total, adapt_ms, rec_ms = [], [], []
    cpu_total, cpu_adapt = (
        [],
        [],
    )  # process CPU time: what contention for the cores does not inflate
    dev = meta.device
    threads = torch.get_num_threads()
    if args.single_threads:
        torch.set_num_threads(
            args.single_threads
        )  # one request per core, as a serving process runs it
    for r, (user, rows) in enumerate(zip(users, per_user, strict=True)):
        _sync(dev)
        c0, t0 = time.process_time(), time.perf_counter()
        rec = meta.adapt(rows, user=user, steps=args.steps)
        _sync(dev)
        c1, t1 = time.process_time(), time.perf_counter()
        top = rec.recommend(user, k=args.k)
        _sync(dev)
        c2, t2 = time.process_time(), time.perf_counter()
        assert len(top) == args.k, f"recommend returned {len(top)} items"
        if r >= args.warmup:
            total.append((t2 - t0) * 1e3)
            adapt_ms.append((t1 - t0) * 1e3)
            rec_ms.append((t2 - t1) * 1e3)
            cpu_total.append((c2 - c0) * 1e3)
            cpu_adapt.append((c1 - c0) * 1e3)
    torch.set_num_threads(threads)
    out = {
        "total": _stats(total),
        "adapt": _stats(adapt_ms),
        "recommend": _stats(rec_ms),
        "cpu_total": _stats(cpu_total),
        "cpu_adapt": _stats(cpu_adapt),
        "torch_threads": args.single_threads or threads,
    }
    out["target_median_ms"] = TARGET_SINGLE_MS
    out["meets_target"] = out["total"]["median_ms"] < TARGET_SINGLE_MS
    return out


# ---------------------------------------------------------------------- (b) many cold users
def bench_batched(meta: RunModel, args: argparse.Namespace) -> dict[str, Any]:
    frame = _support_frame(meta, args.users, args.shots, args.seed + 1, prefix="cold-batch-")
    groups = [g for _, g in frame.groupby("user", sort=False)]  # split outside the timed loop
    dev = meta.device
    meta.adapt_many(frame.iloc[: args.shots * min(8, args.users)], steps=args.steps)  # warm-up

    batched_s, rec = [], None
    for _ in range(args.batch_repeat):
        _sync(dev)
        t0 = time.perf_counter()
        rec = meta.adapt_many(frame, steps=args.steps)
        _sync(dev)
        batched_s.append(time.perf_counter() - t0)
    loop_s, last = [], {}
    for _ in range(args.loop_repeat):
        _sync(dev)
        t0 = time.perf_counter()
        for g in groups:
            last[g["user"].iat[0]] = meta.adapt(g, steps=args.steps)
        _sync(dev)
        loop_s.append(time.perf_counter() - t0)
    assert rec is not None and rec.n_tasks == args.users
    probe = list(meta.item_ids.values[:50])
    diffs = [
        float(
            np.abs(rec.predict(u, probe, clip=False) - last[u].predict(u, probe, clip=False)).max()
        )
        for u in list(last)[:5]
    ]
    b, lp = statistics.median(batched_s), statistics.median(loop_s)
    return {
        "users": args.users,
        "batched_s": round(b, 4),
        "batched_rounds_s": [round(x, 4) for x in batched_s],
        "loop_s": round(lp, 4),
        "loop_rounds_s": [round(x, 4) for x in loop_s],
        "speedup_loop_over_batched": round(lp / b, 2),
        "batched_ms_per_user": round(1e3 * b / args.users, 4),
        "loop_ms_per_user": round(1e3 * lp / args.users, 4),
        "max_abs_diff_batched_vs_loop": max(diffs),
        "target_s": TARGET_BATCH_S,
        "meets_target": b < TARGET_BATCH_S,
    }


# ---------------------------------------------------------------------- report
def _markdown(res: dict[str, Any], heading: str = SECTION) -> str:
    s, b, m, w = res["single"], res["batched"], res["machine"], res["workload"]
    gpu = (
        f"GPU: {m['gpu']} (CUDA {m['cuda']})"
        if res["device"].startswith("cuda")
        else "No GPU available this session: CPU only"
        if not torch.cuda.is_available()
        else "CPU run (a GPU is present; rerun with --device cuda)"
    )
    lines = [
        heading,
        "",
        f"Measured {res['when']} on `{res['device']}`: {m['cpu']}, {m['cpu_affinity']} usable "
        f"core(s) of {m['cpu_count']}, torch {m['torch']} with {m['torch_threads']} thread(s), "
        f"Python {m['python']}. {gpu}.",
        f"Run: {w['run']}; {w['items']:,} catalogue items; MeLU {w['model']}; {w['algorithm']}; "
        f"{res['settings']['shots']} support ratings per cold user, {res['settings']['steps']} "
        f"inner steps, top-{res['settings']['k']}; (a) with {s['torch_threads']} torch thread(s) "
        f"(one request per core), (b) with {m['torch_threads']}.",
        f"Load average when the measurement started: {res['loadavg']} (the cores are shared with "
        "other jobs; wall-clock numbers include that contention).",
        "",
        C.markdown_table(
            ["measurement", "median", "p90", "min", "target", "met"],
            [
                [
                    "(a) one cold user: adapt + top-10",
                    f"{s['total']['median_ms']:.2f} ms",
                    f"{s['total']['p90_ms']:.2f} ms",
                    f"{s['total']['min_ms']:.2f} ms",
                    f"< {TARGET_SINGLE_MS:g} ms median",
                    "yes" if s["meets_target"] else "**no**",
                ],
                [
                    "(a) of which adapt (5 steps)",
                    f"{s['adapt']['median_ms']:.2f} ms",
                    f"{s['adapt']['p90_ms']:.2f} ms",
                    f"{s['adapt']['min_ms']:.2f} ms",
                    "",
                    "",
                ],
                [
                    "(a) of which recommend (top-10)",
                    f"{s['recommend']['median_ms']:.2f} ms",
                    f"{s['recommend']['p90_ms']:.2f} ms",
                    f"{s['recommend']['min_ms']:.2f} ms",
                    "",
                    "",
                ],
                [
                    "(a) one cold user: CPU time (process), adapt + top-10",
                    f"{s['cpu_total']['median_ms']:.2f} ms",
                    f"{s['cpu_total']['p90_ms']:.2f} ms",
                    f"{s['cpu_total']['min_ms']:.2f} ms",
                    "",
                    "",
                ],
                [
                    "(a) of which adapt, CPU time",
                    f"{s['cpu_adapt']['median_ms']:.2f} ms",
                    f"{s['cpu_adapt']['p90_ms']:.2f} ms",
                    f"{s['cpu_adapt']['min_ms']:.2f} ms",
                    "",
                    "",
                ],
                [
                    f"(b) {b['users']:,} cold users, one batched call",
                    f"{b['batched_s']:.3f} s",
                    "",
                    f"{min(b['batched_rounds_s']):.3f} s",
                    f"< {TARGET_BATCH_S:g} s",
                    "yes" if b["meets_target"] else "**no**",
                ],
                [
                    "(b) same users, per-user Python loop",
                    f"{b['loop_s']:.3f} s",
                    "",
                    f"{min(b['loop_rounds_s']):.3f} s",
                    "",
                    "",
                ],
            ],
        ),
        "",
        f"Batched adaptation is **{b['speedup_loop_over_batched']:.1f}x** faster than the per-user "
        f"loop ({b['batched_ms_per_user']:.3f} vs {b['loop_ms_per_user']:.3f} ms per user; ratio "
        "measured in the same run; largest prediction difference between the two: "
        f"{b['max_abs_diff_batched_vs_loop']:.1e}). (a) is over {s['total']['n']} cold users after "
        f"{res['settings']['warmup']} warm-up calls; (b) is the median of "
        f"{len(b['batched_rounds_s'])} batched and {len(b['loop_rounds_s'])} loop round(s).",
        "",
        f"Command: `{res['command']}` (commit {res['commit']['commit'][:10]}"
        f"{', dirty tree' if res['commit']['dirty'] else ''}). "
        f"Raw numbers: `benchmarks/results/{res['json_name']}`.",
        "",
    ]
    return "\n".join(lines)


def update_results_md(path: Path, section: str) -> None:
    """Replace (or append) the ``## Fast-adapt latency`` section of ``path``; the other sections
    are kept byte for byte. The file is re-read right before it is written."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == SECTION), None)
    body = section if section.endswith("\n") else section + "\n"
    if start is None:
        new = text + ("" if text.endswith("\n") else "\n") + ("\n" if text.strip() else "") + body
    else:
        end = next(
            (j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        new = (
            "".join(lines[:start])
            + body
            + ("\n" if tail and not body.endswith("\n\n") else "")
            + tail
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--run",
        type=Path,
        help="a run directory written by 'metarec train' (default: train one here)",
    )
    p.add_argument(
        "--data",
        choices=("auto", "ml1m", "synthetic"),
        default="auto",
        help="what to train on without --run (auto: MovieLens-1M when $METAREC_DATA has it)",
    )
    p.add_argument(
        "--train-steps", type=int, default=5, help="meta-training steps of the run trained here"
    )
    p.add_argument(
        "--items", type=int, default=3700, help="synthetic catalogue size (without data)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for (b) (default 1; 0: torch's default)",
    )
    p.add_argument(
        "--single-threads",
        type=int,
        default=1,
        help="torch threads for (a), one request per core (default 1; 0: as --threads)",
    )
    p.add_argument("--shots", type=int, default=10, help="support ratings per cold user")
    p.add_argument("--steps", type=int, default=5, help="inner steps")
    p.add_argument("--k", type=int, default=10, help="top-k")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeat", type=int, default=300, help="timed single-user calls")
    p.add_argument("--users", type=int, default=1000, help="cold users in the batched call")
    p.add_argument("--batch-repeat", type=int, default=5)
    p.add_argument("--loop-repeat", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=C.RESULTS / "adapt_latency.json", help="JSON results"
    )
    p.add_argument(
        "--report", type=Path, default=None, help="markdown report (default: beside --out, .md)"
    )
    p.add_argument(
        "--results-md",
        type=Path,
        default=Path(__file__).resolve().parent / "RESULTS.md",
        help="file whose '## Fast-adapt latency' section is replaced",
    )
    p.add_argument("--no-results-md", action="store_true", help="leave RESULTS.md alone")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {args.device}: CUDA is not available on this machine; use --device cpu"
        )
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="metarec-adapt-latency-") as tmp:
        if args.run is not None:
            cfg = args.run / "config.json"
            name = json.loads(cfg.read_text()).get("name", "?") if cfg.is_file() else "?"
            run, trained = args.run, {"scenario": f"{name} (given run {args.run})"}
        else:
            run = Path(tmp) / "run"
            trained = _train_run(args, run)
        meta = load_run(run, device=args.device)
        load0 = (
            " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
        )
        t0 = time.perf_counter()
        single = bench_single(meta, args)
        batched = bench_batched(meta, args)
        bench_s = time.perf_counter() - t0
    mk = meta.manifest["model"]["kwargs"]
    res: dict[str, Any] = {
        "benchmark": "adapt_latency",
        "when": C.stamp(),
        "commit": C.git_commit(),
        "command": C.command_line(),
        "device": args.device,
        "machine": C.device_info(args.device),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "config_hash": C.config_hash(
            {k: v for k, v in vars(args).items() if k not in ("out", "report", "results_md")}
        ),
        "workload": {
            "run": trained.get("scenario"),
            "trained": trained,
            "items": len(meta.item_ids) - 1,
            "model": f"embedding {mk.get('embedding_dim')}, hidden {list(mk.get('hidden', []))}",
            "algorithm": f"{meta.algo.name}, inner_lr {meta.lr if meta.lr is not None else meta.algo.inner_lr}",
            "parameters": int(sum(p.numel() for p in meta.params.values())),
        },
        "loadavg": load0,
        "single": single,
        "batched": batched,
        "bench_s": round(bench_s, 2),
        "json_name": args.out.name,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    report = args.report or args.out.with_suffix(".md")
    md = _markdown(res, heading="# Fast-adapt latency")
    report.write_text(md)
    if not args.no_results_md:
        update_results_md(args.results_md, _markdown(res))
    s, b = single["total"], batched
    print(
        f"(a) one cold user, adapt {args.steps} steps + top-{args.k} over "
        f"{res['workload']['items']:,} items: median {s['median_ms']:.2f} ms, p90 "
        f"{s['p90_ms']:.2f} ms (target < {TARGET_SINGLE_MS:g} ms)"
    )
    print(
        f"(b) {b['users']:,} cold users: batched {b['batched_s']:.3f} s (target < "
        f"{TARGET_BATCH_S:g} s), per-user loop {b['loop_s']:.3f} s, "
        f"{b['speedup_loop_over_batched']:.1f}x"
    )
    print(f"results: {args.out}\nreport: {report}")
    return res


if __name__ == "__main__":
    main()
