"""The item warm-up protocol as a scenario key (``[warmup]``, ``--set warmup.k=...``) run by
``metarec bench`` (AUC and logloss per phase), and MAMO's time split as ``protocol.split``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import metarec.methods.learners  # noqa: F401  (registers warmup-base, metaemb, mwuf)
from metarec._errors import ConfigError
from metarec.bench import run_bench
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.episodes.splits import melu_time_split
from metarec.episodes.warmup import PHASES, click_table, item_warmup_split
from metarec.methods import FitData, build_method
from metarec.metrics.warmup import evaluate_warmup

WARMUP = [
    "data.synthetic.n_domains=1",
    "data.synthetic.n_users=160",
    "data.synthetic.n_items=30",
    "data.synthetic.density=0.3",
    "warmup.k=3",
    "warmup.min_test=5",
    "train.steps=4",
    "train.val_every=2",
    "train.val_tasks=16",
    "algorithm.meta_batch=4",
    "model.embedding_dim=8",
    "protocol.n_support=3",
    "protocol.n_query=3",
    'metrics.names=["auc", "logloss"]',  # the warm-up protocol's clicks are implicit feedback
]


def warmup_scenario(*extra: str):
    return load_scenario("tasks/synthetic-cold-start.toml", [*WARMUP, *extra])


def test_warmup_section_is_a_validated_scenario_key() -> None:
    sc = warmup_scenario("warmup.k=4")
    assert sc.warmup is not None and sc.warmup.k == 4 and sc.warmup.threshold == 4.0
    assert load_scenario("tasks/synthetic-cold-start.toml").warmup is None
    with pytest.raises(ConfigError, match=r"unknown key 'warmup.kk' \(did you mean 'k'\?\)"):
        warmup_scenario("warmup.kk=4")
    with pytest.raises(ConfigError, match=r"warmup.k=0.*need k >= 1"):
        warmup_scenario("warmup.k=0")
    with pytest.raises(
        ConfigError, match=r"warmup.new_fraction=1.5: must lie strictly between 0 and 1"
    ):
        warmup_scenario("warmup.new_fraction=1.5")


def test_bench_runs_the_warmup_phases_as_the_protocol_defines_them(tmp_path: Path) -> None:
    sc = warmup_scenario()
    res = run_bench(
        sc,
        algorithms=["warmup-base", "popularity"],
        seeds=1,
        out=tmp_path / "b",
        verbose=False,
        plots=False,
    )
    assert [(r["algorithm"], r["state"], r["n_support"]) for r in res.rows] == [
        (a, p, 3 * i) for a in ("warmup-base", "popularity") for i, p in enumerate(PHASES)
    ]
    assert all(
        {"auc", "logloss"} <= set(r["metrics"]) and r["shots"] == "default" for r in res.rows
    )
    # the same numbers as the protocol run by hand: clicks, the item split of seed 0, a fit, the phases
    table = click_table(load_table(sc.data), sc.warmup.threshold)
    splits = item_warmup_split(table, replace(sc.warmup, seed=0))
    fitted = build_method("warmup-base", sc).fit(FitData(table, splits, seed=0))
    direct = evaluate_warmup(fitted, table, splits.pools["meta-test"], 3)
    for r in res.rows[: len(PHASES)]:
        assert r["metrics"]["auc"] == pytest.approx(direct[r["state"]]["auc"], abs=1e-9)
        assert r["metrics"]["logloss"] == pytest.approx(direct[r["state"]]["logloss"], abs=1e-9)
    text = res.report.read_text()
    assert "## Item warm-up" in text and "| algorithm | cold | warm-a | warm-b | warm-c |" in text
    assert "logloss ↓" in text and "protocol: split=item-warmup, unit=item" in text
    meta = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert meta["protocol"]["k"] == 3 and meta["shots"] == ["default"]


def test_warmup_bench_refuses_shots_from_the_cli(tmp_path: Path, capsys) -> None:
    args = [
        "bench",
        "tasks/synthetic-cold-start.toml",
        "--out",
        str(tmp_path / "b"),
        "--algorithms",
        "warmup-base",
    ]
    args += sum((["--set", s] for s in WARMUP), [])
    assert main([*args, "--shots", "5"]) == 2
    assert (
        "shots=[5]: an item warm-up scenario's supports are its phases (warmup.k = 3"
        in capsys.readouterr().err
    )


def test_melu_time_is_a_protocol_split_value() -> None:
    sc = load_scenario("tasks/synthetic-cold-start.toml", ["protocol.split=melu-time"])
    assert sc.protocol.split == "melu-time"
    with pytest.raises(
        ConfigError, match=r"protocol.split='melu-tim'.*\(did you mean 'melu-time'\?\)"
    ):
        load_scenario("tasks/synthetic-cold-start.toml", ["protocol.split=melu-tim"])


@pytest.mark.slow
@pytest.mark.data
def test_melu_time_split_from_the_scenario_equals_the_function(shared_data: Path) -> None:
    sc = load_scenario("tasks/ml1m-melu.toml", ["protocol.split=melu-time"], data_root=shared_data)
    table = load_table(sc.data)
    a = build_splits(table, sc.protocol)
    p = sc.protocol
    b = melu_time_split(
        table,
        existing_user_fraction=p.existing_user_fraction,
        new_item_year=p.new_item_year,
        n_query=p.n_query or 10,
        min_interactions=p.min_interactions,
        max_interactions=p.max_interactions,
        val_fraction=p.val_fraction,
        seed=p.seed,
    )
    assert a.states == b.states and set(a.pools) == set(b.pools)
    for name in a.pools:
        assert a.pools[name].units.tolist() == b.pools[name].units.tolist()
