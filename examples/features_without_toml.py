"""The same feature-using cold-start model as examples/features_from_scenario.py, from Python
alone: no TOML file, the scenario's sections given as dicts (the same keys a file has, checked
the same way: a misspelt key is an error with the close match).

MovieLens-100K's raw files: interactions from u.data, user features from u.user, item genres
from the one-hot columns of u.item (mr.FeatureFile entries, or plain dicts with the same keys).

Run: METAREC_DATA=/path/to/datasets python examples/features_without_toml.py
(without METAREC_DATA it writes small files in the same layout, so it runs anywhere).
"""

import os
import tempfile
from pathlib import Path

import numpy as np

import metarec as mr

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western"]  # fmt: skip


def write_lookalike(d: Path, n_users: int = 300, n_items: int = 400, seed: int = 0) -> None:
    """Files in the ml-100k layout whose ratings depend on the user's gender and the item's genres."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    gender = rng.choice(["M", "F"], n_users)
    (d / "u.user").write_text(
        "".join(f"{u + 1}|{rng.integers(18, 70)}|{gender[u]}|student|{10000 + u}\n" for u in range(n_users))
    )  # fmt: skip
    flags = (rng.random((n_items, len(GENRES))) < 0.15).astype(int)
    (d / "u.item").write_text(
        "".join(
            f"{i + 1}|Movie {i + 1}|01-Jan-1995||url|" + "|".join(map(str, flags[i])) + "\n"
            for i in range(n_items)
        )
    )  # fmt: skip
    rows = []
    for u in range(n_users):
        taste = 1.0 if gender[u] == "F" else -1.0
        for i in rng.choice(n_items, rng.integers(20, 60), replace=False):
            score = 3 + taste * (flags[i, 14] - flags[i, 1]) + rng.normal(0, 0.5)
            rows.append(
                f"{u + 1}\t{i + 1}\t{int(np.clip(round(score), 1, 5))}\t{880000000 + len(rows)}\n"
            )
    (d / "u.data").write_text("".join(rows))


quick = os.environ.get("METAREC_EXAMPLE_QUICK") == "1"
with tempfile.TemporaryDirectory() as tmp:
    root = Path(os.environ.get("METAREC_DATA", tmp)) / "movielens-100k" / "ml-100k"
    if not (root / "u.data").is_file():
        root = Path(tmp) / "ml-100k"
        write_lookalike(root)
        print(f"METAREC_DATA not set: using files in the ml-100k layout written to {root}")

    scenario = mr.Scenario(
        name="ml100k-python",
        data={
            "source": "csv",
            "path": str(root / "u.data"),
            "format": "tsv",
            "header": False,
            "names": ["user", "item", "rating", "timestamp"],
            "columns": {"timestamp": "timestamp"},
            "user_features": [
                mr.FeatureFile(
                    str(root / "u.user"),
                    id="user",
                    sep="|",
                    format="csv",
                    header=False,
                    names=("user", "age", "gender", "occupation", "zip"),
                    columns={"age": "numeric", "gender": "categorical", "occupation": "categorical"},
                )
            ],
            "item_features": [
                {
                    "path": str(root / "u.item"),
                    "id": "item",
                    "format": "csv",
                    "sep": "|",
                    "header": False,
                    "encoding": "latin-1",
                    "names": ["item", "title", "release", "video", "url", *GENRES],
                    "flags": {"genre": GENRES},  # 19 one-hot columns -> one multi-valued feature
                }
            ],
        },
        protocol={"n_support": 10, "n_query": 10, "max_interactions": "none"},
        model={"name": "melu", "embedding_dim": 16, "hidden": [32, 32]},
        algorithm={"name": "maml", "inner_steps": 2, "inner_lr": 0.05, "meta_batch": 32},
        train={"steps": 40 if quick else 300, "outer_lr": 0.003, "val_every": 20 if quick else 50,
               "progress": False},
    )  # fmt: skip
    res = mr.train_method(scenario, Path(tmp) / "run")
    print(f"trained {res.steps} steps; best meta-val MAE {res.best_val['mae']:.3f}")

    run = mr.load_run(Path(tmp) / "run")
    items = run.item_ids.values
    rec = run.adapt([("new-user", items[0], 5.0), ("new-user", items[1], 1.0)])
    print(
        "top 3 for a user the run never saw:",
        [(i, round(s, 2)) for i, s in rec.recommend("new-user", k=3)],
    )

    try:  # a misspelt key is refused with the close match, as in a scenario file
        mr.Scenario(protocol={"n_suport": 5})
    except mr.ConfigError as e:
        print("error:", e)
