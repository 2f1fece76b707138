"""Micro-batching: concurrent requests gathered into one call of a batch function.

    batcher = MicroBatcher(engine.run, max_batch=64, max_wait_ms=2.0)
    await batcher.start()
    answer = await batcher.submit(job)          # from any number of request handlers at once
    await batcher.close()                        # finishes what was submitted, then stops

A batch starts when ``max_batch`` jobs wait, or ``max_wait_ms`` after the oldest waiting job
arrived, whichever is first. The batch function runs in one worker thread (torch releases the
GIL in its kernels), so the event loop keeps reading requests while a batch computes; the jobs
that arrive meanwhile form the next batch. ``max_batch=1`` serves one request per call (the
unbatched baseline of the load benchmark). An answer that is an exception fails its job alone
(the others are answered); a batch function that raises for a batch of several jobs is called
again for each job alone, so that one job's failure (whatever it is) answers that job only and
its neighbours get their own answers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from metarec._errors import ConfigError

__all__ = ["MicroBatcher", "BatcherClosed"]


class BatcherClosed(RuntimeError):
    """A job submitted after :meth:`MicroBatcher.close` began (the server is shutting down)."""


class MicroBatcher:
    """Gathers jobs into batches for ``fn(jobs) -> answers`` (one answer per job, in order).

    Args:
        fn: the batch function (runs in a worker thread).
        max_batch: most jobs per call (>= 1).
        max_wait_ms: longest a job waits for others to join its batch (>= 0).
        on_batch: called with each batch's size and seconds (metrics).
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], list[Any]],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch={max_batch!r}: must be an int >= 1 (1: no batching)")
        if (
            isinstance(max_wait_ms, bool)
            or not isinstance(max_wait_ms, (int, float))
            or not max_wait_ms >= 0
        ):
            raise ConfigError(f"max_wait_ms={max_wait_ms!r}: must be a number >= 0 (milliseconds)")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, float(max_wait_ms) / 1e3
        self.on_batch = on_batch
        self._queue: deque[tuple[Any, asyncio.Future[Any], float]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closing = False
        self.batches = 0  # calls of fn so far
        self.jobs = 0  # jobs answered so far

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metarec-batch")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, job: Any) -> Any:
        """Queue ``job`` and wait for its answer (raises what the batch raised)."""
        if self._closing or self._wake is None:
            raise BatcherClosed("the server is shutting down; retry on another instance")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((job, fut, time.monotonic()))
        self._wake.set()
        return await fut

    @property
    def pending(self) -> int:
        """Jobs waiting for a batch."""
        return len(self._queue)

    async def close(self) -> None:
        """Refuse new jobs, answer every queued one, then stop the worker."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = self._queue[0][2] + self.max_wait
            while len(self._queue) < self.max_batch and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            jobs = [b[0] for b in batch]
            t0 = time.perf_counter()
            try:
                answers = await loop.run_in_executor(self._pool, self._answer, jobs)
            finally:
                self.batches += 1
                if self.on_batch is not None:
                    self.on_batch(len(jobs), time.perf_counter() - t0)
            for (_, fut, _), ans in zip(batch, answers, strict=True):
                if fut.done():  # a client that went away cancelled its future
                    continue
                if isinstance(ans, BaseException):  # this job's own failure
                    fut.set_exception(ans)
                else:
                    fut.set_result(ans)
            self.jobs += len(batch)

    def _answer(self, jobs: list[Any]) -> list[Any]:
        """``fn(jobs)``; when it raises, each job alone, so a failure is its own job's answer."""
        try:
            answers = self.fn(jobs)
            if len(answers) != len(jobs):
                raise RuntimeError(
                    f"batch function returned {len(answers)} answers for {len(jobs)} jobs"
                )
            return answers
        except Exception as e:  # noqa: BLE001 - isolated below, each job's handler reports its own
            if len(jobs) == 1:
                return [e]
        return [a for j in jobs for a in self._answer([j])]
