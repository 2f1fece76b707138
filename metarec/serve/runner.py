"""Running the service: :func:`serve` (blocking, what ``metarec serve`` calls) and
:class:`ServerThread` (in-process, for tests, examples and notebooks).

Both bind ``127.0.0.1`` unless told otherwise; beyond this machine, give the server a bearer
token (:func:`read_token`: ``--token-file`` or ``METAREC_SERVE_TOKEN``) and put TLS in front of
it. ``port=0`` picks a free port; the bound address is printed (:func:`serve`) or available as
:attr:`ServerThread.url`. :func:`serve` accepts connections at once (``GET /health`` answers
while the run loads) and prints its ready line once ``GET /ready`` answers 200. The connections
are bounded by :class:`~metarec.serve.protocol.HttpLimits` (header size, read time-outs,
keep-alive, connection count). On SIGINT or SIGTERM the server stops accepting connections,
answers every request already received (queued ones included), then exits; a second SIGINT
exits at once.
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

from metarec._errors import ConfigError, require_extra
from metarec._io.paths import need_file
from metarec.serve.app import ServeConfig, create_app
from metarec.serve.protocol import HttpLimits, limited_protocol

__all__ = ["serve", "serve_socket", "ServerThread", "bind", "read_token", "TOKEN_ENV"]

TOKEN_ENV = "METAREC_SERVE_TOKEN"
"""The environment variable that may hold the server's bearer token."""


def read_token(token_file: str | os.PathLike[str] | None = None) -> str | None:
    """The bearer token of ``token_file`` (its content, surrounding whitespace dropped), else of
    the environment variable :data:`TOKEN_ENV`, else ``None`` (no authentication).

    Raises:
        ConfigError: the file is missing, not a regular file, empty, or holds more than one line.
    """
    if token_file is None:
        env = os.environ.get(TOKEN_ENV)
        if env is not None and not env.strip():
            raise ConfigError(f"{TOKEN_ENV} is set but empty; set it to the token, or unset it")
        return env.strip() if env else None
    p = need_file(token_file, "--token-file", "write the token into a file", ConfigError)
    text = p.read_text(encoding="utf-8", errors="strict").strip()
    if not text or "\n" in text:
        raise ConfigError(
            f"--token-file {str(p)!r}: {'empty' if not text else 'more than one line'}; the file holds the "
            'bearer token alone, e.g. the output of: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return text


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


def _uvicorn_server(
    app: Any, *, graceful_s: float, log_level: str, in_main_thread: bool, http: HttpLimits
) -> Any:
    require_extra("uvicorn", "serve", "metarec serve")
    require_extra("httptools", "serve", "metarec serve")
    import uvicorn

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
        # uvicorn's own keep-alive time-out; the other limits are the protocol's (serve.protocol)
        timeout_keep_alive=http.keep_alive,  # type: ignore[arg-type]
        http=limited_protocol(http),
    )
    return _Server(config)


def _file_limit(http: HttpLimits) -> HttpLimits:
    """Raise this process's open-file limit to hold ``max_connections`` (plus some for the run's
    files); when the hard limit is lower, lower ``max_connections`` to fit, with a warning."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return http
    need = http.max_connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return http
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft >= need:
        return http
    fit = max(1, soft - 64)
    print(
        f"metarec serve: warning: the open-file limit is {soft}; --max-connections lowered from "
        f"{http.max_connections} to {fit} (raise it with ulimit -n)",
        file=sys.stderr,
        flush=True,
    )
    return dataclasses.replace(http, max_connections=fit)


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
    http: HttpLimits | None = None,
) -> None:
    """Serve run directory ``run`` over HTTP until SIGINT / SIGTERM (then drain and return).

    Args:
        run: a run directory written by ``metarec train``.
        host, port: where to listen (``port=0``: a free port; the URL is printed).
        config: batching, adaptation budget, size limits and token (:class:`ServeConfig`).
        threads: torch intra-op threads per worker (default 1: the event loop keeps the other
            cores; ``None`` leaves torch's setting).
        workers: server processes sharing the listening socket (each loads the run and batches
            the requests it accepts); ``1`` serves from this process.
        graceful_s: how long shutdown waits for requests in flight.
        on_ready: called with the URL once every worker is ready (default: print it).
        http: connection limits and time-outs (:class:`~metarec.serve.protocol.HttpLimits`).

    Raises:
        ConfigError: a bad setting, a missing ``serve`` extra, or a run that cannot be loaded
            (checked before the port is bound when cheap: no manifest; else once loading fails).
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"threads={threads!r}: must be an int >= 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r}: must be an int >= 1")
    cfg = config or ServeConfig()
    require_extra("uvicorn", "serve", "metarec serve")
    require_extra("httptools", "serve", "metarec serve")
    require_extra("prometheus_client", "serve", "metarec serve (GET /metrics)")
    from metarec.runs.checkpoint import read_manifest

    read_manifest(run)  # a folder that holds no run: one line before the port is bound
    limits = _file_limit(http or HttpLimits())
    sock = bind(host, port)
    url = _url(sock)
    ready = on_ready or _print_ready
    try:
        if workers == 1:
            print(
                f"metarec serve: loading {str(run)!r} on {url} (GET /health answers now, /ready once loaded)",
                file=sys.stderr,
                flush=True,
            )
            serve_socket(
                run,
                sock,
                cfg,
                threads=threads,
                graceful_s=graceful_s,
                log_level=log_level,
                on_ready=lambda path, steps: ready(_banner(url, run, path, cfg, steps, 1)),
                http=limits,
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
                limits,
            )
    finally:
        sock.close()


