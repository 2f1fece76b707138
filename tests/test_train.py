"""Meta-training: metrics log, exact resume, non-finite steps, errors, and MAML beating the global baseline."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import SMALL_TRAIN, cold_user_maes

import metarec.train.loop as train_mod
from metarec._errors import CheckpointError, ConfigError
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.runs.checkpoint import load_tensors
from metarec.train.loop import train

SMALL = SMALL_TRAIN


def scenario(*extra: str):
    return load_scenario("tasks/synthetic-cold-start.toml", [*SMALL, *extra])


@pytest.fixture(scope="module")
def data():
    sc = scenario()
    table = load_table(sc.data)
    return table, build_splits(table, sc.protocol)


def test_metrics_log_and_run_files(tmp_path, data):
    table, splits = data
    res = train(scenario("train.steps=20"), tmp_path / "run", table=table, splits=splits)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert all({"loss", "tasks_per_s"} <= set(r) for r in rows)
    assert [r["step"] for r in rows if "val" in r] == [10, 20]
    for f in (
        "manifest.json",
        "config.json",
        "encoders.json",
        "features.pt",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "test_metrics.json",
        "summary.json",
    ):
        assert (tmp_path / "run" / f).exists(), f
    assert res.best_step in (10, 20) and "mae" in res.best_val
    assert set(json.loads((tmp_path / "run" / "test_metrics.json").read_text())["states"]) == {
        "meta-test"
    }


@pytest.mark.parametrize("algo", ["maml", "metasgd"])
def test_resume_after_interruption_gives_identical_weights(tmp_path, data, algo):
    table, splits = data
    sc = scenario("train.steps=30", f"algorithm.name={algo}")
    train(sc, tmp_path / "full", table=table, splits=splits, evaluate_test=False)
    train(
        sc, tmp_path / "cut", table=table, splits=splits, stop_after=20, evaluate_test=False
    )  # "killed" after 20
    train(sc, tmp_path / "cut", table=table, splits=splits, resume=True, evaluate_test=False)
    a = load_tensors(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_tensors(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 30
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(1, 31))


def test_resume_errors(tmp_path, data):
    table, splits = data
    sc = scenario("train.steps=10")
    train(sc, tmp_path / "run", table=table, splits=splits, evaluate_test=False)
    with pytest.raises(ConfigError, match=r"already holds a run; pass --resume"):
        train(sc, tmp_path / "run", table=table, splits=splits)
    with pytest.raises(
        CheckpointError, match=r"the scenario differs from the one the checkpoint was trained with"
    ):
        train(
            scenario("train.steps=20", "algorithm.inner_lr=0.5"),
            tmp_path / "run",
            table=table,
            splits=splits,
            resume=True,
        )


def test_non_finite_meta_gradient_is_skipped_and_training_goes_on(tmp_path, data, monkeypatch):
    table, splits = data
    real = train_mod.meta_loss_and_grads
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        loss, grads = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] in (3, 4):
            grads = {k: torch.full_like(v, float("nan")) for k, v in grads.items()}
        return loss, grads

    monkeypatch.setattr(train_mod, "meta_loss_and_grads", flaky)
    res = train(
        scenario("train.steps=10"),
        tmp_path / "run",
        table=table,
        splits=splits,
        evaluate_test=False,
    )
    assert res.skipped_steps == 2 and res.steps == 10
    last = load_tensors(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(bool(torch.isfinite(v).all()) for v in last["params"].values())
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("skipped")] == [3, 4]


def test_maml_beats_global_on_cold_users(tmp_path):
    """On the synthetic scenario (each user has a personal taste only their ratings reveal),
    MAML's adapted query MAE on meta-test users beats the global model's, for several seeds."""
    over = [
        "data.synthetic.n_domains=10",
        "train.steps=80",
        "train.val_every=40",
        "train.val_tasks=128",
        "train.progress=false",
    ]
    for seed in (0, 1):
        maes = cold_user_maes(tmp_path, over, seed)
        assert maes["maml"] < maes["global"] - 0.03, (seed, maes)


def test_cli_run_killed_midway_then_resumed_matches_uninterrupted(tmp_path, data):
    """A real kill (SIGKILL) of `metarec train`, then `--resume`: identical final weights."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [*SMALL, "train.steps=60", "train.checkpoint_every=5"]
    sets = [x for a in args for x in ("--set", a)]
    cmd = [
        sys.executable,
        "-m",
        "metarec",
        "train",
        "tasks/synthetic-cold-start.toml",
        "--out",
        str(tmp_path / "cut"),
        *sets,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and load_tensors(last)["step"] >= 10:
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert subprocess.run([*cmd, "--resume"], env=env, capture_output=True).returncode == 0
    table, splits = data
    train(
        scenario(*args[len(SMALL) :]),
        tmp_path / "full",
        table=table,
        splits=splits,
        evaluate_test=False,
    )
    a = load_tensors(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_tensors(last)
    assert a["step"] == b["step"] == 60
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    steps = [
        json.loads(r)["step"] for r in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 61))


class _Collect:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.closed = False

    def log(self, row) -> None:
        self.rows.append(dict(row))

    def close(self) -> None:
        self.closed = True


def test_logging_callbacks_get_every_metrics_row(tmp_path, data) -> None:
    from metarec.train.loggers import scalars

    table, splits = data
    sink = _Collect()
    train(
        scenario("train.steps=10"),
        tmp_path / "run",
        table=table,
        splits=splits,
        evaluate_test=False,
        loggers=[sink],
    )
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sink.rows == rows and sink.closed
    flat = scalars(rows[-1])
    assert "loss" in flat and "val/mae" in flat and "step" not in flat


def test_named_logger_without_its_package_names_the_extra(tmp_path, data) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    table, splits = data
    with pytest.raises(ConfigError, match=r'pip install "metarec\[tensorboard\]"'):
        train(
            scenario("train.steps=2", "train.loggers=[tensorboard]"),
            tmp_path / "run",
            table=table,
            splits=splits,
        )
    assert not (tmp_path / "run").exists()  # refused before anything is written
    with pytest.raises(ConfigError, match=r"train.loggers"):
        scenario("train.loggers=[tensorbord]")
