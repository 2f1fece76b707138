"""``metarec.bench.parallel``: independent units in forked worker processes with one thread each;
results handed back in this process; the first failure stops new units and is raised. ``metarec
bench --jobs 2`` gives the rows of ``--jobs 1`` and resumes alike."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from test_bench_resume import GRID, TINY, tiny

import metarec.bench.run as bench_run
from metarec._errors import ConfigError
from metarec.bench import run_bench
from metarec.bench.parallel import check_jobs, run_units
from metarec.bench.report import load_per_task
from metarec.cli.main import main


def _square_in_worker(x: int) -> tuple[int, int, int]:
    import torch

    return x * x, os.getpid(), torch.get_num_threads()


def test_parallel_units_give_the_sequential_results() -> None:
    units = list(range(6))
    seq: dict[int, tuple] = {}
    par: dict[int, tuple] = {}
    run_units(units, _square_in_worker, lambda u, r: seq.__setitem__(u, r), jobs=1)
    order: list[int] = []

    def record(u: int, r: tuple) -> None:
        assert threading.current_thread() is threading.main_thread()  # done runs here
        order.append(u)
        par[u] = r

    run_units(units, _square_in_worker, record, jobs=2)
    assert {u: r[0] for u, r in par.items()} == {u: r[0] for u, r in seq.items()}
    assert sorted(order) == units
    assert all(r[1] == os.getpid() for r in seq.values())  # jobs=1: in this process
    assert all(r[1] != os.getpid() for r in par.values())  # jobs=2: in worker processes
    assert {r[2] for r in par.values()} == {1}  # one torch thread per worker


def test_work_may_close_over_unpicklable_data() -> None:
    """Workers are forked: the prepared data is inherited, never pickled (a lock cannot be)."""
    lock = threading.Lock()
    data = {"table": list(range(100)), "lock": lock}
    got: dict[int, int] = {}
    run_units([10, 20, 30], lambda u: u + len(data["table"]), got.__setitem__, jobs=2)
    assert got == {10: 110, 20: 120, 30: 130}


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"unit {x} failed")
    return x


def test_a_failing_unit_is_raised_and_finished_units_are_kept() -> None:
    got: list[int] = []
    with pytest.raises(ValueError, match="unit 3 failed"):
        run_units([1, 2, 3], _fail_on_three, lambda u, r: got.append(r), jobs=2)
    assert set(got) <= {1, 2} and 3 not in got
    got.clear()
    with pytest.raises(ValueError, match="unit 3 failed"):  # the same error at jobs=1
        run_units([1, 2, 3, 4], _fail_on_three, lambda u, r: got.append(r), jobs=1)
    assert got == [1, 2]


@pytest.mark.parametrize(
    ("jobs", "device", "match"),
    [
        (
            0,
            "cpu",
            r"jobs=0: the number of worker processes must be an integer >= 1; pass --jobs 1",
        ),
        ("2", "cpu", r"jobs='2': the number of worker processes must be an integer >= 1"),
        (True, "cpu", r"jobs=True: the number of worker processes must be an integer >= 1"),
        (2, "cuda", r"jobs=2 with device 'cuda': .*pass --jobs 1"),
    ],
)
def test_check_jobs_errors(jobs, device: str, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=match):
        check_jobs(jobs, device)
    assert check_jobs(1, "cuda") == 1 and check_jobs(2, "cpu") == 2


# ---------------------------------------------------------------- metarec bench --jobs
MEASURED = {"train_seconds", "eval_seconds", "adapt_ms_per_task", "peak_memory_mb"}
"""Row fields that measure the run (time, process memory) rather than compute its results."""


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k not in MEASURED} for r in rows]


class Interrupt(Exception):
    pass


def test_bench_jobs_2_gives_the_rows_of_jobs_1(tmp_path: Path) -> None:
    one = run_bench(tiny(), out=tmp_path / "one", **GRID)
    two = run_bench(tiny(), out=tmp_path / "two", jobs=2, **GRID)
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")  # same rows, same order
    assert len(two.rows) == len(one.rows) == 6
    assert load_per_task(tmp_path / "two") == load_per_task(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "bench.json").read_text())["jobs"] == 2


def test_bench_jobs_2_is_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that fails in a worker stops the benchmark; the finished runs are on disk, and
    --resume (again with two workers) runs only the rest, to the rows of an uninterrupted run."""
    out, log = tmp_path / "b", tmp_path / "calls.txt"
    real = bench_run.run_method

    def run(ctx, say):  # noqa: ANN001, ANN202
        with log.open("a") as f:  # workers are processes: count the calls in a file
            f.write(ctx.run_id + "\n")
        if ctx.algo == "maml" and os.environ.get("FAIL_MAML") == "1":
            raise Interrupt(ctx.run_id)
        return real(ctx, say)

    monkeypatch.setattr(bench_run, "run_method", run)
    monkeypatch.setenv("FAIL_MAML", "1")
    with pytest.raises(Interrupt, match="maml-s0"):
        run_bench(tiny(), out=out, jobs=2, **GRID)
    assert {r["algorithm"] for r in _rows(out)} == {"global", "popularity"}
    monkeypatch.setenv("FAIL_MAML", "0")
    log.unlink()
    res = run_bench(tiny(), out=out, jobs=2, resume=True, **GRID)
    assert log.read_text().split() == ["maml-s0"]
    straight = run_bench(tiny(), out=tmp_path / "straight", **GRID)
    assert _rows(out) == _rows(tmp_path / "straight")
    assert json.loads((out / "bench.json").read_text())["resumed_runs"] == 2
    assert len(res.rows) == len(straight.rows)


def test_bench_jobs_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"jobs=0: the number of worker processes"):
        run_bench(tiny(), out=tmp_path / "b", jobs=0, **GRID)
    args = ["bench", "tasks/synthetic-cold-start.toml", "--out", str(tmp_path / "c")]
    assert main([*args, "--jobs", "0", *sum((["--set", s] for s in TINY), [])]) != 0
    assert (
        "jobs=0: the number of worker processes must be an integer >= 1" in capsys.readouterr().err
    )
