"""Item warm-up: a base model, MetaEmb and MWUF on new items (cold, then warm-up phases a, b, c).

Run: python examples/learners_item_warmup.py
"""

import os

import metarec.methods.learners  # noqa: F401  (registers the methods)
from metarec.config.warmup import WarmupConfig
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.warmup import item_warmup_split
from metarec.methods import FitData, build_method
from metarec.metrics.warmup import evaluate_warmup

quick = bool(os.environ.get("METAREC_EXAMPLE_QUICK"))
table = make_taste_table(
    n_users=300, n_items=60, per_user=30, feedback="implicit", item_bias=0.6, seed=0
)
cfg = WarmupConfig(k=5, min_test=20, new_fraction=0.4)
splits = item_warmup_split(table, cfg)  # old items train; new items: phases a/b/c + test rows
for name in ("warmup-base", "metaemb", "mwuf"):
    method = build_method(
        name,
        None,
        steps=0 if name == "warmup-base" else (5 if quick else 150),
        val_every=50,
        lr=3e-3,
        pretrain_epochs=1 if quick else 5,
        batch_size=256,
    )
    method.sampler = SamplerConfig(n_support=cfg.k, n_query=cfg.k)  # meta-training batches a and b
    fitted = method.fit(FitData(table, splits, seed=0))
    res = evaluate_warmup(fitted, table, splits.pools["meta-test"], cfg.k)
    print(
        name.ljust(12),
        "  ".join(f"{p}: auc {r['auc']:.3f} logloss {r['logloss']:.3f}" for p, r in res.items()),
    )
