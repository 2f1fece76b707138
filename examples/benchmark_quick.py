"""A tiny few-shot benchmark on synthetic data: the same call `metarec bench` makes.

Trains global, MAML and the popularity baseline for two seeds on a small synthetic scenario, scores
every meta-test user at 3 shots and at the scenario's default support, and prints the headline
table of the report (mean ± 95% CI over seeds). The full suite: benchmarks/run_suite.sh.

Run: python examples/benchmark_quick.py
"""

import tempfile
from pathlib import Path

from metarec.bench import run_bench
from metarec.config import load_scenario

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
small = [
    "data.synthetic.n_domains=6",
    "data.synthetic.n_users=80",
    "data.synthetic.n_items=120",
    "train.steps=10",
    "train.val_every=10",
    "train.val_tasks=32",
    "algorithm.meta_batch=8",
]
with tempfile.TemporaryDirectory() as tmp:
    scenario = load_scenario(scenario_file, small)
    result = run_bench(
        scenario,
        algorithms=["global", "popularity", "maml"],
        seeds=2,
        shots=[3],
        out=Path(tmp) / "bench",
        plots=False,
        verbose=False,
    )
    print(f"{len(result.rows)} result rows in {result.seconds:.0f} s")
    report = result.report.read_text()
    summary = report.split("## Summary")[1].split("## How to read")[0]
    print("## Summary" + summary.rstrip())
    for row in result.rows[:3]:
        print(
            f"{row['algorithm']:>10} seed {row['seed']} shots {row['shots']}: mae {row['metrics']['mae']:.4f}, "
            f"hr@10 vs 99 sampled negatives {row['metrics']['hr@10_neg']:.3f}"
        )
