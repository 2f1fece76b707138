"""Train a cold-start meta-learner (TaNP) into a run directory, then serve a new user from it.

The same two steps as the command line::

    metarec train tasks/synthetic-cold-start.toml --set algorithm.name=tanp --out runs/tanp
    metarec recommend --run runs/tanp --user new-user --support support.csv --json

Learner settings live in the scenario's ``[learners.tanp]`` table (``--set learners.tanp.latent=16``).

Run: python examples/serve_a_learner.py
"""

import os
import tempfile
from pathlib import Path

import pandas as pd

import metarec as mr
from metarec.methods import train_method

quick = os.environ.get("METAREC_EXAMPLE_QUICK") == "1"
root = Path(__file__).resolve().parent.parent if "__file__" in globals() else Path(".")
scenario_file = root / "tasks" / "synthetic-cold-start.toml"
scenario = mr.load_scenario(
    scenario_file,
    [
        "algorithm.name=tanp",
        f"train.steps={20 if quick else 300}",
        "train.progress=false",
        "learners.tanp.cluster_weight=0.1",  # TaNP's clustering regulariser (0: off)
    ],
)
with tempfile.TemporaryDirectory() as tmp:
    run = Path(tmp) / "tanp"
    result = train_method(scenario, run)  # fits on meta-train, selects on meta-val, saves the run
    print(f"trained tanp: meta-val {result.best_val}")
    served = mr.load_run(run)  # the run's encoders, settings and every tensor
    items = list(served.item_ids.values[:3])
    support = pd.DataFrame(
        {"user": "new-user", "item": items, "rating": [5.0, 4.0, 1.0]}
    )  # the new user's first ratings: one forward pass adapts TaNP to them
    for item, score in served.adapt(support, user="new-user").recommend("new-user", k=5):
        print(f"  {item}: {score:.3f}")
