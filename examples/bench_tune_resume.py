"""Tune every algorithm on meta-val, then run the seeds; stop half-way and resume.

`metarec bench --tune N` gives each algorithm N configurations of its settings (trial 0: its own
values), trains each on seed 0 and keeps the one with the best meta-val score; the test states
are never seen by a trial. `--resume` continues a benchmark that was interrupted: the finished
(seed, algorithm) runs and tuning trials are kept, the rest are run.

The CLI equivalent:

    metarec bench tasks/synthetic-cold-start.toml --algorithms global,maml --seeds 2 --tune 3 --out OUT
    metarec bench ... --resume     # after an interruption: the same command plus --resume

Run: python examples/bench_tune_resume.py
"""

import json
import tempfile
from pathlib import Path

from metarec.bench import run_bench
from metarec.config import load_scenario

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
small = [
    "data.synthetic.n_domains=6",
    "data.synthetic.n_users=80",
    "data.synthetic.n_items=120",
    "train.steps=40",
    "train.val_every=20",
    "train.val_tasks=16",
    "algorithm.meta_batch=4",
    "model.embedding_dim=8",
    "model.hidden=[8]",
]
scenario = load_scenario(scenario_file, small)
grid = dict(algorithms=["global", "maml"], shots=[3], tune=2, plots=False, verbose=False)
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "bench"
    done = run_bench(scenario, seeds=2, out=out, **grid)
    trials = [json.loads(x) for x in (out / "tuning.jsonl").read_text().splitlines()]
    print(f"{len(trials)} tuning trials; every seed ran the chosen configuration:")
    for algo in grid["algorithms"]:
        t = next(r["tuned"] for r in done.rows if r["algorithm"] == algo)
        scores = ", ".join(f"{x['score']:.4f}" for x in t["trials"])
        print(
            f"  {algo:>7}: meta-val {t['metric']} per trial [{scores}] -> trial {t['trial']}: {t['values']}"
        )
    # the same command with resume=True (--resume) keeps every finished run and trial
    again = run_bench(scenario, seeds=2, out=out, resume=True, **grid)
    meta = json.loads((out / "bench.json").read_text())
    print(
        f"resumed: {meta['resumed_runs']} finished runs kept, {len(again.rows)} rows, nothing re-run"
    )
