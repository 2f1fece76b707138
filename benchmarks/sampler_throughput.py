"""Episodic task sampler throughput (tasks/s) on one CPU core.

:class:`metarec.episodes.sampler.TaskSampler` cuts padded :class:`EpisodeBatch` tensors from a
scenario's meta-train pool. This script builds the pool the way ``metarec`` does for a scenario
file (``load_table`` + ``build_splits`` + ``sampler_config``) and times ``sampler.sample(n)`` for
several meta-batch sizes, with ``torch.set_num_threads(1)`` (the sampler is numpy; one thread
keeps torch's conversions single-core too).

Scenarios: ``tasks/synthetic-cold-start.toml`` (always; embedded synthetic data, 10 support +
10 query per task), and ``tasks/ml1m-melu.toml`` (MovieLens-1M, MeLU protocol: all non-query
ratings as support, 10 pinned queries) when ``$METAREC_DATA`` holds ``movielens-1m/``.

Timing: for each round, every (scenario, batch size) configuration is timed once, in a rotating
order (interleaved, so a burst of load on a shared machine hits all configurations alike); a
configuration's time in a round is the wall time of as many ``sample`` calls as fit in
``--min-time`` seconds. The median over ``--repeat`` rounds is reported. Target: >= 20,000
tasks/s on one core (reported, not asserted).

Run ``python benchmarks/sampler_throughput.py --help``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET_TASKS_PER_S = 20_000
QUICK_OVERRIDES = ("data.synthetic.n_domains=6",)  # a smaller synthetic table for the smoke run
SCENARIOS = {"synthetic": "synthetic-cold-start.toml", "movielens-1m": "ml1m-melu.toml"}


def build_sampler(
    name: str, seed: int, overrides: tuple[str, ...] = ()
) -> tuple[Any, dict[str, Any]]:
    """``(TaskSampler over the scenario's meta-train pool, description)``; ``overrides`` are
    ``--set``-style scenario overrides (the quick run shrinks the synthetic data)."""
    from metarec.config import load_scenario
    from metarec.data.load import load_table
    from metarec.episodes.build import build_splits, sampler_config
    from metarec.episodes.sampler import TaskSampler

    root = C.data_root()
    scenario = load_scenario(C.ROOT / "tasks" / SCENARIOS[name], overrides, data_root=root)
    t0 = time.perf_counter()
    table = load_table(scenario.data)
    splits = build_splits(table, scenario.protocol)
    pool = splits.pools[splits.train]
    cfg = sampler_config(scenario.protocol)
    sampler = TaskSampler(table, pool, cfg, seed=seed)
    desc = {
        "scenario": scenario.name,
        "overrides": list(overrides),
        "interactions": len(table),
        "pool": splits.train,
        "pool_units": len(pool),
        "mean_unit_length": float(pool.lengths.mean()),
        "n_support": cfg.n_support,
        "n_query": cfg.n_query,
        "order": cfg.order,
        "setup_seconds": time.perf_counter() - t0,
    }
    return sampler, desc


def time_once(sampler: Any, n_tasks: int, min_time: float) -> tuple[float, int]:
    """``(seconds, tasks)`` of repeated ``sample(n_tasks)`` calls lasting at least ``min_time``."""
    done = 0
    t0 = time.perf_counter()
    while True:
        sampler.sample(n_tasks)
        done += n_tasks
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed, done


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--batch-sizes",
        type=C.int_list,
        default=[32, 256, 1024],
        help="tasks per sample() call, comma-separated (default 32,256,1024)",
    )
    p.add_argument(
        "--data",
        choices=["auto", "synthetic"],
        default="auto",
        help="auto: synthetic, plus MovieLens-1M when $METAREC_DATA holds it; synthetic: synthetic only",
    )
    p.add_argument(
        "--repeat",
        type=C.positive_int,
        default=7,
        help="interleaved timing rounds (median reported)",
    )
    p.add_argument(
        "--min-time",
        type=float,
        default=1.0,
        help="seconds of sampling per configuration and round",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed sample() calls per configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: a smaller synthetic table (6 domains), batch size 32, 1 round of 0.2 s "
        "(not a measurement)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=C.RESULTS / "sampler_throughput.jsonl",
        help="JSONL rows are appended here; the markdown report goes beside it (.md)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.data, args.batch_sizes, args.repeat, args.min_time, args.warmup = (
            "synthetic",
            [32],
            1,
            0.2,
            1,
        )
    if not args.min_time > 0:
        p.error(f"--min-time {args.min_time}: must be > 0 seconds; pass e.g. --min-time 1.0")
    if args.warmup < 0:
        p.error(f"--warmup {args.warmup}: must be >= 0; pass e.g. --warmup 3")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    names = ["synthetic"]
    root = C.data_root()
    skipped = None
    if args.data == "auto":
        if root is not None and (root / "movielens-1m").is_dir():
            names.append("movielens-1m")
        else:
            skipped = "movielens-1m skipped: set METAREC_DATA to the folder holding movielens-1m/"
    samplers, descs = {}, {}
    for name in names:
        overrides = QUICK_OVERRIDES if args.quick and name == "synthetic" else ()
        samplers[name], descs[name] = build_sampler(name, args.seed, overrides)
    configs = [(n, b) for n in names for b in args.batch_sizes]
    for name, bs in configs:
        for _ in range(args.warmup):
            samplers[name].sample(bs)
    rates: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    for r in range(args.repeat):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for name, bs in order:
            seconds, tasks = time_once(samplers[name], bs, args.min_time)
            rates[(name, bs)].append(tasks / seconds)

    env = {**C.git_commit(), **C.device_info("cpu"), "torch_threads": torch.get_num_threads()}
    run_id = C.config_hash({"t": C.stamp(), "pid": os.getpid()})
    rows = []
    for (name, bs), rs in rates.items():
        cfg = {
            "benchmark": "sampler_throughput",
            "data": name,
            **descs[name],
            "batch_size": bs,
            "seed": args.seed,
            "quick": args.quick,
        }
        cfg.pop("setup_seconds")
        med = C.median(rs)
        rows.append(
            {
                "run_id": run_id,
                "time": C.stamp(),
                **env,
                "config_hash": C.config_hash(cfg),
                **cfg,
                "setup_seconds": descs[name]["setup_seconds"],
                "repeat": args.repeat,
                "min_time": args.min_time,
                "tasks_per_s_rounds": rs,
                "tasks_per_s": med,
                "target_tasks_per_s": TARGET_TASKS_PER_S,
                "meets_target": med >= TARGET_TASKS_PER_S,
                "skipped": skipped,
                "command": C.command_line(),
            }
        )
    C.write_jsonl(args.out, rows)
    report = render(rows, skipped)
    args.out.with_suffix(".md").write_text(report)
    print(report)
    return rows


def render(rows: list[dict[str, Any]], skipped: str | None) -> str:
    r0 = rows[0]
    table = C.markdown_table(
        [
            "data",
            "pool units",
            "support / query",
            "tasks per call",
            "tasks/s (median)",
            "min .. max over rounds",
            ">= 20k",
        ],
        [
            [
                r["data"],
                r["pool_units"],
                f"{r['n_support'] or 'rest'} / {r['n_query']}",
                r["batch_size"],
                f"{r['tasks_per_s']:,.0f}",
                f"{min(r['tasks_per_s_rounds']):,.0f} .. {max(r['tasks_per_s_rounds']):,.0f}",
                "yes" if r["meets_target"] else "NO",
            ]
            for r in rows
        ],
    )
    lines = [
        f"Sampler throughput ({r0['time']}, commit {r0['commit'][:12]}"
        f"{' + uncommitted changes' if r0['dirty'] else ''})"
        + (" -- QUICK SMOKE RUN, not a measurement" if r0["quick"] else ""),
        f"cpu: {r0['cpu']} ({r0['cpu_affinity']} cores visible, 1 torch thread); "
        f"torch {r0['torch']}, numpy {r0['numpy']}; "
        f"median of {r0['repeat']} interleaved rounds of >= {r0['min_time']} s",
        f"command: `{r0['command']}`",
        "",
        table,
        "",
    ]
    if skipped:
        lines += [skipped, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
