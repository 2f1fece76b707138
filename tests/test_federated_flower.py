"""Federated runs on Flower: real SuperLink / SuperNode processes on 127.0.0.1, and the
simulation engine (Ray; slow)."""

from __future__ import annotations

import gc
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from federated_scenarios import fed_scenario

try:
    from metarec.federated.flower import require_flwr

    require_flwr()
except ModuleNotFoundError:  # pragma: no cover - the federated extra is not installed
    pytest.skip("needs flwr: pip install 'metarec[federated]'", allow_module_level=True)

from metarec.federated import run_federated  # noqa: E402
from metarec.federated.loopback import _descendants  # noqa: E402
from metarec.runs.checkpoint import load_tensors  # noqa: E402


def _free_port_block(n: int) -> int:
    """A first port p such that p..p+n look free on 127.0.0.1."""
    for base in range(23000 + (os.getpid() % 200) * 20, 60000, 37):
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", p)) == 0:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


@pytest.mark.slow
def test_loopback_processes_train_two_clients_and_are_torn_down(tmp_path: Path):
    sc = fed_scenario(
        n_domains=2,
        rounds=2,
        local_steps=1,
        round_timeout=180.0,
        startup_timeout=120.0,
        port=_free_port_block(3),
        fault_injection={"d1": "drop@2"},
    )
    before = set(_descendants([os.getpid()]))
    res = run_federated(sc, tmp_path / "run", backend="loopback")
    s = res.summary
    assert s["backend"] == "loopback" and s["finished"] and s["rounds"] == 2
    assert [c["name"] for c in s["clients"]] == ["d0", "d1"]
    assert all("mae" in c["cold"] for c in s["clients"])
    rows = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert rows[0]["ok"] == ["d0", "d1"] and rows[1]["ok"] == ["d0"]
    (fail,) = rows[1]["failed"]
    assert (
        fail["client"] == "d1" and "ClientDropped" in fail["error"] and "round 2" in fail["error"]
    )
    assert rows[0]["bytes_sent_by_clients"] > 0
    assert set(load_tensors(tmp_path / "run" / "final.pt")["params"])
    assert set(_descendants([os.getpid()])) <= before  # every Flower process is gone


@pytest.mark.slow
# Ray leaves a Popen of its own behind, reported when garbage-collected (collected here, in the test)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_flower_simulation_matches_the_local_backend(tmp_path: Path):
    pytest.importorskip("ray")
    sc = fed_scenario(
        n_domains=2, rounds=2, local_steps=1, round_timeout=300.0, startup_timeout=120.0
    )
    sim = run_federated(sc, tmp_path / "sim", backend="simulation").summary
    loc = run_federated(replace(sc), tmp_path / "loc", backend="local").summary
    a = load_tensors(tmp_path / "sim" / "final.pt")["params"]
    b = load_tensors(tmp_path / "loc" / "final.pt")["params"]
    for k in a:  # same clients, same seeds, same server: the same weights whichever the transport
        assert (a[k] - b[k]).abs().max() < 1e-5
    assert sim["clients"][0]["cold"]["mae"] == pytest.approx(
        loc["clients"][0]["cold"]["mae"], abs=1e-4
    )
    gc.collect()
