"""Smoke tests of the benchmark scripts: each runs end to end on its smallest workload.

The scripts run in a subprocess (as a user runs them) on synthetic data (``METAREC_DATA`` is
removed from the environment), and the tests check the structure of the result files and the
float64 meta-gradient check. Nothing here asserts a timing.
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _run(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "METAREC_DATA"}
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_engine_throughput_quick(tmp_path: Path) -> None:
    out = tmp_path / "engine.jsonl"
    res = _run("engine_throughput.py", "--quick", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(out)
    engines = {(r["engine"], r["buckets"]) for r in rows}
    assert {
        ("metarec-analytic", 1),
        ("metarec-analytic", 2),
        ("metarec-vmap", 1),
        ("loop", None),
    } <= engines
    for r in rows:
        assert r["quick"] is True and r["tasks"] == 4 and r["second_order"] is True
        assert r["gradient_check"]["dtype"] == "float64"
        assert r["gradient_check"]["allclose"] is True
        assert r["gradient_check"]["max_abs_diff_vs_loop"] <= 1e-9 * max(
            1.0, r["gradient_check"]["max_abs_grad"]
        )
        assert r["tasks_per_s"] > 0 and len(r["seconds_per_meta_batch"]) == 1
        for key in (
            "cpu",
            "cpu_affinity",
            "torch",
            "device",
            "commit",
            "config_hash",
            "command",
            "learn2learn",
        ):
            assert key in r
        assert r["data"].startswith("synthetic")
        assert r["flops_per_meta_batch"] > 0 and r["matmul_peak_gflops"] > 0
        assert (
            r["useful_flops_per_meta_batch"]
            == next(x for x in rows if x["engine"] == "loop")["flops_per_meta_batch"]
        )
        assert r["fraction_of_limit"] == pytest.approx(
            r["useful_flops_per_meta_batch"] / r["median_seconds"] / (r["matmul_peak_gflops"] * 1e9)
        )
    if ("learn2learn", None) not in engines:
        assert "install_learn2learn.sh" in rows[0]["learn2learn"]
    report = out.with_suffix(".md").read_text()
    assert (
        "| metarec-analytic | 2 |" in report
        and "gradient check" in report
        and "fraction of limit" in report
    )


def test_engine_throughput_peak_memory_grows_with_tasks_held_at_once(tmp_path: Path) -> None:
    """The subprocess memory measurement (RSS sampled during the meta-batch, minus the RSS right
    before it) is non-zero, and larger for 16 padded tasks under one vmap than for one task at a time."""
    out = tmp_path / "engine.jsonl"
    res = _run(
        "engine_throughput.py",
        "--data",
        "synthetic",
        "--tasks",
        "16",
        "--inner-steps",
        "2",
        "--buckets",
        "1",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--batches",
        "1",
        "--check-tasks",
        "2",
        "--no-l2l",
        "--out",
        str(out),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    mem = {r["engine"]: r["peak_memory"] for r in _rows(out)}
    assert mem["loop"]["rss_samples"] >= 2 and mem["metarec-vmap"]["rss_samples"] >= 2
    assert 0 < mem["loop"]["rss_peak_delta_mib"] < mem["metarec-vmap"]["rss_peak_delta_mib"]
    assert "/proc/self/statm" in _rows(out)[0]["memory_method"]


def test_rss_sampler_sees_a_transient_allocation() -> None:
    module = _load("engine_throughput.py")
    base = module._rss_bytes()
    # A fresh anonymous mapping: its pages are new to the process whatever the allocator has
    # cached from earlier tests (a numpy array could reuse already-resident heap memory).
    with module._RssSampler() as s, mmap.mmap(-1, 64 * 2**20) as mm:
        view = np.frombuffer(mm, dtype=np.uint8)
        view[:] = 1  # touch every page
        time.sleep(0.05)  # held for many sampling intervals
        del view
    assert s.peak - base >= 48 * 2**20


def test_sampler_throughput_quick(tmp_path: Path) -> None:
    out = tmp_path / "sampler.jsonl"
    res = _run("sampler_throughput.py", "--quick", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    (row,) = _rows(out)
    assert row["data"] == "synthetic" and row["batch_size"] == 32 and row["torch_threads"] == 1
    assert row["tasks_per_s"] > 0 and row["target_tasks_per_s"] == 20_000
    assert isinstance(row["meets_target"], bool)
    assert "| synthetic |" in out.with_suffix(".md").read_text()


def _load(script: str) -> ModuleType:
    """A benchmark script as a module (argument parsing is tested in-process)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{script[:-3]}", BENCH / script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("engine_throughput.py", ["--buckets", "4,0"], "--buckets: 0 is < 1"),
        ("engine_throughput.py", ["--tasks", "2", "--check-tasks", "4"], "--check-tasks 4"),
        ("engine_throughput.py", ["--device", "tpu"], "--device 'tpu'"),
        (
            "engine_throughput.py",
            ["--inner-lr", "-1"],
            "--inner-lr -1.0: must be a finite number > 0",
        ),
        ("sampler_throughput.py", ["--min-time", "0"], "--min-time 0.0: must be > 0"),
        (
            "sampler_throughput.py",
            ["--batch-sizes", "32,x"],
            "--batch-sizes: 'x' is not an integer",
        ),
    ],
)
def test_bad_arguments_are_named(
    script: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _load(script)
    with pytest.raises(SystemExit) as exc:
        module.parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_eval_throughput_quick(tmp_path: Path) -> None:
    out = tmp_path / "eval.jsonl"
    res = _run("eval_throughput.py", "--quick", "--threads", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    (r,) = _rows(out)
    assert r["quick"] is True and r["users"] == 200 and r["items"] == 2000 and r["factors"] == 16
    assert r["flops"] == 2.0 * 200 * 2000 * 16
    assert r["fast_fraction_of_peak"] == pytest.approx(
        r["flops"] / r["fast_seconds"] / (r["matmul_peak_gflops"] * 1e9)
    )
    assert r["speedup_fast_vs_today"] == pytest.approx(r["today_seconds"] / r["fast_seconds"])
    for key in ("commit", "command", "cpu", "torch_threads", "load_average", "matmul_peaks_gflops"):
        assert key in r
    assert (tmp_path / "eval.md").read_text().startswith("# Catalogue scoring throughput")
