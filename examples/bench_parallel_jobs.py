"""Run a benchmark's (seed, algorithm) runs two at a time: the same rows as one at a time.

`metarec bench --jobs N` (`run_bench(..., jobs=N)`) runs the independent (seed, algorithm) runs
in N worker processes forked from the bench, each with one torch thread; every finished run is
written to the folder as it finishes, so `--resume` continues an interrupted one as usual.

The CLI equivalent:

    OMP_NUM_THREADS=1 metarec bench tasks/synthetic-cold-start.toml --algorithms global,popularity,maml \\
        --seeds 2 --shots 3 --jobs 2 --out OUT

Run: python examples/bench_parallel_jobs.py
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
    "train.val_every=5",
    "train.val_tasks=16",
    "algorithm.meta_batch=4",
    "model.embedding_dim=8",
    "model.hidden=[8]",
]
scenario = load_scenario(scenario_file, small)
grid = dict(
    algorithms=["global", "popularity", "maml"], seeds=2, shots=[3], plots=False, verbose=False
)
measured = {"train_seconds", "eval_seconds", "adapt_ms_per_task", "peak_memory_mb"}
with tempfile.TemporaryDirectory() as tmp:
    rows = {}
    for jobs in (1, 2):
        res = run_bench(scenario, out=Path(tmp) / f"jobs{jobs}", jobs=jobs, **grid)
        print(f"--jobs {jobs}: {len(res.rows)} rows")
        rows[jobs] = [{k: v for k, v in r.items() if k not in measured} for r in res.rows]
    print("same rows (timing and memory fields aside):", rows[1] == rows[2])
