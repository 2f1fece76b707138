"""The item attribute graph reaches items nobody rated: a meta-learnable LightGCN.

Items are linked to their genre nodes; users to the items they rated in meta-train. An item with
no interactions still receives its genre's signal after propagation, so its score is not a
constant. Meta-training is the usual MAML over user tasks (``build_model("lightgcn", table)``).

Run: python examples/graph_item_attributes.py
"""

import numpy as np
import pandas as pd
import torch

from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable
from metarec.models import build_model

rng = np.random.default_rng(0)
genres = np.array(["action", "comedy", "drama"])
item_genre = genres[rng.integers(0, 3, 40)]
inter = pd.DataFrame(
    {"user": rng.integers(1, 30, 300), "item": rng.integers(1, 36, 300)}
).drop_duplicates()
taste = {g: rng.normal() for g in genres}
inter["rating"] = [
    float(np.clip(3 + taste[item_genre[i - 1]] + rng.normal(0, 0.3), 1, 5)) for i in inter["item"]
]
feats = pd.DataFrame({"item": np.arange(1, 41), "genre": item_genre})  # items 36..40: never rated
table = InteractionTable.from_frame(
    inter, Columns(), item_features=feats, item_feature_specs=[FeatureSpec("genre")]
)

model = build_model("lightgcn", table, embedding_dim=8, n_layers=2)
rows = np.arange(len(table))  # in a benchmark: the meta-train pool's rows only
model.set_graph(table.users[rows], table.items[rows]).set_known(
    users=table.users, items=table.items
)
opt = torch.optim.Adam(model.parameters(), lr=0.05)
u, i, y = (
    torch.from_numpy(a) for a in (table.users, table.items, table.ratings.astype(np.float32))
)
for _ in range(100):
    loss = (model(u, i) - y).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"train MSE {loss.item():.3f}; graph: {model.graph.n_edges} edges over {model.n_nodes} nodes")
cold = table.item_ids.encode(np.arange(36, 41))
with torch.no_grad():
    scores = model(torch.ones(5, dtype=torch.long), torch.from_numpy(cold))
for k, item in enumerate(range(36, 41)):
    print(
        f"never-rated item {item} ({item_genre[item - 1]}): score {scores[k]:.3f} "
        f"(user 1's taste for {item_genre[item - 1]}: "
        f"{taste[item_genre[item - 1]]:+.2f})"
    )
