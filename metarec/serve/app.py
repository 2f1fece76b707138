"""The HTTP JSON service of ``metarec serve``: an ASGI app over one run.

Routes:

* ``POST /recommend`` ``{"user", "k", "support", "domain"}`` -> ``{"user", "items": [{"item", "score"}]}``
  (the shape of ``metarec recommend --json``);
* ``POST /predict`` ``{"user", "support", "items", "clip"}`` -> ``{"user", "items": [{"item", "score"}]}``
  (the items in the order asked);
* ``GET /health`` -> ``{"status": "ok", ...}`` (the run, the scoring path, batch settings, counters).

Bad input is answered ``400 {"error": message}`` with the message ``metarec recommend`` prints
for the same input; a body or list over the size limits ``413``; a request while the server
drains for shutdown ``503``. Requests are queued to a :class:`~metarec.serve.batcher.MicroBatcher`
so that concurrent ones share one adaptation.

The app is a plain ASGI callable (three routes need no framework): per request it reads the
body within the size limit, parses and validates it, and sends one JSON answer, which costs
about half the server CPU of the same routes on Starlette (``benchmarks/serve_load.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from metarec._errors import CheckpointError, ConfigError, MetarecError
from metarec.runs.guard import Diverged
from metarec.serve.answers import Engine
from metarec.serve.batcher import BatcherClosed, MicroBatcher
from metarec.serve.requests import (
    Limits,
    PayloadTooLarge,
    parse_body,
    parse_predict,
    parse_recommend,
)

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
            answers ``400`` with the message of ``metarec recommend``; ``"fallback"`` serves that
            user the meta-learned initialisation and adds a ``"warning"`` field to its answer.
    """

    max_batch: int = 64
    max_wait_ms: float = 2.0
    steps: int | None = None
    lr: float | None = None
    batched_kernel: bool = True
    limits: Limits = field(default_factory=Limits)
    on_diverge: str = "error"

    def __post_init__(self) -> None:
        if self.on_diverge not in ("error", "fallback"):
            raise ConfigError(
                f"on_diverge={self.on_diverge!r}: choose 'error' or 'fallback' "
                "(--on-diverge error|fallback)"
            )


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ROUTES = {"/recommend": "POST", "/predict": "POST", "/health": "GET"}
_JSON_HEADERS = [(b"content-type", b"application/json")]
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class _Disconnected(Exception):
    """The client went away before its body arrived."""


def _require_uvicorn() -> None:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError(
            'metarec serve needs the "serve" extra: pip install "metarec[serve]"'
        ) from None


class ServeApp:
    """The ASGI app of one served run (build it with :func:`create_app`).

    ``app.engine`` answers batches, ``app.batcher`` gathers them; both are also on
    ``app.state``. Counters in ``app.counts``: ``answered``, ``bad_requests`` (4xx) and
    ``failed`` (5xx: a diverged adaptation, non-finite scores of the run's own weights).
    """

    def __init__(self, meta: Any, config: ServeConfig) -> None:
        self.meta, self.config, self.limits = meta, config, config.limits
        self.engine = Engine(
            meta,
            steps=config.steps,
            lr=config.lr,
            batched=config.batched_kernel,
            on_diverge=config.on_diverge,
        )
        self.batcher = MicroBatcher(
            self.engine.run, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms
        )
        self.state = SimpleNamespace(engine=self.engine, batcher=self.batcher)
        self.counts = {"answered": 0, "bad_requests": 0, "failed": 0}
        self._parse = {"/recommend": parse_recommend, "/predict": parse_predict}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # ------------------------------------------------------------------ HTTP
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        want = _ROUTES.get(path)
        if want is None or method != want:
            why, code = ("no such route", 404) if want is None else ("method not allowed", 405)
            await _send(
                send,
                code,
                {
                    "error": f"{method} {path}: {why}; the routes are POST /recommend, "
                    "POST /predict and GET /health"
                },
            )
            return
        if path == "/health":
            await _send(send, 200, self.health())
            return
        try:
            code, out = await self._answer(path, scope, receive)
            body = _encode(out).encode()  # allow_nan=False: never a NaN on the wire
        except _Disconnected:
            return
        except Exception:  # noqa: BLE001 - a bug must not take the server down; it is logged
            _log.exception("metarec serve: %s %s failed", method, path)
            self.counts["failed"] += 1
            code = 500
            body = _encode(
                {"error": f"{method} {path}: internal error; see the server's log"}
            ).encode()
        await _send_bytes(send, code, body)

    async def _answer(self, path: str, scope: Scope, receive: Receive) -> tuple[int, Any]:
        try:
            body = await self._read(scope, receive)
            job = self._parse[path](parse_body(body, self.limits), self.meta, self.limits)
            self.engine.check(job)
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
        """What ``GET /health`` answers: the run, the scoring path, batch settings, counters."""
        meta, cfg, batcher = self.meta, self.config, self.batcher
        return {
            "status": "ok",
            "run": str(meta.run_dir),
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
            "answered": self.counts["answered"],
            "bad_requests": self.counts["bad_requests"],
            "failed": self.counts["failed"],
            "batches": batcher.batches,
            "pending": batcher.pending,
        }

    # ------------------------------------------------------------------ lifespan
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await self.batcher.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.batcher.close()  # every request still queued is answered first
                _log.info(
                    "metarec serve: drained after %d answers in %d batches",
                    self.batcher.jobs,
                    self.batcher.batches,
                )
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send(send: Send, status: int, obj: Any) -> None:
    await _send_bytes(send, status, _encode(obj).encode())


async def _send_bytes(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(meta: Any, config: ServeConfig | None = None) -> ServeApp:
    """An ASGI app serving ``meta`` (a :class:`~metarec.recommend.load.MetaModel`).

    Example:
        >>> app = create_app(load_run("runs/cold"), ServeConfig(max_batch=32))   # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)                        # doctest: +SKIP
    """
    _require_uvicorn()
    return ServeApp(meta, config or ServeConfig())
