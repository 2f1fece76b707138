"""Data fingerprints: the same data gives the same fingerprint, and every change is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _helpers import TINY_RUN

from metarec._errors import CheckpointError, py
from metarec.config import load_scenario
from metarec.data.encoding import IdEncoder
from metarec.data.load import load_table
from metarec.data.table import InteractionTable
from metarec.recommend.load import load_adapted, load_run
from metarec.runs.checkpoint import load_table_meta, save_table_meta
from metarec.runs.fingerprint import (
    FINGERPRINT_FILE,
    check_run_encoders,
    describe_changes,
    fingerprint,
    read_fingerprint,
    write_fingerprint,
)
from metarec.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = [*TINY_RUN, "model.name=gmf"]


@pytest.fixture(scope="module")
def table() -> InteractionTable:
    return load_table(
        load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", overrides=OVERRIDES).data
    )


def _with_items(t: InteractionTable, values: list) -> InteractionTable:
    return InteractionTable(
        t.users,
        t.items,
        t.ratings,
        t.domains,
        t.timestamps,
        t.user_ids,
        IdEncoder(values, name="item"),
        t.domain_ids,
        feedback=t.feedback,
        rating_scale=t.rating_scale,
        user_features=t.user_features,
        item_features=t.item_features,
    )


def test_same_data_same_fingerprint_and_encoders_survive_json(table, tmp_path) -> None:
    a = fingerprint(table)
    assert a == fingerprint(
        load_table(
            load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", overrides=OVERRIDES).data
        )
    )
    assert a["rows"] == len(table.users) and a["items"] == len(table.item_ids) - 1
    save_table_meta(table, tmp_path)
    back = fingerprint(load_table_meta(tmp_path))
    for key in ("user_ids", "item_ids", "domain_ids", "user_features", "item_features"):
        assert back["sha256"][key] == a["sha256"][key], key


def test_changes_are_named(table, tmp_path) -> None:
    write_fingerprint(tmp_path, table)
    save_table_meta(table, tmp_path)
    saved = read_fingerprint(tmp_path)
    assert describe_changes(saved, fingerprint(table), tmp_path, table) == []
    fewer = table.subset(np.arange(len(table.users)) >= 10)
    assert f"{len(table.users):,} -> {len(fewer.users):,} interactions" in describe_changes(
        saved, fingerprint(fewer), tmp_path, fewer
    )
    ids = table.item_ids.values
    added = _with_items(table, [*ids, "new-1", "new-2"])
    assert "2 item id(s) added ('new-1', 'new-2')" in describe_changes(
        saved, fingerprint(added), tmp_path, added
    )
    renamed = _with_items(table, ["r0", *ids[1:]])
    assert f"1 item id(s) renamed ({py(ids[0])!r} -> 'r0')" in describe_changes(
        saved, fingerprint(renamed), tmp_path, renamed
    )
    removed = _with_items(table, ids[:-1])
    assert f"1 item id(s) removed ({py(ids[-1])!r})" in describe_changes(
        saved, fingerprint(removed), tmp_path, removed
    )
    (tmp_path / FINGERPRINT_FILE).write_text("[]")
    with pytest.raises(CheckpointError, match=r"fingerprint.json': damaged"):
        read_fingerprint(tmp_path)


def test_replaced_encoders_are_refused_by_load_run_and_adapted_dirs_keep_the_fingerprint(
    table, tmp_path
) -> None:
    sc = load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", overrides=OVERRIDES)
    run = tmp_path / "run"
    train(sc, run, table=table, evaluate_test=False)
    meta = load_run(run)
    adapted = meta.adapt([("cold", meta.item_ids.values[0], 4.0)]).save(tmp_path / "adapted")
    assert read_fingerprint(adapted) == read_fingerprint(run)
    load_adapted(adapted)
    bad = Path(shutil.copytree(run, tmp_path / "bad"))
    enc = json.loads((bad / "encoders.json").read_text())
    enc["item_ids"]["values"][0], enc["item_ids"]["values"][1] = (
        enc["item_ids"]["values"][1],
        enc["item_ids"]["values"][0],
    )
    (bad / "encoders.json").write_text(json.dumps(enc))
    with pytest.raises(
        CheckpointError,
        match=r"encoders.json': the item ids differ from those the run's weights were trained "
        r"with \(fingerprint.json\); .*ids would map to the wrong embeddings",
    ):
        load_run(bad)
    with pytest.raises(CheckpointError, match="item ids differ"):
        check_run_encoders(bad, load_table_meta(bad))
