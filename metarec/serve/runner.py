"""Running the service: :func:`serve` (blocking, what ``metarec serve`` calls) and
:class:`ServerThread` (in-process, for tests, examples and notebooks).

Both bind ``127.0.0.1`` unless told otherwise (the service has no authentication: expose it
through a proxy that has). ``port=0`` picks a free port; the bound address is printed
(:func:`serve`) or available as :attr:`ServerThread.url`. On SIGINT or SIGTERM the server stops
accepting connections, answers every request already received (queued ones included), then
exits; a second SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metarec._errors import ConfigError
from metarec.serve.app import ServeConfig, create_app

__all__ = ["serve", "serve_socket", "ServerThread", "bind"]


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free port)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port={port!r}: must be an int in 0..65535 (0: a free port)")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ConfigError(
            f"host={host!r}: cannot be resolved ({e}); pass an address such as 127.0.0.1"
        ) from None
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"{host}:{port}: cannot bind ({e.strerror}); choose another --port, or 0 for a free one"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: Any, *, graceful_s: float, log_level: str, in_main_thread: bool) -> Any:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(
            'metarec serve needs the "serve" extra: pip install "metarec[serve]"'
        ) from None

    class _Server(uvicorn.Server):
        """uvicorn's server with our signal handling: drain and return, never re-raise."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            if not in_main_thread or threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        # uvicorn annotates this int | None, but passes it to asyncio.wait_for(timeout=), a float
        timeout_graceful_shutdown=graceful_s,  # type: ignore[arg-type]
        server_header=False,
        ws="none",
        # no X-Forwarded-For parsing: nothing is logged per request, and it costs CPU on each
        proxy_headers=False,
    )
    return _Server(config)


def serve(
    run: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    threads: int | None = 1,
    workers: int = 1,
    graceful_s: float = 30.0,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve run directory ``run`` over HTTP until SIGINT / SIGTERM (then drain and return).

    Args:
        run: a run directory written by ``metarec train``.
        host, port: where to listen (``port=0``: a free port; the URL is printed).
        config: batching, adaptation budget and size limits (:class:`ServeConfig`).
        threads: torch intra-op threads per worker (default 1: the event loop keeps the other
            cores; ``None`` leaves torch's setting).
        workers: server processes sharing the listening socket (each loads the run and batches
            the requests it accepts); ``1`` serves from this process.
        graceful_s: how long shutdown waits for requests in flight.
        on_ready: called with the URL once the server accepts connections (default: print it).
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"threads={threads!r}: must be an int >= 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r}: must be an int >= 1")
    cfg = config or ServeConfig()
    sock = bind(host, port)
    url = _url(sock)
    ready = on_ready or _print_ready
    try:
        if workers == 1:
            serve_socket(
                run,
                sock,
                cfg,
                threads=threads,
                graceful_s=graceful_s,
                log_level=log_level,
                on_ready=lambda path, steps: ready(_banner(url, run, path, cfg, steps, 1)),
            )
        else:
            _supervise(
                run,
                sock,
                cfg,
                threads,
                graceful_s,
                log_level,
                workers,
                lambda path, steps: ready(_banner(url, run, path, cfg, steps, workers)),
            )
    finally:
        sock.close()


def _banner(
    url: str, run: Any, path: str, cfg: ServeConfig, steps: int | None, workers: int
) -> str:
    many = f", {workers} workers" if workers > 1 else ""
    budget = "the method's own steps" if steps is None else f"{steps} step(s)"
    return f"{url} (run {Path(run)}, {path} path, max_batch {cfg.max_batch}, {budget}{many})"


def serve_socket(
    run: Any,
    sock: socket.socket,
    cfg: ServeConfig,
    *,
    threads: int | None,
    graceful_s: float,
    log_level: str,
    on_ready: Callable[[str, int | None], None],
) -> None:
    """Serve ``run`` on the listening socket ``sock`` from this process (one worker)."""
    from metarec.recommend.load import load_run

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    app = create_app(load_run(run), cfg)
    server = _uvicorn_server(app, graceful_s=graceful_s, log_level=log_level, in_main_thread=True)
    engine = app.state.engine

    async def main() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            on_ready(engine.path, engine.steps)
        await task

    _run_loop(main())


def _supervise(
    run: Any,
    sock: socket.socket,
    cfg: ServeConfig,
    threads: int | None,
    graceful_s: float,
    log_level: str,
    workers: int,
    on_ready: Callable[[str, int | None], None],
) -> None:
    """``workers`` processes serving ``sock``; SIGINT / SIGTERM are passed on, and each drains."""
    spec = json.dumps(
        {
            "run": str(run),
            "fd": sock.fileno(),
            "config": dataclasses.asdict(cfg),
            "threads": threads,
            "graceful_s": graceful_s,
            "log_level": log_level,
        }
    )
    procs: list[subprocess.Popen[str]] = []

    def forward(sig: int, frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "metarec.serve._worker", spec],
                    pass_fds=(sock.fileno(),),
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        info = [json.loads(p.stdout.readline() or "{}") for p in procs]  # type: ignore[union-attr]
        if not all(i.get("ready") for i in info):
            forward(signal.SIGTERM, None)
            raise ConfigError(
                "metarec serve: a worker failed to start (its error is printed above)"
            )
        on_ready(info[0]["path"], info[0]["steps"])
        codes = [p.wait() for p in procs]
        if any(codes):
            raise ConfigError(f"metarec serve: worker exit statuses {codes}; see the errors above")
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()


def _run_loop(coro: Any) -> None:
    """Run ``coro`` on uvloop when it is installed (less CPU per request), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


def _print_ready(line: str) -> None:
    print(f"metarec serve: listening on {line}; Ctrl+C to stop", flush=True)
    if not line.startswith(("http://127.", "http://[::1]", "http://localhost")):
        print(
            "metarec serve: warning: listening beyond this machine; the service has no authentication",
            file=sys.stderr,
            flush=True,
        )


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServerThread:
    """A server in a background thread of this process: ``with ServerThread(meta) as srv: srv.url``.

    Args:
        meta: a :class:`~metarec.recommend.load.MetaModel` (or a run directory).
        config: as for :func:`serve`.
        host, port: where to listen (default: a free port on 127.0.0.1).

    :meth:`stop` (also on leaving the ``with`` block) drains as :func:`serve` does on SIGTERM.
    """

    def __init__(
        self,
        meta: Any,
        config: ServeConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_s: float = 30.0,
    ) -> None:
        if isinstance(meta, (str, os.PathLike)):
            from metarec.recommend.load import load_run

            meta = load_run(meta)
        self.app = create_app(meta, config)
        self._sock = bind(host, port)
        self.url = _url(self._sock)
        self._server = _uvicorn_server(
            self.app, graceful_s=graceful_s, log_level="warning", in_main_thread=False
        )
        self._thread = threading.Thread(target=self._run, name="metarec-serve", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            _run_loop(self._server.serve(sockets=[self._sock]))
        except BaseException as e:  # noqa: BLE001 - reported by start()/stop()
            self._error = e

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start serving; returns once connections are accepted."""
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 100)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.01)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"metarec serve did not start within {timeout} s: {self._error!r}")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Drain and stop (requests in flight are answered first)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
        if self._error is not None:
            raise RuntimeError(f"metarec serve failed: {self._error!r}") from self._error

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
