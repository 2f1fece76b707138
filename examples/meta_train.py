"""Meta-train MAML on a scenario from Python (the same call `metarec train` makes) and compare
it with the global baseline on meta-test users.

Run: python examples/meta_train.py
"""

import json
import tempfile
from pathlib import Path

from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.train.loop import train

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
small = [
    "data.synthetic.n_domains=8",
    "train.steps=60",
    "train.val_every=30",
    "train.progress=false",
]
with tempfile.TemporaryDirectory() as tmp:
    base = load_scenario(scenario_file, small)
    table = load_table(base.data)
    splits = build_splits(table, base.protocol)  # built once, shared by both runs
    for algo in ("global", "maml"):
        sc = load_scenario(scenario_file, [*small, f"algorithm.name={algo}"])
        result = train(sc, Path(tmp) / algo, table=table, splits=splits)
        test = json.loads((Path(tmp) / algo / "test_metrics.json").read_text())["states"][
            "meta-test"
        ]
        print(
            f"{algo:>7}: best validation step {result.best_step}, meta-test MAE {test['mae']:.4f} "
            f"({result.tasks_per_s:.0f} tasks/s)"
        )
