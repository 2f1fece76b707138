"""Time and peak memory against the number of interactions: generate, index, sample, meta-train.

For each size (``--sizes``, default 1M and 10M interactions; 100M with ``--sizes 1e6,1e7,1e8``),
a fresh subprocess (so each size's peak is its own):

1. ``generate``: :func:`metarec.data.synthetic.make_synthetic_large` (sparse draws, 2,000 users x
   1,000 items per domain, about 50 ratings per user) into an ``InteractionTable``;
2. ``index``: a user-task pool over every row (20-200 interactions per user) and a
   :class:`~metarec.episodes.sampler.TaskSampler` (support = all non-query ratings, query 10);
3. ``sample``: ``--batches`` meta-batches of 32 tasks;
4. ``train``: ``--steps`` outer steps of second-order MAML (5 inner steps) on MeLU (embedding 32,
   decision layers 64, 64) with Adam: the per-step work and memory depend on the meta-batch, not
   on the data size.

Per stage: wall seconds and the resident set size after it; overall: the peak RSS
(``ru_maxrss``) and bytes per interaction. One torch thread. Writes ``scale.jsonl`` and
``scale.md`` to ``benchmarks/results/`` (``--out``).

Run ``python benchmarks/scale.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MIB = 2**20


def _rss_mib() -> float:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(n: int, batches: int, steps: int, seed: int) -> dict[str, Any]:
    """Run the four stages for ``n`` interactions in this process; returns the measurements."""
    import numpy as np
    import torch

    from metarec.algorithms import AlgorithmConfig, meta_loss_and_grads
    from metarec.data.synthetic import make_synthetic_large
    from metarec.episodes.pool import build_pool
    from metarec.episodes.sampler import SamplerConfig, TaskSampler
    from metarec.models import build_model

    torch.set_num_threads(1)
    stages: dict[str, dict[str, float]] = {}
    base = _rss_mib()

    def mark(name: str, t0: float, **extra: float) -> None:
        stages[name] = {
            "seconds": time.perf_counter() - t0,
            "rss_after_mib": _rss_mib(),
            "maxrss_mib": _maxrss_mib(),
            **extra,
        }

    t0 = time.perf_counter()
    table = make_synthetic_large(n, seed=seed)
    mark("generate", t0)
    t0 = time.perf_counter()
    pool = build_pool(
        table,
        np.arange(len(table)),
        table.users,
        "all",
        "user",
        min_interactions=20,
        max_interactions=200,
    )
    sampler = TaskSampler(table, pool, SamplerConfig(n_support=None, n_query=10), seed=seed)
    mark("index", t0, units=len(pool))
    t0 = time.perf_counter()
    for _ in range(batches):
        sampler.sample(32)
    mark("sample", t0, tasks_per_s=32 * batches / (time.perf_counter() - t0))
    model = build_model("melu", table, embedding_dim=32, hidden=(64, 64))
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    cfg = AlgorithmConfig("maml", inner_steps=5, inner_lr=0.01, meta_batch=32)
    rss_before_train = _rss_mib()
    t0 = time.perf_counter()
    for _ in range(steps):
        _, grads = meta_loss_and_grads(cfg, model, params, sampler.sample(32))
        for k, p in params.items():
            p.grad = grads[k]
        opt.step()
    mark(
        "train",
        t0,
        steps_per_s=steps / (time.perf_counter() - t0),
        rss_growth_during_train_mib=_rss_mib() - rss_before_train,
    )
    return {
        "interactions": len(table),
        "users": table.n_users - 1,
        "items": table.n_items - 1,
        "domains": table.n_domains - 1,
        "stages": stages,
        "rss_start_mib": base,
        "peak_rss_mib": _maxrss_mib(),
        "peak_bytes_per_interaction": _maxrss_mib() * MIB / len(table),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", default="1e6,1e7", help="interaction counts, comma-separated (default 1e6,1e7)"
    )
    p.add_argument(
        "--batches",
        type=C.positive_int,
        default=50,
        help="meta-batches sampled per size (default 50)",
    )
    p.add_argument(
        "--steps", type=C.positive_int, default=10, help="meta-training steps per size (default 10)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-gib",
        type=float,
        default=16.0,
        help="address-space limit of each child (GiB, default 16): a size that does not fit fails cleanly",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=C.RESULTS / "scale.jsonl",
        help="JSONL (appended); the report goes beside it (.md)",
    )
    args = p.parse_args(argv)
    try:
        args.sizes = [int(float(x)) for x in args.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes {args.sizes!r}: comma-separated numbers of interactions, e.g. 1e6,1e7")
    if any(s < 1000 for s in args.sizes):
        p.error(f"--sizes {args.sizes}: each size must be >= 1000 interactions")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_child":
        gib = float(sys.argv[6])
        resource.setrlimit(resource.RLIMIT_AS, (int(gib * 2**30), int(gib * 2**30)))
        print(
            json.dumps(
                child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
            )
        )
        return []
    args = parse_args(argv)
    rows = []
    env = {**C.git_commit(), **C.device_info("cpu")}
    for n in args.sizes:
        load = os.getloadavg()
        t0 = time.perf_counter()
        cmd = [
            sys.executable,
            __file__,
            "--_child",
            str(n),
            str(args.batches),
            str(args.steps),
            str(args.seed),
            str(args.max_gib),
        ]
        res = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=C.ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        row: dict[str, Any] = {
            "benchmark": "scale",
            "time": C.stamp(),
            **env,
            "requested_interactions": n,
            "batches": args.batches,
            "steps": args.steps,
            "seed": args.seed,
            "max_gib": args.max_gib,
            "loadavg_before": load,
            "loadavg_after": os.getloadavg(),
            "command": C.command_line(),
            "total_seconds": time.perf_counter() - t0,
        }
        if res.returncode != 0:
            row["failed"] = (
                res.stderr.strip().splitlines()[-1][:300]
                if res.stderr.strip()
                else f"exit {res.returncode}"
            )
        else:
            row.update(json.loads(res.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    C.write_jsonl(args.out, rows)
    args.out.with_suffix(".md").write_text(render(rows))
    print(render(rows))
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    head = [
        "interactions",
        "users",
        "generate s",
        "index s",
        "sample tasks/s",
        "train steps/s",
        "RSS after generate (MiB)",
        "RSS growth in train (MiB)",
        "peak RSS (MiB)",
        "peak bytes / interaction",
        "load avg before",
    ]
    body = []
    for r in rows:
        if "failed" in r:
            body.append(
                [
                    f"{r['requested_interactions']:,}",
                    "-",
                    f"FAILED: {r['failed']}",
                    *["-"] * 7,
                    f"{r['loadavg_before'][0]:.1f}",
                ]
            )
            continue
        s = r["stages"]
        body.append(
            [
                f"{r['interactions']:,}",
                f"{r['users']:,}",
                f"{s['generate']['seconds']:.1f}",
                f"{s['index']['seconds']:.1f}",
                f"{s['sample']['tasks_per_s']:.0f}",
                f"{s['train']['steps_per_s']:.2f}",
                f"{s['generate']['rss_after_mib']:.0f}",
                f"{s['train']['rss_growth_during_train_mib']:.1f}",
                f"{r['peak_rss_mib']:.0f}",
                f"{r['peak_bytes_per_interaction']:.0f}",
                f"{r['loadavg_before'][0]:.1f}",
            ]
        )
    r0 = rows[0]
    return "\n".join(
        [
            f"Scale ({r0['time']}, commit "
            f"{r0['commit'][:12]}{' + uncommitted changes' if r0['dirty'] else ''})",
            f"command: `{r0['command']}`",
            f"device: cpu ({r0['cpu']}, 1 torch thread, {r0['cpu_affinity']} cores shared with "
            f"other processes); {r0['batches']} meta-batches of 32 sampled, {r0['steps']} MAML "
            "steps (MeLU 32/64/64, 5 inner steps, second order)",
            "",
            C.markdown_table(head, body),
            "",
        ]
    )


if __name__ == "__main__":
    main()
