"""Runs that survive mistakes and accidents: one writer per run directory, resume after a kill
(even before the first checkpoint), --overwrite, refused changed data, checked checkpoints, and
serving that never returns NaN (or, by option, falls back to the meta-learned initialisation).

Run: python examples/safe_runs.py
"""

import shutil
import tempfile
import warnings
from pathlib import Path

from metarec._errors import CheckpointError, ConfigError, DataError
from metarec._io.lock import RunLock
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.recommend.load import load_run
from metarec.train.loop import train

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
small = [
    "data.synthetic.n_domains=2",
    "data.synthetic.n_users=60",
    "data.synthetic.n_items=80",
    "train.steps=8",
    "train.val_every=4",
    "train.checkpoint_every=4",
    "train.val_tasks=8",
    "train.progress=false",
]
sc = load_scenario(scenario_file, small)
table = load_table(sc.data)
splits = build_splits(table, sc.protocol)

with tempfile.TemporaryDirectory() as tmp:
    run = Path(tmp) / "run"
    # 1. One writer per run directory: while a process holds it, a second one is refused at once.
    with RunLock(run, what="run directory", option="--out"):
        try:
            train(sc, run, table=table, splits=splits)
        except ConfigError as e:
            print(f"second writer refused: {str(e)[:110]}...")

    # 2. Stopped after 4 steps (as if killed), then resumed; --resume on an empty folder starts from step 0.
    train(sc, run, table=table, splits=splits, stop_after=4, evaluate_test=False)
    res = train(sc, run, table=table, splits=splits, resume=True, evaluate_test=False)
    print(f"resumed to step {res.steps}")
    res = train(sc, run, table=table, splits=splits, overwrite=True, evaluate_test=False)
    print(f"--overwrite: trained afresh to step {res.steps}")

    # 3. Changed data: --resume refuses and says what changed.
    fewer = table.subset(table.ratings > 1.5)
    try:
        train(sc, run, table=fewer, splits=build_splits(fewer, sc.protocol), resume=True)
    except DataError as e:
        print(f"changed data refused: {str(e)[:140]}...")

    # 4. Serving: a diverging learning rate is an error, or the initialisation with a warning.
    meta = load_run(run)
    support = [("new-user", i, 5.0) for i in meta.item_ids.values[:3]]
    try:
        meta.adapt(support, lr=1e30)
    except ConfigError as e:
        print(f"diverged adaptation refused: {str(e)[:100]}...")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = meta.adapt(support, lr=1e30, on_diverge="fallback")
    print(
        f"fallback: {len(rec.recommend('new-user', k=5))} items from the initialisation ({len(caught)} warning)"
    )

    # 5. A damaged checkpoint (one flipped byte) is caught by its checksum.
    copy = Path(shutil.copytree(run, Path(tmp) / "copy"))
    best = copy / "checkpoints" / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0x01
    best.write_bytes(bytes(data))
    try:
        load_run(copy)
    except CheckpointError as e:
        print(f"damaged checkpoint refused: {str(e)[:100]}...")
