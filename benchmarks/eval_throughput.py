"""Catalogue scoring throughput: the shared fast path against today's scoring path, and against
the matmul peak measured in the same run.

Workload: ``--users`` adapted users (default 1,000) and a catalogue of ``--items`` items (default
10,000), a factor model with ``D`` factors (``--factors``, default 64; the ranking baseline
``mf-foldin``'s adapted object, :class:`metarec.methods.ranking.mf_foldin.MFFoldInAdapted`), scored
in batches of ``--batch`` users (256, the benchmark's batch) as ``metarec bench`` does:

* **fast** (:func:`metarec.methods.catalogue.score_catalogue` with the method's
  ``score_catalogue``): one ``(B, D) @ (D, C)`` matmul per batch. Its FLOPs are ``2 U C D``;
  ``fraction of peak = FLOPs / time / peak``;
* **fast + ranking**: the same plus the ranking protocol's statistics on every score row
  (:func:`metarec.metrics.catalogue.rank_catalogue`: 20 excluded support items and 50 relevant
  items per user, the ranks, the served top-10, and the metrics): what a ranking scenario pays
  per batch;
* **today** (``metarec.bench.evaluation``'s catalogue path before this change, still the path of
  the rating scenarios' ``*_all``): the user index expanded against 512 catalogue columns at a
  time, scored through ``Adapted.score`` (a ``(B, 512, D)`` gather per chunk), then the rank of
  the held-out positive.

The **peak** is the best of ``--reps`` ``n x n`` float32 matmuls (``--peak-n``, default 2048) on
the same threads, measured before and after the workload (the median is reported). Every
timing is the median of ``--reps`` runs. Rows go to ``benchmarks/results/eval_throughput.jsonl``
(``--out``) and a table to ``eval_throughput.md`` beside it.

    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from metarec.bench.evaluation import _rank_metrics, _score_candidates  # noqa: E402
from metarec.methods.catalogue import score_catalogue  # noqa: E402
from metarec.methods.ranking.mf_foldin import MFFoldInAdapted  # noqa: E402
from metarec.metrics.catalogue import metrics_from_ranks, rank_catalogue  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int, reps: int) -> float:
    """FLOP/s of the best of ``reps`` ``n x n`` float32 matmuls."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of ``reps`` calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return C.median(out)


