"""metatower: a two-tower retrieval meta-learner that ranks the catalogue for a cold user.

The item tower embeds an item from its side features and its id (hidden at random during
meta-training, so an item nobody has interacted with is placed by its features); the user tower
reads the user's few support ratings. It is meta-trained with a softmax ranking loss over the
catalogue on k-shot tasks of the meta-train users and selected on meta-val nDCG@10; scoring a
whole catalogue is one matmul.

Here items have a genre (``i % 4``) and users one of four hidden tastes; items 80..99 are new:
no meta-train or meta-val user has touched them. A cold user who liked three genre-0 items gets a
top-10 of genre-0 items, and ranking only the new items puts the new genre-0 ones first.

Run: python examples/metatower_ranking.py
"""

import os

import numpy as np
import pandas as pd
import torch

import metarec.methods.learners  # noqa: F401  (registers the methods)
from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.pool import build_pool
from metarec.episodes.splits import MetaSplits
from metarec.methods import FitData, build_method

rng = np.random.default_rng(0)
rows = []
for user in range(200):  # each user likes 10 items of their genre (rated 5), 3 others (rated 2)
    genre = user % 4
    mine = np.arange(genre, 80, 4)
    others = np.setdiff1d(np.arange(80), mine)
    rows += [(user, int(i), 5.0) for i in rng.choice(mine, 10, replace=False)]
    rows += [(user, int(i), 2.0) for i in rng.choice(others, 3, replace=False)]
rows += [(199, int(i), 5.0) for i in (80, 84, 88)]  # the new items exist in one test user's rows
frame = pd.DataFrame(rows, columns=["user", "item", "rating"])
items = pd.DataFrame({"item": np.arange(100), "genre": [f"g{i % 4}" for i in range(100)]})
table = InteractionTable.from_frame(
    frame, Columns(), item_features=items, item_feature_specs=[FeatureSpec("genre")]
)
users = np.asarray(table.user_ids.decode(table.users), dtype=np.int64)
parts = {"meta-train": users < 140, "meta-val": (users >= 140) & (users < 170)}
parts["meta-test"] = users >= 170
pools = {n: build_pool(table, np.nonzero(m)[0], table.users, n, "user") for n, m in parts.items()}
new_items = table.item_ids.encode([str(i) for i in range(80, 100)])
splits = MetaSplits(table, pools, cold_items={"meta-test": new_items})

steps = 100 if os.environ.get("METAREC_EXAMPLE_QUICK") else 400
method = build_method(
    "metatower", None, steps=steps, val_every=50, dim=16, hidden=32, lr=1e-2, shots=(1, 3, 5)
)
fitted = method.fit(FitData(table, splits, seed=0))
log = fitted.training_log
print(f"loss {fitted.summary['loss']}, best meta-val step {log.best_step} of {log.steps}")
for row in log.rows:
    if "val" in row:
        val = row["val"]
        print(
            f"  step {row['step']:4d}: meta-val nDCG@10 {val['ndcg@10_all']:.4f} "
            f"(every id hidden: {val['ndcg@10_hidden_ids']:.4f})"
        )

# a cold user who liked three genre-0 items: score every item of the catalogue at once
liked = torch.as_tensor(table.item_ids.encode(["0", "4", "8"]))[None]  # (1, 3)
support = EpisodeSet(
    users=torch.zeros(1, 3, dtype=torch.long),
    items=liked,
    targets=torch.full((1, 3), 5.0),
    mask=torch.ones(1, 3, dtype=torch.bool),
)
scores = fitted.adapt(support).score_catalogue(torch.arange(table.n_items))  # (1, n_items)
scores[0, liked[0]] = -torch.inf  # not what the user rated
scores[0, 0] = -torch.inf  # the unknown-item slot
top = [int(x) for x in table.item_ids.decode(torch.topk(scores[0], 10).indices.numpy())]
print("top-10:", top)
print("genres:", [i % 4 for i in top])
new = torch.as_tensor(new_items)
order = torch.argsort(fitted.adapt(support).score_catalogue(new)[0], descending=True)
top_new = [int(x) for x in table.item_ids.decode(new[order[:5]].numpy())]
print("top-5 of the new items (scored through their genre only):", top_new)
print("their genres:", [i % 4 for i in top_new])
