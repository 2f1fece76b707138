"""One writer per folder: a second holder is refused naming the first; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import metarec._io.lock as runlock
from metarec._errors import ConfigError
from metarec._io.lock import LOCK_FILE, RunLock, check_folder, holds_folder, lock_holder

ROOT = Path(__file__).resolve().parent.parent

_HOLD = """
import sys, time
from metarec._io.lock import RunLock
with RunLock(sys.argv[1], what="run directory", option="--out"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    """A separate process that takes the lock on ``folder`` and keeps it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_second_holder_is_refused_naming_the_first_then_lock_is_free_again(tmp_path) -> None:
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        rec = lock_holder(folder)
        assert rec is not None and rec["pid"] == proc.pid and rec["host"] == socket.gethostname()
        with pytest.raises(
            ConfigError,
            match=rf"--out '.*run': this run directory is in use by another metarec process "
            rf"\(pid {proc.pid} on host .*since .*\); wait for it to finish, or choose another --out",
        ):
            with RunLock(folder, what="run directory", option="--out"):
                pass
    finally:
        _stop(proc, signal.SIGTERM)
    with RunLock(folder):  # the holder is gone: the lock is free again
        assert lock_holder(folder)["pid"] == os.getpid()
    assert not (folder / LOCK_FILE).exists()


def test_lock_of_a_killed_process_is_stale_and_taken_over(tmp_path) -> None:
    folder = tmp_path / "run"
    proc = _holder(folder)
    _stop(proc, signal.SIGKILL)
    assert lock_holder(folder)["pid"] == proc.pid  # the kill left the file behind
    with RunLock(folder) as lock:
        assert lock.stale is not None and lock.stale["pid"] == proc.pid
        assert lock_holder(folder)["pid"] == os.getpid()


def test_same_process_second_lock_is_refused(tmp_path) -> None:
    with RunLock(tmp_path / "f", what="bench output folder", option="--out"):
        with pytest.raises(
            ConfigError,
            match=rf"this bench output folder is in use by this same process \(pid {os.getpid()}",
        ):
            RunLock(tmp_path / "f", what="bench output folder").acquire()


def test_without_flock_the_file_itself_is_the_lock(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runlock, "_fcntl", None)
    folder = tmp_path / "run"
    with RunLock(folder):
        with pytest.raises(ConfigError, match="in use by this same process"):
            RunLock(folder).acquire()
    assert not (folder / LOCK_FILE).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder.mkdir(exist_ok=True)
    (folder / LOCK_FILE).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"})
    )
    with RunLock(folder) as lock:
        assert lock.stale is not None and lock.stale["pid"] == dead.pid
    (folder / LOCK_FILE).write_text(
        json.dumps({"pid": 1, "host": "elsewhere", "started": "x", "command": "metarec train"})
    )
    with pytest.raises(
        ConfigError,
        match=r"host 'elsewhere'.*if that run is known to be over, delete '.*\.metarec\.lock'",
    ):
        RunLock(folder).acquire()


def test_folder_that_is_a_file_is_a_clear_error(tmp_path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(
        ConfigError, match=r"--out '.*file': is a file, not a folder; pass a folder path"
    ):
        check_folder(f, "--out")
    with pytest.raises(
        ConfigError, match=r"--out '.*file/sub': lies under '.*file', which is a file"
    ):
        RunLock(f / "sub", option="--out").acquire()


def test_holds_folder_decorator_locks_for_the_call(tmp_path) -> None:
    seen = []

    @holds_folder("out", what="bench output folder", option="--out")
    def job(x: int, *, out: Path) -> int:
        seen.append(lock_holder(out))
        return x + 1

    assert job(1, out=tmp_path / "b") == 2
    assert seen[0]["pid"] == os.getpid() and not (tmp_path / "b" / LOCK_FILE).exists()
    with RunLock(tmp_path / "b"):
        with pytest.raises(ConfigError, match="bench output folder is in use"):
            job(1, out=tmp_path / "b")
    assert len(seen) == 1  # the refused call never ran


def test_bench_output_folder_is_locked(tmp_path) -> None:
    from metarec.bench import run_bench
    from metarec.config import load_scenario

    sc = load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", ["train.progress=false"])
    with RunLock(tmp_path / "bench"):
        with pytest.raises(
            ConfigError,
            match=r"--out '.*bench': this bench output folder is in use by this same process",
        ):
            run_bench(sc, out=tmp_path / "bench", quick=True, verbose=False)
    assert not (tmp_path / "bench" / "results.jsonl").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--out '.*file': is a file, not a folder"):
        run_bench(sc, out=tmp_path / "file", quick=True, verbose=False)
