"""A dataset of header-less per-domain files with its own train / test split, read by a
scenario with no preprocessing, and the shared-below-K cross-domain layout.

Run: python examples/multi_file_predefined.py
"""

import tempfile
from pathlib import Path

import numpy as np

from metarec.config import load_scenario
from metarec.data.sources import SourceFile, read_shared_below_k
from metarec.episodes.build import inspect_scenario

rng = np.random.default_rng(0)


def write(path: Path, users, n_items: int = 40, per_user: int = 10) -> None:
    lines = [
        f"{u}\t{i}\t{rng.integers(1, 6)}"
        for u in users
        for i in rng.choice(n_items, per_user, replace=False) + 1
    ]
    path.write_text("\n".join(lines) + "\n")


with tempfile.TemporaryDirectory() as tmp:
    d = Path(tmp)
    users = np.arange(1, 61)
    write(d / "books_train.dat", users)  # every user's books ratings train
    write(d / "movies_train.dat", users[20:])  # warm users' movies ratings train
    write(d / "movies_test.dat", users[:20])  # the dataset's own cold users in movies
    (d / "scenario.toml").write_text(f'''
name = "books-to-movies"
[data]
source = "csv"
format = "csv"          # any extension reads with an explicit format
sep = "\\t"
header = false
names = ["user", "item", "rating"]
namespace = ["item"]    # item 7 of books is not item 7 of movies
[[data.files]]
path = "{d}/books_train.dat"
domain = "books"
part = "train"
[[data.files]]
path = "{d}/movies_train.dat"
domain = "movies"
part = "train"
[[data.files]]
path = "{d}/movies_test.dat"
domain = "movies"
part = "test"
[protocol]
split = "predefined"    # evaluate on the dataset's own cold users
val_fraction = 0.2      # no valid file: 20% of the warm movies users validate
n_support = 3
n_query = 5
min_interactions = 6
max_interactions = "none"
''')
    report = inspect_scenario(load_scenario(d / "scenario.toml"))
    print(report["data"])
    for name, s in report["splits"].items():
        print(f"{name:<10} {s['tasks']:>4} tasks")
    print("leakage checks:", report["leakage_checks"])

    # Shared users 0..K-1, domain-local users from K on (K = 30 here).
    write(d / "a.txt", range(0, 50))  # 30 shared + 20 local to a
    write(d / "b.txt", range(0, 40))  # 30 shared + 10 local to b
    table = read_shared_below_k([SourceFile(d / "a.txt", "a"), SourceFile(d / "b.txt", "b")], 30,
                                header=False, names=["user", "item", "rating"],
                                feedback="explicit", rating_scale=(1, 5))  # fmt: skip
    print("shared-below-K users:", table.n_users - 1, "(30 shared + 20 + 10 local)")
    try:
        read_shared_below_k([SourceFile(d / "a.txt", "a"), SourceFile(d / "b.txt", "b")], None,
                            header=False, names=["user", "item", "rating"])  # fmt: skip
    except ValueError as e:
        print("error:", str(e)[:120], "...")
