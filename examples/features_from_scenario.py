"""Your own files with user and item features, from a scenario file alone: MovieLens-100K's raw
GroupLens files (u.data, u.user, u.item) train a cold-start model that uses the features.

The scenario, tasks/ml100k-raw-features.toml, reads the three files with [data] and
[[data.user_features]] / [[data.item_features]] entries (path, id column, feature columns and
their kinds); nothing else is needed. The same from the shell:

    metarec tasks inspect ml100k-raw-features
    metarec train ml100k-raw-features --out runs/ml100k-features

Run: METAREC_DATA=/path/to/datasets python examples/features_from_scenario.py
(without METAREC_DATA it writes small files in the same layout, so it runs anywhere).
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from metarec.cli.main import main

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western"]  # fmt: skip


def write_lookalike(root: Path, n_users: int = 300, n_items: int = 400, seed: int = 0) -> None:
    """Files in the ml-100k layout whose ratings depend on the user's gender and the item's genres."""
    rng = np.random.default_rng(seed)
    d = root / "movielens-100k" / "ml-100k"
    d.mkdir(parents=True)
    gender = rng.choice(["M", "F"], n_users)
    jobs = ["artist", "doctor", "engineer", "student", "writer"]
    (d / "u.user").write_text(
        "".join(f"{u + 1}|{rng.integers(18, 70)}|{gender[u]}|{rng.choice(jobs)}|{10000 + u}\n" for u in range(n_users))
    )  # fmt: skip
    flags = (rng.random((n_items, len(GENRES))) < 0.15).astype(int)
    lines = []
    for i in range(n_items):
        f = "|".join(str(x) for x in flags[i])
        lines.append(f"{i + 1}|Movie {i + 1} (1995)|01-Jan-1995||http://example.org/{i + 1}|{f}\n")
    (d / "u.item").write_text("".join(lines), encoding="latin-1")
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
    data_root = os.environ.get("METAREC_DATA")
    if not data_root or not (Path(data_root) / "movielens-100k" / "ml-100k" / "u.data").is_file():
        data_root = tmp
        write_lookalike(Path(tmp))
        print(f"METAREC_DATA not set: using files in the ml-100k layout written to {tmp}")
    args = ["--data-root", data_root, "--set", "train.progress=false"]
    if quick:
        args += ["--set", "train.steps=40", "--set", "train.val_every=20"]
    print("$ metarec tasks inspect ml100k-raw-features")
    main(["tasks", "inspect", "ml100k-raw-features", *args[:2]])
    print("$ metarec train ml100k-raw-features --out RUN")
    main(["train", "ml100k-raw-features", "--out", str(Path(tmp) / "run"), *args])
