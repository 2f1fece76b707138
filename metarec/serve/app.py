"""The HTTP JSON service of ``metarec serve``: an ASGI app over one run.

Routes:

* ``POST /recommend`` ``{"user", "k", "support", "domain"}`` -> ``{"user", "items": [{"item", "score"}]}``
  (the shape of ``metarec recommend --json``; ids always strings; ``"warnings"`` when there is one);
* ``POST /predict`` ``{"user", "support", "items", "clip"}`` -> the same shape, the items in the
  order asked;
* ``GET /health``: liveness, ``200`` whenever the process answers (``"status"``: ``"loading"``,
  ``"ok"`` or ``"draining"``, then the run, the scoring path, batch settings, counters);
* ``GET /ready``: readiness, ``200`` once the run is loaded and the batcher runs, ``503`` while
  loading (a large run takes seconds) and while draining for shutdown;
* ``GET /openapi.json``: the OpenAPI 3.0 document, written from the schema that validates the
  bodies (:mod:`metarec.serve.schema`); ``GET /docs``: a docs page on it, served with its
  assets from this process (no network needed; the ``swagger-ui-bundle`` package of the
  ``serve`` extra);
* ``GET /metrics``: Prometheus text format: requests by route and status, request latency,
  batch sizes and times, adaptation failures, diverged users, readiness and queued requests.

Bad input is answered ``400 {"error": message}`` with the message ``metarec recommend`` prints
for the same input; a body or list over the size limits ``413``; a request while the server
loads or drains ``503``. With a bearer token (:attr:`ServeConfig.token`) the prediction routes
and ``/metrics`` answer ``401`` unless the request sends ``Authorization: Bearer <token>``
(``/health``, ``/ready``, ``/openapi.json`` and ``/docs`` stay open for probes and readers).
Requests are queued to a :class:`~metarec.serve.batcher.MicroBatcher` so that concurrent ones
share one adaptation; each is validated completely before it is queued, and one request's
failure answers that request only.

The app is a plain ASGI callable (a few routes need no framework): per request it reads the
body within the size limit, parses and validates it, and sends one JSON answer, which costs
about half the server CPU of the same routes on Starlette (``benchmarks/serve_load.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from metarec._errors import CheckpointError, ConfigError, MetarecError, require_extra
from metarec.runs.guard import Diverged
from metarec.serve.answers import Engine
from metarec.serve.batcher import BatcherClosed, MicroBatcher
from metarec.serve.docs import docs_file
from metarec.serve.metrics import ServeStats
from metarec.serve.requests import (
    Limits,
    PayloadTooLarge,
    parse_body,
    parse_predict,
    parse_recommend,
)
from metarec.serve.schema import openapi

__all__ = ["ServeConfig", "ServeApp", "create_app"]

_log = logging.getLogger("metarec.serve")


@dataclass(frozen=True)
class ServeConfig:
    """Settings of a served run.

    Args:
        max_batch: most requests adapted together (1: no batching).
        max_wait_ms: longest a request waits for others to join its batch.
        steps, lr: the adaptation budget (default: the run's).
        batched_kernel: score with the batched kernel when the run's model has one.
        limits: request size limits (:class:`~metarec.serve.requests.Limits`).
        on_diverge: a user whose adaptation diverges (non-finite weights or scores): ``"error"``
            answers ``500`` with the message of ``metarec recommend``; ``"fallback"`` serves that
            user the meta-learned initialisation and says so in the answer's ``"warnings"``.
        token: a bearer token the prediction routes and ``/metrics`` require (``None``: no
            authentication); never shown in ``repr``.
    """

    max_batch: int = 64
    max_wait_ms: float = 2.0
    steps: int | None = None
    lr: float | None = None
    batched_kernel: bool = True
    limits: Limits = field(default_factory=Limits)
    on_diverge: str = "error"
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.on_diverge not in ("error", "fallback"):
            raise ConfigError(
                f"on_diverge={self.on_diverge!r}: choose 'error' or 'fallback' "
                "(--on-diverge error|fallback)"
            )
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise ConfigError("token: empty; give a non-empty bearer token, or none")


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ROUTES = {
    "/recommend": "POST",
    "/predict": "POST",
    "/health": "GET",
    "/ready": "GET",
    "/metrics": "GET",
    "/openapi.json": "GET",
    "/docs": "GET",
}
_PROTECTED = ("/recommend", "/predict", "/metrics")
_JSON = b"application/json"
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class _Disconnected(Exception):
    """The client went away before its body arrived."""


def _require_uvicorn() -> None:
    require_extra("uvicorn", "serve", "metarec serve")


class ServeApp:
    """The ASGI app of one served run (build it with :func:`create_app`).

    ``app.engine`` answers batches, ``app.batcher`` gathers them; both are also on
    ``app.state`` (``None`` until the run is loaded). Counters in ``app.counts``: ``answered``,
    ``bad_requests`` (4xx) and ``failed`` (5xx: a diverged adaptation, non-finite scores of the
    run's own weights).
    """

    def __init__(
        self,
        meta: Any,
        config: ServeConfig,
        *,
        loader: Callable[[], Any] | None = None,
        on_load_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.config, self.limits = config, config.limits
        self.meta: Any = None
        self.engine: Engine | None = None
        self.batcher: MicroBatcher | None = None
        self.state = SimpleNamespace(engine=None, batcher=None)
        self.counts = {"answered": 0, "bad_requests": 0, "failed": 0}
        self.stats = ServeStats(("/recommend", "/predict"))
        self.status = "loading"
        self.load_error: BaseException | None = None
        self._loader, self._on_load_error = loader, on_load_error
        self._loading: asyncio.Task[None] | None = None
        self._token = config.token.strip().encode() if config.token else None
        self._parse = {"/recommend": parse_recommend, "/predict": parse_predict}
        self._openapi = _encode(openapi(config.limits)).encode()
        self.run_name = ""
        if meta is not None:
            self._build(meta)

    def _build(self, meta: Any) -> None:
        """Everything that needs the loaded run (the kernel's catalogue precomputation included)."""
        config = self.config
        engine = Engine(
            meta,
            steps=config.steps,
            lr=config.lr,
            batched=config.batched_kernel,
            on_diverge=config.on_diverge,
        )
        self.batcher = MicroBatcher(
            engine.run,
            max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms,
            on_batch=self._on_batch,
        )
        self.meta, self.engine = meta, engine
        self.state.engine, self.state.batcher = engine, self.batcher
        self.run_name = str(meta.run_dir)

    def _on_batch(self, size: int, seconds: float) -> None:
        self.stats.batch(size, seconds)

    @property
    def ready(self) -> bool:
        """Whether requests are answered (the run is loaded and not draining)."""
        return self.status == "ok"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # ------------------------------------------------------------------ HTTP
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        want = _ROUTES.get(path) or ("GET" if path.startswith("/docs/") else None)
        if want is None or method != want:
            why, code = ("no such route", 404) if want is None else ("method not allowed", 405)
            await self._reply(
                send,
                path,
                code,
                {
                    "error": f"{method} {path}: {why}; the routes are POST /recommend, POST /predict, "
                    "GET /health, /ready, /metrics, /openapi.json and /docs"
                },
            )
            return
        if path in _PROTECTED and not self._authorized(scope):
            await self._reply(
                send,
                path,
                401,
                {
                    "error": f"{method} {path}: missing or wrong bearer token; send the header "
                    "'Authorization: Bearer <token>' with the server's token (--token-file or METAREC_SERVE_TOKEN)"
                },
                [(b"www-authenticate", b'Bearer realm="metarec"')],
            )
            return
        if method == "GET":
            await self._get(path, send)
            return
        t0 = time.perf_counter()
        try:
            code, out = await self._answer(path, scope, receive)
            body = _encode(out).encode("utf-8", "backslashreplace")  # never a NaN on the wire
        except _Disconnected:
            return
        except Exception:  # noqa: BLE001 - a bug must not take the server down; it is logged
            _log.exception("metarec serve: %s %s failed", method, path)
            self.counts["failed"] += 1
            code = 500
            body = _encode(
                {"error": f"{method} {path}: internal error; see the server's log"}
            ).encode()
        extra = [(b"retry-after", b"1")] if code == 503 else []
        await self._send(send, path, code, body, _JSON, extra)
        self.stats.latency[path].observe(time.perf_counter() - t0)

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, cred = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    cred.strip(), self._token
                )
        return False

    async def _get(self, path: str, send: Send) -> None:
        if path == "/health":
            await self._reply(send, path, 200, self.health())
        elif path == "/ready":
            ok = self.ready
            state: dict[str, Any] = {"status": self.status, "ready": ok}
            if not ok:
                state["error"] = (
                    f"not ready: {'the run is still loading' if self.status == 'loading' else 'draining for shutdown'}"
                )
            await self._reply(send, path, 200 if ok else 503, state)
        elif path == "/openapi.json":
            await self._send(send, path, 200, self._openapi, _JSON)
        elif path == "/metrics":
            text, ctype = self.metrics()
            await self._send(send, path, 200, text, ctype)
        else:
            await self._docs(path, send)

    async def _docs(self, path: str, send: Send) -> None:
        code, body, ctype, headers = docs_file(path)
        await self._send(send, path, code, body, ctype, headers)

    async def _answer(self, path: str, scope: Scope, receive: Receive) -> tuple[int, Any]:
        if not self.ready or self.batcher is None:
            why = (
                "the run is still loading"
                if self.status == "loading"
                else "the server is draining for shutdown"
            )
            return 503, {"error": f"{why}; retry when GET /ready answers 200"}
        try:
            body = await self._read(scope, receive)
            job = self._parse[path](parse_body(body, self.limits), self.meta, self.limits)
            self.engine.check(job)  # type: ignore[union-attr]
        except PayloadTooLarge as e:
            self.counts["bad_requests"] += 1
            return 413, {"error": str(e)}
        except MetarecError as e:
            self.counts["bad_requests"] += 1
            return 400, {"error": str(e)}
        try:
            out = await self.batcher.submit(job)
        except BatcherClosed as e:
            return 503, {"error": str(e)}
        except (Diverged, CheckpointError) as e:  # the served run or its settings, not the request
            self.counts["failed"] += 1
            return 500, {"error": str(e)}
        except MetarecError as e:  # a check only the library path makes
            self.counts["bad_requests"] += 1
            return 400, {"error": str(e)}
        self.counts["answered"] += 1
        return 200, out

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        cap = self.limits.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > cap:
                raise PayloadTooLarge(
                    f"request body: {int(value):,} bytes, over the server's limit of "
                    f"{cap:,} bytes (--max-body-bytes); send fewer support rows"
                )
        chunks, n, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            chunk = msg.get("body", b"")
            n += len(chunk)
            if n > cap:
                raise PayloadTooLarge(
                    f"request body: over the server's limit of {cap:,} bytes "
                    "(--max-body-bytes); send fewer support rows"
                )
            chunks.append(chunk)
            more = msg.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers: the status; once loaded, the run, the scoring path,
        batch settings and counters."""
        if self.meta is None or self.engine is None or self.batcher is None:
            return {"status": self.status}
        meta, cfg, batcher = self.meta, self.config, self.batcher
        return {
            "status": self.status,
            "run": self.run_name,
            "model": (meta.manifest.get("model") or {}).get("name"),
            "algorithm": meta.algo.name if hasattr(meta, "algo") else meta.name,
            "feedback": meta.feedback,
            "items": len(meta.item_ids) - 1,
            "steps": self.engine.steps,
            "path": self.engine.path,
            "domain_filtering": self.engine.domain_supported,
            "on_diverge": cfg.on_diverge,
            "max_batch": cfg.max_batch,
            "max_wait_ms": cfg.max_wait_ms,
            "auth": self._token is not None,
            "answered": self.counts["answered"],
            "bad_requests": self.counts["bad_requests"],
            "failed": self.counts["failed"],
            "batches": batcher.batches,
            "pending": batcher.pending,
        }

    def metrics(self) -> tuple[bytes, bytes]:
        """``GET /metrics``: the Prometheus exposition (text format 0.0.4) and its content type."""
        return self.stats.render(
            failed=self.counts["failed"],
            bad_requests=self.counts["bad_requests"],
            diverged=self.engine.diverged if self.engine is not None else 0,
            ready=self.ready,
            pending=self.batcher.pending if self.batcher is not None else 0,
        )

    # ------------------------------------------------------------------ sending
    async def _reply(
        self,
        send: Send,
        route: str,
        status: int,
        obj: Any,
        headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    ) -> None:
        await self._send(
            send, route, status, _encode(obj).encode("utf-8", "backslashreplace"), _JSON, headers
        )

    async def _send(
        self,
        send: Send,
        route: str,
        status: int,
        body: bytes,
        ctype: bytes,
        headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    ) -> None:
        self.stats.answered(
            route if route in _ROUTES else "/docs/*" if route.startswith("/docs/") else "other",
            status,
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # ------------------------------------------------------------------ lifespan
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if self.meta is not None:
                    await self._start()
                elif self._loader is not None:  # liveness now, readiness once loaded
                    self._loading = asyncio.get_running_loop().create_task(self._load())
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                self.status = "draining"
                if self.batcher is not None:
                    await self.batcher.close()  # every request still queued is answered first
                    _log.info(
                        "metarec serve: drained after %d answers in %d batches",
                        self.batcher.jobs,
                        self.batcher.batches,
                    )
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        assert self.batcher is not None
        await self.batcher.start()
        if self.status == "loading":
            self.status = "ok"

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            assert self._loader is not None
            meta = await loop.run_in_executor(None, self._loader)
            await loop.run_in_executor(None, self._build, meta)
            await self._start()
        except BaseException as e:  # noqa: BLE001 - reported by the runner, which stops the server
            self.load_error = e
            self.status = "failed"
            if self._on_load_error is not None:
                self._on_load_error(e)


def create_app(
    meta: Any = None,
    config: ServeConfig | None = None,
    *,
    loader: Callable[[], Any] | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> ServeApp:
    """An ASGI app serving ``meta`` (a loaded run, :func:`metarec.recommend.load.load_run`), or
    the run ``loader()`` returns: then the app answers ``/health`` at once and ``/ready`` once
    the run is loaded (``on_load_error`` is called with a loading failure).

    Example:
        >>> app = create_app(load_run("runs/cold"), ServeConfig(max_batch=32))   # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)                        # doctest: +SKIP
    """
    _require_uvicorn()
    require_extra("prometheus_client", "serve", "metarec serve (GET /metrics)")
    if (meta is None) == (loader is None):
        raise ConfigError("create_app: pass a loaded run (meta) or a loader, not both or neither")
    return ServeApp(meta, config or ServeConfig(), loader=loader, on_load_error=on_load_error)
