"""Load your own interactions from CSV with a column mapping, with item side features.

Run: python examples/load_your_data.py
"""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.features import FeatureSpec
from metarec.data.readers import read_interactions
from metarec.data.table import Columns, InteractionTable

rng = np.random.default_rng(0)
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "ratings.csv"
    pd.DataFrame(
        {
            "customer": rng.integers(0, 50, 600),
            "sku": rng.integers(0, 80, 600),
            "stars": rng.integers(1, 6, 600),
            "when": pd.date_range("2024-01-01", periods=600, freq="h").astype(str),
            "market": rng.choice(["fr", "de", "it"], 600),
        }
    ).drop_duplicates(["customer", "sku", "market"]).to_csv(path, index=False)

    cols = Columns(user="customer", item="sku", rating="stars", timestamp="when", domain="market")
    # Ids keep their exact string form ("01" is not "1") unless declared numeric, as here, so
    # that they match the integer ids of the item feature frame below.
    table = read_interactions(path, cols, rating_scale=(1, 5), ids="numeric")
    print(table)

# Side features; items that nobody rated yet still get an index and their features.
frame = table.to_frame(raw_ids=True)
items = pd.DataFrame(
    {
        "item": np.arange(100),
        "brand": [f"b{i % 7}" for i in range(100)],
        "tags": ["sale|new" if i % 3 == 0 else "new" for i in range(100)],
    }
)
with_features = InteractionTable.from_frame(
    frame,
    Columns(domain="domain", timestamp="timestamp"),
    item_features=items,
    item_feature_specs=[FeatureSpec("brand"), FeatureSpec("tags", "multi")],
)
cold = with_features.item_ids.encode([99])[0]
print(
    "item 99 (never rated) has index",
    cold,
    "and brand code",
    with_features.item_features.categorical["brand"][cold, 0],
)

# Bad input gets a clear error naming the column, the value, the rule and the fix.
try:
    InteractionTable.from_frame(frame.assign(rating=frame["rating"] * 2), Columns(domain="domain"))
except ValueError as e:
    print("error:", e)
