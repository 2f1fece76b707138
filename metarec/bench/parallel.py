"""Independent units of benchmark work, run in parallel worker processes with one thread each.

:func:`run_units` calls ``work(unit)`` for every unit and hands each result to ``done(unit,
result)`` in the calling process, as the units finish. With ``jobs=1`` the units run here, in
order (the benchmark as it always ran). With ``jobs > 1`` they run in a pool of ``jobs`` worker
processes forked from this one, so the data the caller prepared (tables, splits, catalogues) is
shared copy-on-write and never pickled: only a unit's index goes to a worker and only its result
comes back. Each worker runs torch with one intra-op thread (``torch.set_num_threads(1)``), so
``jobs`` workers use ``jobs`` cores without oversubscribing them.

``done`` runs in the calling process in completion order, so a caller that records each result
as it comes (``metarec bench`` writes each finished run to its folder) keeps everything finished
when it is interrupted. When a unit fails, no new unit starts, the units already running finish
(and are handed to ``done``), and the first error is raised.

Worker processes need the ``fork`` start method (Linux, macOS); elsewhere, and for CUDA devices
(a forked child cannot use CUDA once the parent has), ``jobs > 1`` is refused with an error that
says so.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from metarec._errors import ConfigError

__all__ = ["check_jobs", "run_units"]

U = TypeVar("U")
R = TypeVar("R")

_STATE: tuple[Sequence[Any], Callable[[Any], Any]] | None = None  # inherited by forked workers


def check_jobs(jobs: int, device: str = "cpu") -> int:
    """``jobs`` when it is a whole number >= 1 that this platform and ``device`` can run, else a
    :class:`~metarec._errors.ConfigError` naming the fix."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(
            f"jobs={jobs!r}: the number of worker processes must be an integer >= 1; pass --jobs 1 "
            "(runs one after another) or e.g. --jobs 2 (two runs at a time, one thread each)"
        )
    if jobs > 1 and "fork" not in mp.get_all_start_methods():
        raise ConfigError(
            f"jobs={jobs}: parallel runs need the 'fork' start method, which this platform lacks "
            f"(start methods: {mp.get_all_start_methods()}); pass --jobs 1"
        )
    if jobs > 1 and str(device).startswith("cuda"):
        raise ConfigError(
            f"jobs={jobs} with device {device!r}: forked worker processes cannot share the parent's "
            "CUDA context; pass --jobs 1 (one GPU runs one training at a time)"
        )
    return jobs


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_index(i: int) -> Any:
    assert _STATE is not None, "worker started outside run_units"
    units, work = _STATE
    return work(units[i])


def run_units(
    units: Sequence[U],
    work: Callable[[U], R],
    done: Callable[[U, R], None],
    *,
    jobs: int = 1,
) -> None:
    """Run ``work(unit)`` for every unit and call ``done(unit, result)`` here as each finishes.

    Args:
        units: independent units of work (e.g. one benchmark run each).
        work: the work of one unit; with ``jobs > 1`` it runs in a forked worker process, so it
            may be any callable (a closure too) but its result must pickle.
        done: called in this process with each unit and its result, in completion order
            (``jobs=1``: in the order of ``units``).
        jobs: worker processes (1: here, one after another); see :func:`check_jobs`.

    Example::

        run_units([1, 2, 3], lambda x: x * x, lambda x, r: print(x, r), jobs=2)
    """
    global _STATE
    check_jobs(jobs)
    if jobs == 1 or len(units) <= 1:
        for u in units:
            done(u, work(u))
        return
    _STATE = (units, work)
    error: BaseException | None = None
    try:
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(units)),
            mp_context=mp.get_context("fork"),
            initializer=_init_worker,
        ) as pool:
            futures = {pool.submit(_run_index, i): i for i in range(len(units))}
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except CancelledError:
                    continue
                except BaseException as e:  # the first failure stops new units from starting
                    if error is None:
                        error = e
                        for f in futures:
                            f.cancel()
                    continue
                try:
                    done(units[futures[fut]], result)
                except BaseException:  # recording failed here: start nothing more
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        _STATE = None
    if error is not None:
        raise error