def run(args: argparse.Namespace, factors: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    U, n_items, B = args.users, args.items, args.batch
    u = torch.randn(U, factors, generator=gen).to(device)
    v = torch.randn(n_items, factors, generator=gen).to(device)
    items = torch.arange(n_items, device=device)
    batches = [slice(s, min(s + B, U)) for s in range(0, U, B)]
    adapted = [MFFoldInAdapted(u[b], v) for b in batches]
    cols = torch.argsort(torch.rand(U, n_items, generator=gen), dim=1)[:, :70]  # distinct per user
    lists = []
    for b in batches:
        n = b.stop - b.start
        rows = torch.arange(n).repeat_interleave(20), torch.arange(n).repeat_interleave(50)
        ex = (rows[0], cols[b, :20].reshape(-1))
        rel_c = cols[b, 20:].sort(dim=1).values.reshape(-1)
        lists.append((ex, (rows[1], rel_c)))
    users = torch.arange(U)
    pos = torch.randint(0, n_items, (U,), generator=gen)
    neg = (
        torch.arange(n_items).unsqueeze(0).expand(U, -1)
    )  # today's path ranks against the catalogue
    nmask = torch.ones(U, n_items, dtype=torch.bool)
    ok = torch.ones(U, dtype=torch.bool)

    def fast() -> None:
        for a in adapted:
            score_catalogue(a, items)

    def fast_ranking() -> None:
        for a, (ex, rel) in zip(adapted, lists):
            s = score_catalogue(a, items).cpu()
            metrics_from_ranks(*rank_catalogue(s, ex, rel, 20, 10)[:3])

    def today() -> None:
        with torch.no_grad():
            for a, b in zip(adapted, batches):
                ps, ns = _score_candidates(a.score, users[b], pos[b], neg[b], 512, device)
                _rank_metrics(ps, ns, nmask[b], ok[b], 10, "all")

    peaks = [matmul_peak(device, args.peak_n, args.reps)]
    t_fast = timed(fast, device, args.reps)
    t_rank = timed(fast_ranking, device, args.reps)
    t_today = timed(today, device, max(1, args.reps // 2))
    peaks.append(matmul_peak(device, args.peak_n, args.reps))
    peak = C.median(peaks)
    flops = 2.0 * U * n_items * factors
    per = 1000 * 10000 / (U * n_items)  # seconds per 1,000 users x 10,000 items
    return {
        "factors": factors,
        "users": U,
        "items": n_items,
        "batch": B,
        "flops": flops,
        "matmul_peak_gflops": peak / 1e9,
        "matmul_peaks_gflops": [p / 1e9 for p in peaks],
        "fast_seconds": t_fast,
        "fast_gflops": flops / t_fast / 1e9,
        "fast_fraction_of_peak": flops / t_fast / peak,
        "fast_ranking_seconds": t_rank,
        "fast_ranking_fraction_of_peak": flops / t_rank / peak,
        "today_seconds": t_today,
        "fast_s_per_1k_users_10k_items": t_fast * per,
        "fast_ranking_s_per_1k_users_10k_items": t_rank * per,
        "today_s_per_1k_users_10k_items": t_today * per,
        "speedup_fast_vs_today": t_today / t_fast,
        "speedup_fast_ranking_vs_today": t_today / t_rank,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--users", type=C.positive_int, default=1000)
    p.add_argument("--items", type=C.positive_int, default=10000)
    p.add_argument("--batch", type=C.positive_int, default=256)
    p.add_argument("--factors", type=C.int_list, default=[64], help="comma-separated, e.g. 64,256")
    p.add_argument("--reps", type=C.positive_int, default=5)
    p.add_argument("--peak-n", type=C.positive_int, default=2048)
    p.add_argument(
        "--threads", type=C.positive_int, default=None, help="torch threads (default: torch's)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="a smoke run: 200 users, 2,000 items, D 16")
    p.add_argument("--out", type=Path, default=C.RESULTS / "eval_throughput.jsonl")
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.items, args.factors, args.reps, args.peak_n = 200, 2000, [16], 2, 512
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = {
        **C.device_info(args.device),
        **C.git_commit(),
        "date": C.stamp(),
        "command": C.command_line(),
        "quick": args.quick,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    rows = []
    for d in args.factors:
        rows.append({**base, **run(args, d, device)})
        r = rows[-1]
        print(
            f"D={d}: fast {r['fast_s_per_1k_users_10k_items'] * 1000:.1f} ms per 1k x 10k "
            f"({r['fast_fraction_of_peak']:.0%} of the {r['matmul_peak_gflops']:.1f} GFLOP/s peak), "
            f"with ranking {r['fast_ranking_s_per_1k_users_10k_items'] * 1000:.1f} ms, today "
            f"{r['today_s_per_1k_users_10k_items'] * 1000:.1f} ms: {r['speedup_fast_vs_today']:.1f}x "
            f"({r['speedup_fast_ranking_vs_today']:.1f}x with ranking)"
        )
    C.write_jsonl(args.out, rows)
    table = C.markdown_table(
        [
            "D",
            "peak GFLOP/s",
            "fast ms",
            "fast % of peak",
            "fast + ranking ms",
            "today ms",
            "speed-up (fast)",
            "speed-up (with ranking)",
        ],
        [
            (
                r["factors"],
                f"{r['matmul_peak_gflops']:.1f}",
                f"{r['fast_s_per_1k_users_10k_items'] * 1000:.1f}",
                f"{r['fast_fraction_of_peak']:.0%}",
                f"{r['fast_ranking_s_per_1k_users_10k_items'] * 1000:.1f}",
                f"{r['today_s_per_1k_users_10k_items'] * 1000:.1f}",
                f"{r['speedup_fast_vs_today']:.1f}x",
                f"{r['speedup_fast_ranking_vs_today']:.1f}x",
            )
            for r in rows
        ],
    )
    md = args.out.with_suffix(".md")
    md.write_text(
        f"# Catalogue scoring throughput ({base['date']})\n\n`{base['command']}` on {base['cpu']} "
        f"({base['torch_threads']} torch thread(s), load average {base['load_average']}); times per "
        "1,000 users x 10,000 items\n\n" + table + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
