"""``benchmarks/gpu_check.sh``: its CPU dry run end to end (tiny sizes; the ``gpu`` tests skip),
its argument errors, and its time budget. Nothing here asserts a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_benchmarks import _load

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is the CPU-only path")
def test_gpu_check_dry_run_on_cpu(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "METAREC_DATA"}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHON"] = sys.executable
    res = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--device",
            "cpu",
            "--out-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in rows}
    assert list(by_step) == [
        "pytest -m gpu",
        "engine float32 T=4",
        "engine float32 T=8",
        "engine bfloat16 T=4",
        "engine bfloat16 T=8",
        "catalogue scoring",
    ]
    gpu = by_step["pytest -m gpu"]
    assert gpu["status"] == "passed" and gpu["tests"] >= 17 and gpu["skipped"] == gpu["tests"]
    assert (tmp_path / "pytest_gpu.xml").exists()
    for dtype in ("float32", "bfloat16"):
        for tasks in (4, 8):
            r = by_step[f"engine {dtype} T={tasks}"]
            assert r["status"] == "passed", r
            assert r["tasks_per_s"] > 0 and 0 < r["fraction_of_matmul_peak"]
            engine_rows = [
                json.loads(x)
                for x in (tmp_path / f"engine_{dtype}_T{tasks}.jsonl").read_text().splitlines()
            ]
            assert {x["tasks"] for x in engine_rows} == {tasks}
            assert {x["dtype"] for x in engine_rows} == {dtype}
            assert all(x["gradient_check"]["allclose"] for x in engine_rows)
    scoring = by_step["catalogue scoring"]
    if (ROOT / "benchmarks" / "eval_throughput.py").exists():
        assert scoring["status"] == "passed", scoring
    else:
        assert scoring["status"] == "hook" and "eval_throughput.py" in scoring["why"]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN" in report and "| bfloat16 | 8 |" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "--device 'tpu': pass cuda (the check) or cpu (a dry run)"),
        (["--device", "cpu", "--budget-s", "0"], "--budget-s 0.0: must be > 0 seconds"),
    ],
)
def test_gpu_check_bad_arguments_are_named(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _load("gpu_check.py")
    with pytest.raises(SystemExit) as exc:
        module.parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA-missing message is for CPU hosts")
def test_gpu_check_without_cuda_says_how_to_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    module = _load("gpu_check.py")
    with pytest.raises(SystemExit):
        module.parse_args(["--device", "cuda"])
    assert "pass --device cpu for the dry run" in capsys.readouterr().err


def test_gpu_check_budget_skips_late_steps_and_a_failing_step_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _load("gpu_check.py")

    def slow_pytest(args, dry):  # noqa: ANN001, ANN202
        time.sleep(0.3)
        return {"status": "passed"}

    def broken_engine(args, dtype, tasks, dry):  # noqa: ANN001, ANN202
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(module, "_pytest", slow_pytest)
    monkeypatch.setattr(module, "_engine", broken_engine)
    rows = module.main(["--device", "cpu", "--out-dir", str(tmp_path), "--budget-s", "0.2"])
    status = {r["step"]: (r["status"], r.get("why", "")) for r in rows}
    assert status["pytest -m gpu"] == ("passed", "")
    assert all(
        s == "skipped" and "--budget-s" in why
        for k, (s, why) in status.items()
        if k != "pytest -m gpu"
    )
    rows = module.main(["--device", "cpu", "--out-dir", str(tmp_path), "--budget-s", "100"])
    engine = [r for r in rows if r["step"].startswith("engine")]
    assert engine and all(
        r["status"] == "failed" and "RuntimeError: CUDA error: out of memory" in r["why"]
        for r in engine
    )
