"""``metarec.bench.parallel``: independent units in forked worker processes with one thread each;
results handed back in this process; the first failure stops new units and is raised."""

from __future__ import annotations

import os
import threading

import pytest

from metarec._errors import ConfigError
from metarec.bench.parallel import check_jobs, run_units


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
