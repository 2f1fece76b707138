"""Cold items placed by their text (``content-bias``), and a text-feature run served with no
encoder installed.

1. ``content-bias`` fits a ridge prior from the items' content (text embeddings, attributes) to
   their mean rating on warm items, and adapts a per-user offset from the support: an item nobody
   rated in meta-train is scored by what its title says.
2. A run trained with text features saves the encoded texts (``text.pt``) beside its weights, so
   ``load_run`` (and ``metarec recommend`` / ``adapt`` / ``serve``) need no text encoder.

A tiny stand-in encoder keeps the example independent of ``metarec[text]``.

Run: python examples/text_cold_items.py
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metarec.config import load_scenario
from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.pool import build_pool
from metarec.episodes.sampler import SamplerConfig, pin_queries
from metarec.episodes.splits import MetaSplits
from metarec.methods import FitData, build_method
from metarec.metrics.evaluate import evaluate_fitted
from metarec.recommend.load import load_run
from metarec.train.loop import train

QUICK = os.environ.get("METAREC_EXAMPLE_QUICK") == "1"
WORDS = ("good", "bad", "space", "love")


class Words:
    """A stand-in encoder (bag of words); drop ``encoder=`` to use the pretrained default."""

    name = "example-words"

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([[t.split().count(w) for w in WORDS] for t in texts], dtype=np.float32)


rng = np.random.default_rng(0)
moods = rng.choice(["good", "bad"], size=60)
off = rng.normal(0, 0.5, size=120)
rows = [
    (u + 1, i + 1, float(np.clip(3 + (0.9 if moods[i] == "good" else -0.9) + off[u], 1, 5)))
    for u in range(120)
    for i in rng.choice(60, size=20, replace=False)
]
with tempfile.TemporaryDirectory() as tmp:
    os.environ["METAREC_CACHE"] = tmp  # where text features cache their arrays
    table = InteractionTable.from_frame(
        pd.DataFrame(rows, columns=["user", "item", "rating"]),
        Columns(),
        rating_scale=(1.0, 5.0),
        item_features=pd.DataFrame(
            {"item": np.arange(1, 61), "title": [f"{m} {rng.choice(WORDS[2:])}" for m in moods]}
        ),
        item_feature_specs=[FeatureSpec("title", "text", encoder=Words())],  # type: ignore[arg-type]
    )
    users = np.asarray(table.user_ids.decode(table.users))
    cold = np.asarray(table.item_ids.decode(table.items)) > 40  # items 41..60: never in meta-train
    masks = {
        "meta-train": (users <= 80) & ~cold,
        "meta-val": (users > 80) & (users <= 100) & ~cold,
        "item-cold": (users > 100) & cold,
    }
    pools = {}
    for name, mask in masks.items():
        p = build_pool(table, np.nonzero(mask)[0], table.users, name, "user", min_interactions=4)
        pools[name] = p if name == "meta-train" else pin_queries(table, p, 3)
    splits = MetaSplits(
        table, pools, states=["item-cold"], disjoint_units=["meta-val", "item-cold"]
    )
    scfg = SamplerConfig(n_support=None, n_query=3)
    for name in ("popularity", "content-bias"):
        fitted = build_method(name, None).fit(FitData(table, splits))
        mae = evaluate_fitted(fitted, table, splits["item-cold"], scfg, dtype=torch.float64)["mae"]
        print(f"{name:>12}: item-cold MAE {mae:.3f}")

    # 2. a text-feature run loads without the encoder
    sc = load_scenario(
        Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml",
        [
            f"train.steps={2 if QUICK else 20}",
            "train.val_every=2",
            "train.val_tasks=8",
            "train.progress=false",
            "protocol.n_support=5",
            "protocol.n_query=5",
            "model.embedding_dim=4",
            "model.hidden=[8]",
        ],
    )
    train(sc, os.path.join(tmp, "run"), table=table, evaluate_test=False)
    meta = load_run(os.path.join(tmp, "run"))  # text.pt holds the encoded titles
    print(
        f"loaded a text run (text.pt saved: {os.path.isfile(os.path.join(tmp, 'run', 'text.pt'))}); "
        f"cold item 41 scores {meta.initial().predict(1, [41])[0]:.2f} for user 1"
    )
