"""Summarise a benchmark folder's ``results.jsonl`` while the benchmark is still running.

``metarec bench`` writes its report when every (seed, algorithm) run has finished; a long suite
continued across sessions with ``--resume`` has rows long before that. This prints, from the
rows alone, the mean of one metric per (algorithm, state) over the seeds that every algorithm has
finished (seeds with missing runs are left out and named), the best row of each state in bold,
and each seed's wall time (training plus test scoring) for all algorithms and for a named subset.

    python benchmarks/summarize_rows.py OUT/results.jsonl --metric mae --shots default
    python benchmarks/summarize_rows.py OUT/results.jsonl --subset global,finetune,maml

Only a summary: no confidence intervals or tests over tasks (the report computes those).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> list[dict]:
    """The rows of ``results.jsonl`` (or a gzipped ``results.jsonl.gz``, as committed for the
    largest suites); a partial last line (a benchmark still writing) is skipped."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = raw.decode().splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a partial last line of a running benchmark
            if n != len(lines):
                raise SystemExit(f"{path}: line {n} is not JSON; the file is damaged") from None
    if not rows:
        raise SystemExit(f"{path}: no rows yet")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a benchmark's results.jsonl")
    p.add_argument("--metric", default="mae")
    p.add_argument(
        "--shots", default="default", help="a shots value of the rows (default: default)"
    )
    p.add_argument("--subset", default="", help="comma-separated algorithms for a second wall time")
    a = p.parse_args(argv)
    rows = load(a.results)
    algos = list(dict.fromkeys(r["algorithm"] for r in rows))
    states = list(dict.fromkeys(r["state"] for r in rows))
    by_seed: dict[int, dict[str, float]] = defaultdict(dict)
    for r in rows:
        by_seed[r["seed"]][r["algorithm"]] = r.get("train_seconds", 0.0) + r.get(
            "eval_seconds", 0.0
        )
    full = [s for s in sorted(by_seed) if set(by_seed[s]) >= set(algos)]
    partial = [s for s in sorted(by_seed) if s not in full]
    subset = [x for x in a.subset.split(",") if x]
    print(
        f"{a.results}: {len(rows)} rows; seeds finished by every algorithm: {full}"
        + (f"; unfinished: {partial}" if partial else "")
    )
    for s in sorted(by_seed):
        line = f"- seed {s}: {len(by_seed[s])} algorithms, {sum(by_seed[s].values()):,.0f} s"
        if subset:
            line += f"; {','.join(subset)}: {sum(v for k, v in by_seed[s].items() if k in subset):,.0f} s"
        print(line)
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r["seed"] in full and str(r["shots"]) == a.shots and a.metric in r["metrics"]:
            cells[(r["algorithm"], r["state"])].append(float(r["metrics"][a.metric]))
    if not cells:
        raise SystemExit(f"no finished seed has {a.metric!r} at shots={a.shots!r}")
    lower = a.metric in ("mae", "rmse", "logloss")
    best = {}
    for st in states:
        vals = [(statistics.fmean(v), al) for (al, s2), v in cells.items() if s2 == st and v]
        best[st] = (min if lower else max)(vals)[1] if vals else None
    print(f"\n{a.metric}, shots={a.shots}, mean over seeds {full} (sd over seeds when > 1):\n")
    print("| algorithm | " + " | ".join(states) + " |")
    print("|---|" + "---:|" * len(states))
    for al in algos:
        out = []
        for st in states:
            v = cells.get((al, st), [])
            if not v:
                out.append("n/a")
                continue
            t = f"{statistics.fmean(v):.4f}"
            if len(v) > 1:
                t += f" ({statistics.stdev(v):.4f})"
            out.append(f"**{t}**" if best[st] == al and not math.isnan(statistics.fmean(v)) else t)
        print(f"| {al} | " + " | ".join(out) + " |")


if __name__ == "__main__":
    main()
