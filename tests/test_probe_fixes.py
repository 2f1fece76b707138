"""Fixes found by the fault probe (``benchmarks/fault_probe.py``), one test each, and the probe
itself (slow): no case ends in a traceback, a silently wrong result or lost data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarec._errors import ConfigError, DataError
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.data.sources import read_files
from metarec.episodes.build import build_splits, sampler_config
from metarec.metrics.evaluate import check_finite_predictions, evaluate_fitted

ROOT = Path(__file__).resolve().parent.parent


def test_a_header_only_file_is_refused_naming_the_file(tmp_path) -> None:
    f = tmp_path / "ratings.csv"
    f.write_text("user,item,rating\n")
    with pytest.raises(
        DataError, match=r"'.*ratings.csv': no interaction rows \(only a header, or empty\)"
    ):
        read_files([f])


def test_non_finite_predictions_are_refused_naming_the_settings() -> None:
    p = torch.tensor([[1.0, float("inf")], [2.0, 3.0]])
    check_finite_predictions(
        p, torch.tensor([[True, False], [True, True]]), "lr 0.1"
    )  # padding: fine
    with pytest.raises(
        ConfigError,
        match=r"1 of 2 task\(s\) are not finite: the adaptation diverged \(lr 0.1\); lower algorithm.inner_lr",
    ):
        check_finite_predictions(p, torch.ones(2, 2, dtype=torch.bool), "lr 0.1")


class _Inf:
    """A fitted method whose adaptation diverges: infinite scores (clipping would hide them)."""

    def adapt(self, support, steps=None, lr=None):
        return self

    def score(self, users, items):
        return torch.full(users.shape, float("inf"))


def test_a_diverged_adaptation_is_an_error_not_a_clipped_rating() -> None:
    sc = load_scenario(
        "tasks/synthetic-cold-start.toml",
        ["data.synthetic.n_domains=4", "data.synthetic.n_users=60", "data.synthetic.n_items=80"],
    )
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    with pytest.raises(ConfigError, match=r"the adaptation diverged \(steps=3, lr=1e\+30\)"):
        evaluate_fitted(
            _Inf(), table, splits.pools[splits.val], sampler_config(sc.protocol), steps=3, lr=1e30
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("probe", "least"), [("fault_probe", 40), ("fault_probe_runs", 20), ("fault_probe_serve", 25)]
)
def test_the_fault_probe_finds_no_traceback_silent_wrong_or_data_loss(
    tmp_path, probe, least
) -> None:
    jobs = [] if probe == "fault_probe_serve" else ["--jobs", "3"]
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{probe}.py"), "--out", str(tmp_path), *jobs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    rows = [json.loads(x) for x in (tmp_path / f"{probe}.jsonl").read_text().splitlines()]
    assert len(rows) >= least
    bad = [
        (x["case"], x["outcome"], x["detail"])
        for x in rows
        if x["outcome"] not in ("CLEAR ERROR", "CORRECT", "SKIPPED")
    ]
    assert not bad, bad
    assert r.returncode == 0, r.stdout[-2000:]
    assert {x["outcome"] for x in rows} <= {"CLEAR ERROR", "CORRECT", "SKIPPED"}


def test_step_bounds_name_the_fix_in_the_form_the_caller_can_use() -> None:
    from metarec.config.limits import check_steps

    with pytest.raises(
        ConfigError,
        match=r"steps=100000000: .*pass e.g. steps=10 \(--steps 10 on the command line\)",
    ):
        check_steps(100_000_000, "steps")
    with pytest.raises(ConfigError, match=r"pass e.g. --set algorithm.inner_steps=10$"):
        check_steps(10**6, "algorithm.inner_steps")


def test_unknown_support_items_name_the_cli_option() -> None:
    from metarec.data.encoding import IdEncoder
    from metarec.recommend.support import encode_items

    with pytest.raises(
        DataError, match=r"\('zz'\).*unknown_items='fallback' \(--unknown-items fallback\)"
    ):
        encode_items(IdEncoder(["a", "b"], name="item"), ["a", "zz"], what="support")


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.seed=-1", "train.seed"),
        ("algorithm.inner_steps=100000000", "algorithm.inner_steps"),
        ("train.device=tpu", "train.device"),
        ("protocol.n_support=0", "protocol.n_support"),
    ],
)
def test_bound_errors_name_the_key_once(override: str, key: str) -> None:
    from metarec.config import load_scenario

    with pytest.raises(ConfigError) as e:
        load_scenario("tasks/synthetic-cold-start.toml", [override])
    section = key.split(".")[0]
    assert f"{key}=" in str(e.value) and f"{section}.{section}." not in str(e.value)
