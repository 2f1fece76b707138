"""A run directory is never lost or left stuck: one writer, resume or restart always possible,
one clear line on a full disk, changed data refused saying what changed."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import metarec._io.checksums as checksums
import metarec.train.loop as train_mod
from metarec._errors import CheckpointError, ConfigError, DataError
from metarec._io.lock import LOCK_FILE, RunLock
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.data.encoding import IdEncoder
from metarec.data.load import load_table
from metarec.data.table import InteractionTable
from metarec.episodes.build import build_splits
from metarec.runs.checkpoint import load_tensors
from metarec.train.loop import train
from metarec.train.session import RUN_FILES, disk_error_message, repair_log, training_session

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "data.synthetic.n_domains=4",
    "data.synthetic.n_users=60",
    "data.synthetic.n_items=80",
    "train.val_every=4",
    "train.val_tasks=8",
    "train.checkpoint_every=4",
    "train.progress=false",
    "algorithm.meta_batch=4",
    "algorithm.inner_steps=1",
    "model.name=gmf",
    "train.steps=8",
]


def scenario(*extra: str):
    return load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", [*SMALL, *extra])


@pytest.fixture(scope="module")
def data():
    sc = scenario()
    table = load_table(sc.data)
    return table, build_splits(table, sc.protocol)


@pytest.fixture(scope="module")
def full(tmp_path_factory, data) -> Path:
    """An uninterrupted 8-step run: the reference every resumed run must equal bit for bit."""
    out = tmp_path_factory.mktemp("full") / "run"
    table, splits = data
    train(scenario(), out, table=table, splits=splits, evaluate_test=False)
    return out


def _same_weights(a: Path, b: Path) -> None:
    x, y = load_tensors(a / "checkpoints" / "last.pt"), load_tensors(b / "checkpoints" / "last.pt")
    assert x["step"] == y["step"]
    for k in x["params"]:
        assert torch.equal(x["params"][k], y["params"][k]), k
    for k in x["state"]:
        assert torch.equal(x["state"][k], y["state"][k]), k


def _steps(run: Path) -> list[int]:
    return [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]


class _Killed(BaseException):
    """Stands for SIGKILL in-process: not an Exception, so nothing on the way handles it."""


@pytest.mark.slow  # training runs; the probe keeps a fast default test
def test_second_train_on_same_out_is_refused_and_first_run_is_intact(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    sets = [
        x
        for a in [*SMALL[:-1], "train.steps=100000", "train.checkpoint_every=5"]
        for x in ("--set", a)
    ]
    cmd = [
        sys.executable,
        "-m",
        "metarec",
        "train",
        str(ROOT / "tasks" / "synthetic-cold-start.toml"),
        "--out",
        str(out),
        *sets,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "checkpoints" / "last.pt").exists():
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        config_before = (out / "config.json").read_text()
        code = main(
            [
                "train",
                str(ROOT / "tasks" / "synthetic-cold-start.toml"),
                "--out",
                str(out),
                *sets,
                "--set",
                "algorithm.inner_lr=0.5",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert f"this run directory is in use by another metarec process (pid {first.pid}" in err
        assert "wait for it to finish, or choose another --out" in err
        assert first.poll() is None  # the first run is still going, untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / "config.json").read_text() == config_before  # not overwritten by the second
    steps = _steps(out)
    assert steps == list(range(1, len(steps) + 1))  # every step once: no second writer
    assert load_tensors(out / "checkpoints" / "last.pt")["step"] >= 5


def test_kill_before_first_checkpoint_then_resume_starts_at_step_0_bit_exact(
    tmp_path, data, full, monkeypatch, capsys
) -> None:
    table, splits = data
    real = train_mod._save_checkpoint

    def killed(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(train_mod, "_save_checkpoint", killed)
    with pytest.raises(_Killed):
        train(scenario(), tmp_path / "cut", table=table, splits=splits, evaluate_test=False)
    monkeypatch.setattr(train_mod, "_save_checkpoint", real)
    cut = tmp_path / "cut"
    assert (cut / "manifest.json").exists() and (
        cut / "checkpoints" / "best.pt"
    ).exists()  # validated at step 4
    assert not (cut / "checkpoints" / "last.pt").exists()
    (cut / "checkpoints" / ".last.pt.x1y2z3.tmp").write_bytes(
        b"half a checkpoint"
    )  # a write cut by the kill
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(scenario(), cut, table=table, splits=splits, evaluate_test=False)
    with pytest.warns(UserWarning, match="holds no checkpoint yet; training starts from step 0"):
        train(scenario(), cut, table=table, splits=splits, resume=True, evaluate_test=False)
    _same_weights(full, cut)
    assert _steps(cut) == list(range(1, 9))
    assert not list(cut.rglob("*.tmp")) and not (cut / LOCK_FILE).exists()


@pytest.mark.slow  # training runs; the probe keeps a fast default test
def test_resume_on_an_empty_or_missing_folder_trains_from_scratch(tmp_path, data, full) -> None:
    table, splits = data
    train(
        scenario(), tmp_path / "new", table=table, splits=splits, resume=True, evaluate_test=False
    )
    _same_weights(full, tmp_path / "new")


def test_steps_zero_is_refused_before_anything_is_written(tmp_path, data) -> None:
    table, splits = data
    with pytest.raises(
        ConfigError,
        match=r"train.steps=0: a run needs at least one outer step.*--set train.steps=300",
    ):
        train(scenario("train.steps=0"), tmp_path / "run", table=table, splits=splits)
    assert not (tmp_path / "run").exists()


def test_overwrite_replaces_only_the_runs_own_files(tmp_path, data, full) -> None:
    table, splits = data
    run = tmp_path / "run"
    train(
        scenario("algorithm.inner_lr=0.5"),
        run,
        table=table,
        splits=splits,
        stop_after=4,
        evaluate_test=False,
    )
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--resume and --overwrite: choose one"):
        train(scenario(), run, table=table, splits=splits, resume=True, overwrite=True)
    train(scenario(), run, table=table, splits=splits, overwrite=True, evaluate_test=False)
    _same_weights(full, run)
    assert _steps(run) == list(range(1, 9)) and (run / "notes.txt").read_text() == "mine"
    assert set(RUN_FILES) >= {"manifest.json", "metrics.jsonl", "checkpoints/last.pt"}


@pytest.mark.slow  # training runs; the probe keeps a fast default test
def test_partial_last_log_line_is_dropped_on_resume(tmp_path, data, full) -> None:
    table, splits = data
    cut = tmp_path / "cut"
    train(scenario(), cut, table=table, splits=splits, stop_after=4, evaluate_test=False)
    with (cut / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 0.4')  # cut mid-write
    train(scenario(), cut, table=table, splits=splits, resume=True, evaluate_test=False)
    _same_weights(full, cut)
    assert _steps(cut) == list(range(1, 9))


def test_damaged_log_line_in_the_middle_is_a_clear_error(tmp_path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(
        CheckpointError,
        match=r"metrics.jsonl': line 2 is not a JSON object with a 'step'.*delete that line",
    ):
        repair_log(p)
    p.write_text('{"step": 1}\n{"step": 2}\n')
    assert repair_log(p) is False and p.read_text() == '{"step": 1}\n{"step": 2}\n'


def _failing_writer(real, err: int):
    """The checkpoint writer, failing with ``err`` from the second ``last.pt`` on (the first, step 4, is written)."""
    calls = {"last.pt": 0}

    def write(path, blob):
        if path.name == "last.pt":
            calls["last.pt"] += 1
            if calls["last.pt"] > 1:
                raise OSError(err, os.strerror(err), str(path))
        real(path, blob)

    return write


def test_disk_full_is_one_line_and_resume_is_bit_exact(
    tmp_path, data, full, monkeypatch, capsys
) -> None:
    table, splits = data
    real = checksums.atomic_write
    cut = tmp_path / "cut"
    err, why = errno.ENOSPC, "the disk is full"
    monkeypatch.setattr(checksums, "atomic_write", _failing_writer(real, err))
    with pytest.raises(
        CheckpointError,
        match=rf"training stopped: {why} writing '.*last.pt'; the last checkpoint "
        r"'.*last.pt' \(step 4\) is intact.*rerun the same command with --resume",
    ):
        train(scenario(), cut, table=table, splits=splits, evaluate_test=False)
    assert not list(cut.rglob("*.tmp")) and not (cut / LOCK_FILE).exists()
    # the same through the command line: one line on stderr, status 2
    monkeypatch.setattr(checksums, "atomic_write", _failing_writer(real, err))
    sets = [x for a in SMALL for x in ("--set", a)]
    code = main(
        [
            "train",
            str(ROOT / "tasks" / "synthetic-cold-start.toml"),
            "--out",
            str(tmp_path / "cli"),
            *sets,
        ]
    )
    out = capsys.readouterr().err
    assert code == 2 and out.count("\n") == 1 and why in out and "(step 4) is intact" in out
    monkeypatch.setattr(checksums, "atomic_write", real)
    train(scenario(), cut, table=table, splits=splits, resume=True, evaluate_test=False)
    _same_weights(full, cut)


def test_permission_and_read_only_errors_say_what_to_do(tmp_path, data) -> None:
    table, splits = data
    run = tmp_path / "run"
    train(scenario(), run, table=table, splits=splits, stop_after=4, evaluate_test=False)
    for err, why, fix in (
        (errno.EACCES, "permission denied", r"make the folder writable \(chmod u\+w\)"),
        (errno.EROFS, "the file system is read-only", "make the folder writable"),
        (errno.EDQUOT, "the disk quota is exceeded", "free some space or raise the quota"),
    ):
        msg = disk_error_message(OSError(err, os.strerror(err)), run)
        assert re.fullmatch(
            rf"--out '.*run': training stopped: {why}; the last checkpoint '.*last.pt' \(step 4\) is intact, "
            rf"nothing up to it is lost; {fix}, then rerun the same command with --resume",
            msg,
        ), msg


def test_no_checkpoint_yet_when_the_disk_fills(tmp_path, data, monkeypatch) -> None:
    table, splits = data

    def full_disk(path, blob):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checksums, "atomic_write", full_disk)
    with pytest.raises(
        CheckpointError,
        match=r"the disk is full; no checkpoint had been written yet; free some space, then "
        r"rerun the same command with --resume \(it starts from step 0\)",
    ):
        train(scenario(), tmp_path / "run", table=table, splits=splits, evaluate_test=False)


def _renamed_items(table: InteractionTable) -> InteractionTable:
    ids = table.item_ids.values
    new = IdEncoder([f"x{v}" if k < 2 else v for k, v in enumerate(ids)], name="item")
    return InteractionTable(
        table.users,
        table.items,
        table.ratings,
        table.domains,
        table.timestamps,
        table.user_ids,
        new,
        table.domain_ids,
        feedback=table.feedback,
        rating_scale=table.rating_scale,
        user_features=table.user_features,
        item_features=table.item_features,
    )


def test_resume_on_changed_data_is_refused_saying_what_changed(tmp_path, data) -> None:
    table, splits = data
    cut = tmp_path / "cut"
    train(scenario(), cut, table=table, splits=splits, stop_after=4, evaluate_test=False)
    fewer = table.subset(np.arange(len(table.users)) >= 50)
    with pytest.raises(
        DataError,
        match=rf"--resume: the training data differ from those the run in '.*cut' was trained on: "
        rf"{len(table.users):,} -> {len(fewer.users):,} interactions.*another --out, or --overwrite",
    ):
        train(
            scenario(),
            cut,
            table=fewer,
            splits=build_splits(fewer, scenario().protocol),
            resume=True,
        )
    renamed = _renamed_items(table)
    with pytest.raises(DataError, match=r"2 item id\(s\) renamed \(.* -> 'x.*'\)"):
        train(scenario(), cut, table=renamed, splits=splits, resume=True)
    ratings = InteractionTable(
        table.users,
        table.items,
        table.ratings[::-1].copy(),
        table.domains,
        table.timestamps,
        table.user_ids,
        table.item_ids,
        table.domain_ids,
        feedback=table.feedback,
        rating_scale=table.rating_scale,
        user_features=table.user_features,
        item_features=table.item_features,
    )
    with pytest.raises(
        DataError,
        match=r"same row count and ids, but ratings, domains, timestamps, split parts or the row order changed",
    ):
        train(scenario(), cut, table=ratings, splits=splits, resume=True)
    assert load_tensors(cut / "checkpoints" / "last.pt")["step"] == 4  # nothing was touched


def test_bad_seed_device_and_folder_are_clear_errors(tmp_path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"train.seed=-1: must be an int in 0..4294967295; pass e.g. --set train.seed=0",
    ):
        scenario("train.seed=-1")
    with pytest.raises(
        ConfigError,
        match=r"train.device='tpu': not a device metarec runs on; choose 'auto'.*'cpu', 'cuda'",
    ):
        scenario("train.device=tpu")
    with pytest.raises(
        ConfigError, match=r"algorithm.inner_steps=1000000: must be an int in 0..10,000"
    ):
        scenario("algorithm.inner_steps=1000000")
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"--out '.*afile': is a file, not a folder"):
        train(scenario(), f)
    from metarec.data.fetch import fetch

    with pytest.raises(ConfigError, match=r"root '.*afile': is a file, not a folder"):
        fetch("movielens-100k", f, quiet=True)


def test_only_rank_0_of_a_distributed_run_holds_the_run_directory(tmp_path, monkeypatch) -> None:
    @training_session
    def fake_train(scenario, out, *, resume=False, overwrite=False):
        return resume

    out = tmp_path / "run"
    with RunLock(out, what="run directory", option="--out"):  # rank 0 holds it
        with pytest.raises(ConfigError, match="in use by this same process"):
            fake_train(None, out)
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        assert (
            fake_train(None, out, resume=True) is False
        )  # no checkpoint yet: rank 0 restarts, so does rank 1
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "last.pt").write_bytes(b"x")
        assert fake_train(None, out, resume=True) is True
        assert fake_train(None, out, overwrite=True) is False
        with pytest.raises(ConfigError, match="--resume and --overwrite: choose one"):
            fake_train(None, out, resume=True, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # rank 1 wrote nothing
