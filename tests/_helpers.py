"""Setup shared by several test modules (imported as ``_helpers``; pytest puts tests/ on the path)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.build import build_splits
from metarec.train.loop import train

COLD_START = str(Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml")
"""The synthetic cold-start scenario every helper below starts from."""

SMALL_TRAIN = [
    "data.synthetic.n_domains=6",
    "data.synthetic.n_users=80",
    "data.synthetic.n_items=120",
    "train.val_every=10",
    "train.val_tasks=64",
    "train.checkpoint_every=10",
    "train.progress=false",
    "algorithm.meta_batch=8",
]
"""A small synthetic cold-start run: ``--set`` overrides of :data:`COLD_START`."""


def cold_user_maes(
    out: Path, overrides: Sequence[str], seed: int, algorithms: Sequence[str] = ("global", "maml")
) -> dict[str, float]:
    """Meta-test MAE of each algorithm trained on :data:`COLD_START` with ``overrides`` and
    ``seed`` (split and training), every algorithm on the same table and splits; runs go to
    ``out/<algorithm><seed>``."""
    seeded = [*overrides, f"protocol.seed={seed}", f"train.seed={seed}"]
    sc0 = load_scenario(COLD_START, seeded)
    table = load_table(sc0.data)
    splits = build_splits(table, sc0.protocol)
    maes = {}
    for algo in algorithms:
        sc = load_scenario(COLD_START, [*seeded, f"algorithm.name={algo}"])
        run = out / f"{algo}{seed}"
        train(sc, run, table=table, splits=splits)
        maes[algo] = json.loads((run / "test_metrics.json").read_text())["states"]["meta-test"][
            "mae"
        ]
    return maes


TINY_RUN = [
    "train.steps=2",
    "train.val_every=2",
    "train.val_tasks=8",
    "train.progress=false",
    "data.synthetic.n_domains=2",
    "data.synthetic.n_users=60",
    "data.synthetic.n_items=80",
]
"""A two-step run of :data:`COLD_START` (the files of a run, not its quality, under test)."""


def tiny_run(folder: Path, overrides: Sequence[str] = TINY_RUN) -> Path:
    """Train :data:`COLD_START` with ``overrides`` into ``folder/run`` (no test evaluation)."""
    out = folder / "run"
    train(load_scenario(COLD_START, overrides), out, evaluate_test=False)
    return out


def two_domain_scenario(
    root: Path,
    *,
    n_users: int,
    n_source_items: int,
    n_target_items: int,
    n_source: int,
    model: str = "",
) -> Path:
    """A cold-domain-users scenario (source -> target, beta 0.3, 3 shots) over a two-domain
    synthetic CSV written to ``root``; ``model``: an optional ``[model]`` table's body."""
    frame = make_two_domain(
        n_users=n_users,
        n_source_items=n_source_items,
        n_target_items=n_target_items,
        n_source=n_source,
        n_target=10,
        seed=0,
    )
    frame.to_frame(raw_ids=True).to_csv(root / "two.csv", index=False)
    (root / "two.toml").write_text(
        f"""
name = "two-domain"
[data]
source = "csv"
path = "{root / "two.csv"}"
[data.columns]
domain = "domain"
[protocol]
split = "cold_domain_users"
target_domain = "target"
beta = 0.3
n_support = 3
n_query = 5
min_interactions = 8
max_interactions = "none"
"""
        + (f"[model]\n{model}" if model else "")
    )
    return root / "two.toml"
