"""The short-import style: one `import metarec as mr`, a scenario, any method by name, serving.

Run: python examples/short_import.py
"""

import os
import tempfile
from pathlib import Path

import metarec as mr

SCENARIO = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"

quick = os.environ.get("METAREC_EXAMPLE_QUICK") == "1"
steps = 10 if quick else 200
small = [
    f"train.steps={steps}",
    f"train.val_every={steps}",
    "train.val_tasks=64",
    "train.progress=false",
    "data.synthetic.n_domains=6",
]
with tempfile.TemporaryDirectory() as tmp:
    for name in ("maml", "popularity"):
        sc = mr.load_scenario(SCENARIO, [*small, f"algorithm.name={name}"])
        res = mr.train_method(sc, f"{tmp}/{name}", evaluate_test=False)
        meta = mr.load_run(f"{tmp}/{name}")
        items = meta.item_ids.values
        rec = meta.adapt([("new-user", items[0], 5.0), ("new-user", items[1], 1.0)])
        print(
            f"{name:<10} best meta-val MAE {res.best_val['mae']:.3f}; top 3 for a new user:",
            [(i, round(s, 2)) for i, s in rec.recommend("new-user", k=3)],
        )
print("registered methods:", ", ".join(mr.method_names()[:8]), "...")
