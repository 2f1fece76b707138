"""The remaining writers hold the run directory's lock: a federated run (server and driver), and
the manifest of an engine method trained under another algorithm name (``melu-ref``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from federated_scenarios import fed_scenario

import metarec.federated.runner as fed_runner
import metarec.methods.engine.method as engine_mod
import metarec.train.files as train_files_mod
from metarec._errors import ConfigError
from metarec._io.lock import RunLock
from metarec.config import load_scenario
from metarec.federated import run_federated
from metarec.methods import train_method

ROOT = Path(__file__).resolve().parent.parent

_HOLD = """
import sys, time
from metarec._io.lock import RunLock
with RunLock(sys.argv[1], what="run directory", option="--out"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_federated_run_on_a_held_folder_is_refused_naming_the_holder(tmp_path) -> None:
    out = tmp_path / "fed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(
            ConfigError,
            match=rf"--out '.*fed': .* in use by another metarec process \(pid {proc.pid} ",
        ):
            run_federated(fed_scenario(rounds=1), out)
        assert sorted(p.name for p in out.iterdir()) == [".metarec.lock"]  # nothing written
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_a_second_federated_writer_during_a_run_is_refused_and_the_run_is_intact(
    tmp_path, monkeypatch
) -> None:
    out, sc = tmp_path / "fed", fed_scenario(rounds=3)
    real, seen = fed_runner.run_server, []

    def server_with_intruder(*args, **kwargs):
        with pytest.raises(ConfigError) as e:  # a second writer while the server runs
            run_federated(sc, out, resume=True)
        seen.append(str(e.value))
        return real(*args, **kwargs)

    monkeypatch.setattr(fed_runner, "run_server", server_with_intruder)
    run_federated(sc, out, stop_after=1)  # no final evaluation: a short test
    assert len(seen) == 1 and "federated run directory is in use by this same process" in seen[0]
    assert f"pid {os.getpid()}" in seen[0]
    rounds = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1]
    assert not (out / ".metarec.lock").exists()  # released at the end


def test_melu_ref_manifest_is_written_under_the_lock_naming_the_method(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(
        engine_mod, "MELU_REF", {**engine_mod.MELU_REF, "train": {"steps": 2, "patience": None}}
    )
    sc = load_scenario(
        "tasks/synthetic-cold-start.toml",
        [
            "data.synthetic.n_domains=4",
            "data.synthetic.n_users=60",
            "data.synthetic.n_items=80",
            "train.val_tasks=8",
            "train.progress=false",
            "algorithm.name=melu-ref",
        ],
    )
    out = tmp_path / "run"
    real, writes = train_files_mod.atomic_write_json, []

    def checked(path, obj):
        if Path(path).name == "manifest.json":
            try:
                with RunLock(out, option="--out"):
                    locked = False
            except ConfigError:
                locked = True
            writes.append((locked, obj["method"]["name"]))
        return real(path, obj)

    monkeypatch.setattr(train_files_mod, "atomic_write_json", checked)
    train_method(sc, out, evaluate_test=False)
    assert writes == [(True, "melu-ref")]  # one write, inside the lock, with the method's name
    assert json.loads((out / "manifest.json").read_text())["method"]["name"] == "melu-ref"