def _banner(
    url: str, run: Any, path: str, cfg: ServeConfig, steps: int | None, workers: int
) -> str:
    many = f", {workers} workers" if workers > 1 else ""
    budget = "the method's own steps" if steps is None else f"{steps} step(s)"
    auth = ", bearer token" if cfg.token else ""
    return f"{url} (run {Path(run)}, {path} path, max_batch {cfg.max_batch}, {budget}{many}{auth})"


def serve_socket(
    run: Any,
    sock: socket.socket,
    cfg: ServeConfig,
    *,
    threads: int | None,
    graceful_s: float,
    log_level: str,
    on_ready: Callable[[str, int | None], None],
    http: HttpLimits | None = None,
) -> None:
    """Serve ``run`` on the listening socket ``sock`` from this process (one worker): connections
    are accepted at once, the run is loaded meanwhile (``/ready`` answers 503 until it is).

    Raises:
        MetarecError: the run failed to load (the server stops first).
    """
    from metarec.recommend.load import load_run

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    failed: list[BaseException] = []
    holder: dict[str, Any] = {}

    def stop(e: BaseException) -> None:
        failed.append(e)
        holder["server"].should_exit = True

    app = create_app(None, cfg, loader=lambda: load_run(run), on_load_error=stop)
    server = _uvicorn_server(
        app,
        graceful_s=graceful_s,
        log_level=log_level,
        in_main_thread=True,
        http=http or HttpLimits(),
    )
    holder["server"] = server

    async def main() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not app.ready and not task.done() and not failed:
            await asyncio.sleep(0.01)
        if app.ready and app.engine is not None:
            on_ready(app.engine.path, app.engine.steps)
        await task

    _run_loop(main())
    if failed:
        raise failed[0]


def _supervise(
    run: Any,
    sock: socket.socket,
    cfg: ServeConfig,
    threads: int | None,
    graceful_s: float,
    log_level: str,
    workers: int,
    on_ready: Callable[[str, int | None], None],
    http: HttpLimits,
) -> None:
    """``workers`` processes serving ``sock``; SIGINT / SIGTERM are passed on, and each drains."""
    raw = dataclasses.asdict(cfg)
    raw.pop("token")  # never on a command line: the workers get it in their environment
    spec = json.dumps(
        {
            "run": str(run),
            "fd": sock.fileno(),
            "config": raw,
            "http": dataclasses.asdict(http),
            "threads": threads,
            "graceful_s": graceful_s,
            "log_level": log_level,
        }
    )
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if cfg.token:
        env[TOKEN_ENV] = cfg.token
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
                    env=env,
                )
            )
        info = [json.loads(p.stdout.readline() or "{}") for p in procs]  # type: ignore[union-attr]
        if not all(i.get("ready") for i in info):
            forward(signal.SIGTERM, None)
            why = next((i["error"] for i in info if i.get("error")), "its error is printed above")
            raise ConfigError(f"metarec serve: a worker failed to start: {why}")
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
    if not line.startswith(("http://127.", "http://[::1]", "http://localhost")) and (
        "bearer token" not in line
    ):
        print(
            "metarec serve: warning: listening beyond this machine without a bearer token; pass "
            f"--token-file (or set {TOKEN_ENV}), and put TLS in front",
            file=sys.stderr,
            flush=True,
        )


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServerThread:
    """A server in a background thread of this process: ``with ServerThread(meta) as srv: srv.url``.

    Args:
        meta: a loaded run (:func:`~metarec.recommend.load.load_run`), or a run directory
            (loaded first); ``None`` with ``loader``.
        config: as for :func:`serve`.
        host, port: where to listen (default: a free port on 127.0.0.1).
        http: connection limits and time-outs, as for :func:`serve`.
        loader: a function returning the loaded run, called once the server accepts
            connections (``/ready`` answers 503 until it returns).

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
        http: HttpLimits | None = None,
        loader: Callable[[], Any] | None = None,
    ) -> None:
        if isinstance(meta, (str, os.PathLike)):
            from metarec.recommend.load import load_run

            meta = load_run(meta)
        self.app = create_app(meta, config, loader=loader)
        self._sock = bind(host, port)
        self.url = _url(self._sock)
        self._server = _uvicorn_server(
            self.app,
            graceful_s=graceful_s,
            log_level="warning",
            in_main_thread=False,
            http=http or HttpLimits(),
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
