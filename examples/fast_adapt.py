"""Fast-adapt a meta-trained model to cold users from Python: load the run, adapt to a new
cohort's few ratings (one batched call), predict, recommend, save and load the adapted model.

Run: python examples/fast_adapt.py
"""

import tempfile
import warnings
from pathlib import Path

from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.recommend.load import load_adapted, load_run
from metarec.train.loop import train

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
small = [
    "data.synthetic.n_domains=4",
    "train.steps=20",
    "train.val_every=10",
    "train.val_tasks=32",
    "train.progress=false",
]
sc = load_scenario(scenario_file, small)
table = load_table(sc.data)
splits = build_splits(table, sc.protocol)

with tempfile.TemporaryDirectory() as tmp:
    # 1. Meta-train briefly (what `metarec train` does) and load the run for serving.
    train(sc, Path(tmp) / "run", table=table, splits=splits, evaluate_test=False)
    meta = load_run(Path(tmp) / "run")
    print(meta)

    # 2. Cold users: meta-test users, never seen in meta-training. Each brings 5 ratings.
    frame = table.to_frame(raw_ids=True)
    cold = table.user_ids.decode(splits.pools[splits.states[0]].units[:200])
    support = frame[frame["user"].isin(cold)].groupby("user").head(5)[["user", "item", "rating"]]
    rec = meta.adapt_many(support, steps=5)  # 200 users, one vmapped call
    print(f"adapted {rec.n_tasks} cold users on {len(support)} ratings")

    # 3. Predict and recommend by raw id (their support items are left out of the top-k).
    user = cold[0]
    items = list(frame["item"].drop_duplicates().iloc[:5])
    print(
        f"user {user}: predicted ratings of items {items}: {[round(float(x), 2) for x in rec.predict(user, items)]}"
    )
    for item, score in rec.recommend(user, k=5):
        print(f"  recommend item {item}: {score:.3f}")

    # 4. A single brand-new user with three ratings, as (item, rating) pairs.
    one = meta.adapt([(items[0], 5.0), (items[1], 1.0), (items[2], 4.0)], user="new-user-42")
    print("new-user-42:", [i for i, _ in one.recommend("new-user-42", k=5)])

    # 5. No ratings at all: a warning, and the meta-learned initialisation serves the user.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        empty = meta.adapt([], user="silent-user")
    print(f"empty support -> {caught[0].message}")
    print("silent-user:", [i for i, _ in empty.recommend("silent-user", k=3)])

    # 6. Save the adapted model; load it back and serve the same recommendations.
    out = rec.save(Path(tmp) / "adapted")
    back = load_adapted(out)
    assert back.recommend(user, k=5) == rec.recommend(user, k=5)
    print(f"saved and reloaded {out.name}/: same top-5 for user {user}")
