"""Users cold in a target domain: the TMCDR meta-bridge, MAML/Reptile initialised from the source history,
and R2-D2 whose closed-form user head is solved over the source history and the target shots together.

Run: python examples/learners_cross_domain.py
"""

import os

import metarec.methods.learners  # noqa: F401  (registers the methods)
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import cold_domain_users_split
from metarec.methods import FitData, build_method
from metarec.methods.crossdomain import fit_method
from metarec.methods.learners import evaluate_fitted

quick = bool(os.environ.get("METAREC_EXAMPLE_QUICK"))
table = make_two_domain(n_users=200, seed=0)
splits = cold_domain_users_split(table, "target", beta=0.3, n_query=10, min_interactions=12)
tasks = SamplerConfig(n_support=3, n_query=10)  # each cold user brings 3 target ratings
test = splits.pools["meta-test"]
print(
    "no-transfer (target-only MF)   mae =",
    round(fit_method("no-transfer", table, splits).evaluate(test, tasks)["mae"], 4),
)
for name in ("metabridge", "maml-source-init", "reptile-source-init"):
    method = build_method(
        name,
        None,
        steps=5 if quick else 100,
        val_every=50,
        lr=3e-3,
        mf_epochs=2 if quick else 20,
        batch_size=256,
    )
    method.sampler = tasks
    fitted = method.fit(FitData(table, splits, seed=0))
    print(f"{name:30s} mae = {evaluate_fitted(fitted, table, test, tasks)['mae']:.4f}")

# r2d2-source: no MF pre-training; the body and the head's ridge strengths are meta-learned
method = build_method(
    "r2d2-source", None, steps=5 if quick else 300, val_every=50, lr=1e-2, dim=8, id_dropout=0.0
)
method.sampler = tasks
fitted = method.fit(FitData(table, splits, seed=0))
print(f"{'r2d2-source':30s} mae = {evaluate_fitted(fitted, table, test, tasks)['mae']:.4f}")
