"""Cold-start meta-learners on cold users: TaNP, MAMO (explicit ratings), LWA, NLBA (clicks), R2-D2 (both).

Each method is built by name from the registry, fitted through the method interface (trains on
meta-train, selects on meta-val), adapted to each test user's support in one call and scored.

Run: python examples/learners_cold_users.py
"""

import os

import metarec.methods.learners  # noqa: F401  (registers the methods)
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import random_split
from metarec.methods import FitData, build_method
from metarec.methods.learners import evaluate_fitted

steps = 10 if os.environ.get("METAREC_EXAMPLE_QUICK") else 150
for feedback, names, metric in (
    ("explicit", ["feature-global", "tanp", "mamo", "r2d2"], "mae"),
    ("implicit", ["feature-global", "lwa", "nlba", "r2d2"], "auc"),
):
    table = make_taste_table(
        n_users=100, n_items=80, per_user=25, taste=1.5, feedback=feedback, seed=0
    )
    splits = random_split(
        table, "user", (0.6, 0.2, 0.2), n_query=10, min_interactions=15, max_interactions=None
    )
    tasks = SamplerConfig(n_support=10, n_query=10)
    for name in names:
        method = build_method(name, None, steps=steps, val_every=max(steps // 2, 1), lr=3e-3, dim=8)
        method.sampler = (
            tasks  # the scenario's tasks; build_method(name, scenario) reads them from [protocol]
        )
        fitted = method.fit(FitData(table, splits, seed=0))
        # the same loop for every method: fitted.adapt(support).score(query users, query items)
        result = evaluate_fitted(fitted, table, splits.pools["meta-test"], tasks)
        print(
            f"{feedback:8s} {name:15s} {metric} = {result[metric]:.4f}  (best meta-val step {fitted.log['best_step']})"
        )
