"""Serve one cold user the way `metarec recommend --support` does: a trained run directory, a
CSV of the user's few ratings, an on-the-fly adaptation and a top-10 list as JSON.

Equivalent shell commands:

    metarec train synthetic-cold-start --out RUN --set train.steps=30
    metarec recommend --run RUN --user 999999 --support five_ratings.csv --json

Run: python examples/cold_user_recommend.py
"""

import json
import tempfile
from pathlib import Path

from metarec.cli.main import main

with tempfile.TemporaryDirectory() as tmp:
    run = Path(tmp) / "run"
    main(
        [
            "train",
            "synthetic-cold-start",
            "--out",
            str(run),
            "--set",
            "data.synthetic.n_domains=4",
            "--set",
            "train.steps=20",
            "--set",
            "train.val_every=10",
            "--set",
            "train.val_tasks=32",
            "--set",
            "train.progress=false",
        ]
    )

    # Five ratings of a user the run has never seen (items from the run's catalogue).
    items = json.loads((run / "encoders.json").read_text())["item_ids"]["values"][:5]
    csv = Path(tmp) / "five_ratings.csv"
    csv.write_text(
        "user,item,rating\n" + "".join(f"999999,{i},{r}\n" for i, r in zip(items, [5, 4, 1, 2, 5]))
    )

    print("$ metarec recommend --run RUN --user 999999 --support five_ratings.csv --json")
    main(["recommend", "--run", str(run), "--user", "999999", "--support", str(csv), "--json"])
    print("$ metarec recommend --run RUN --user 999999 --support five_ratings.csv --k 5")
    main(["recommend", "--run", str(run), "--user", "999999", "--support", str(csv), "--k", "5"])
