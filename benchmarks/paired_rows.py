"""Paired t-tests between two algorithms of a benchmark folder, over tasks and over seeds.

The bench's report compares the best algorithm with the best *baseline*; this compares any two
(for example a meta-learner with the strongest transfer method), per state and shots, from the
folder's ``per_task.jsonl.gz`` (tasks: every (seed, task unit) both scored, pooled over seeds)
and ``results.jsonl`` (seeds: one mean per seed).

    python benchmarks/paired_rows.py OUT r2d2-source finetune-transfer+adapt [--metric mae]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metarec.bench.stats import paired_t_test  # noqa: E402


def _real(v: float | None) -> bool:
    """A per-task value that was scored (``None``/NaN: a task without a relevant item)."""
    return v is not None and v == v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--metric", default="mae")
    args = p.parse_args(argv)
    per: dict[tuple, dict[tuple, float]] = {}
    with gzip.open(args.out / "per_task.jsonl.gz", "rt") as f:
        for line in f:
            r = json.loads(line)
            if r["metric"] != args.metric or r["algorithm"] not in (args.a, args.b):
                continue
            key = (r["state"], str(r["shots"]), r["algorithm"])
            d = per.setdefault(key, {})
            for u, v in zip(r["units"], r["values"], strict=True):
                d[(r["seed"], u)] = v
    seeds: dict[tuple, dict[int, float]] = {}
    for line in (args.out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["algorithm"] in (args.a, args.b) and args.metric in r["metrics"]:
            key = (r["state"], str(r["shots"]), r["algorithm"])
            seeds.setdefault(key, {})[r["seed"]] = r["metrics"][args.metric]
    print(
        f"{args.a} - {args.b}, {args.metric}: state, shots, mean diff over tasks, n tasks, p tasks, p seeds"
    )
    if not per:  # the bench keeps per-task values of its primary metric only
        print(
            f"(no per-task values of {args.metric} in per_task.jsonl.gz: the test over seeds only)"
        )
    for state, shots, _ in sorted(k for k in (per or seeds) if k[2] == args.a):
        sa, sb = seeds[(state, shots, args.a)], seeds.get((state, shots, args.b), {})
        common = sorted(set(sa) & set(sb))
        s = paired_t_test([sa[k] for k in common], [sb[k] for k in common])
        if not per:
            print(f"{state}\t{shots}\t{s['mean_diff']:+.4f} (seeds)\t{s['n']}\t-\t{s['p']:.3g}")
            continue
        da, db = per[(state, shots, args.a)], per.get((state, shots, args.b), {})
        both = [k for k in da if k in db and _real(da[k]) and _real(db[k])]
        t = paired_t_test([da[k] for k in both], [db[k] for k in both])
        print(f"{state}\t{shots}\t{t['mean_diff']:+.4f}\t{t['n']}\t{t['p']:.3g}\t{s['p']:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
