"""The HTTP JSON service of ``metarec serve``: an ASGI app (Starlette) over one run.

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
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from metarec._errors import ConfigError, MetarecError
from metarec.serve.batcher import BatcherClosed, MicroBatcher
from metarec.serve.engine import Engine
from metarec.serve.requests import (
    Limits,
    PayloadTooLarge,
    parse_body,
    parse_predict,
    parse_recommend,
)

__all__ = ["ServeConfig", "create_app"]

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
    """

    max_batch: int = 64
    max_wait_ms: float = 2.0
    steps: int | None = None
    lr: float | None = None
    batched_kernel: bool = True
    limits: Limits = field(default_factory=Limits)


def _require_starlette() -> Any:
    try:
        import starlette  # noqa: F401
    except ImportError:
        raise ConfigError(
            'metarec serve needs the "serve" extra: pip install "metarec[serve]"'
        ) from None


def create_app(meta: Any, config: ServeConfig | None = None) -> Any:
    """An ASGI app serving ``meta`` (a :class:`~metarec.adapt.MetaModel`).

    Example:
        >>> app = create_app(load_run("runs/cold"), ServeConfig(max_batch=32))   # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)                        # doctest: +SKIP
    """
    _require_starlette()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    cfg = config or ServeConfig()
    engine = Engine(meta, steps=cfg.steps, lr=cfg.lr, batched=cfg.batched_kernel)
    batcher = MicroBatcher(engine.run, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms)
    limits = cfg.limits
    counts = {"answered": 0, "bad_requests": 0}

    async def read(request: Request) -> bytes:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            raise PayloadTooLarge(
                f"request body: {int(size):,} bytes, over the server's limit of "
                f"{limits.max_body_bytes:,} bytes (--max-body-bytes); send fewer support rows"
            )
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limits.max_body_bytes:
                raise PayloadTooLarge(
                    f"request body: over the server's limit of {limits.max_body_bytes:,} bytes "
                    "(--max-body-bytes); send fewer support rows"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def answer(request: Request, parse: Any) -> JSONResponse:
        try:
            job = parse(parse_body(await read(request), limits), meta, limits)
            engine.check(job)
        except PayloadTooLarge as e:
            counts["bad_requests"] += 1
            return JSONResponse({"error": str(e)}, status_code=413)
        except MetarecError as e:
            counts["bad_requests"] += 1
            return JSONResponse({"error": str(e)}, status_code=400)
        try:
            out = await batcher.submit(job)
        except BatcherClosed as e:
            return JSONResponse({"error": str(e)}, status_code=503)
        except MetarecError as e:  # a check only the library path makes
            counts["bad_requests"] += 1
            return JSONResponse({"error": str(e)}, status_code=400)
        counts["answered"] += 1
        return JSONResponse(out)

    async def recommend(request: Request) -> JSONResponse:
        return await answer(request, parse_recommend)

    async def predict(request: Request) -> JSONResponse:
        return await answer(request, parse_predict)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "run": str(meta.run_dir),
                "model": meta.manifest["model"]["name"],
                "algorithm": meta.algo.name,
                "feedback": meta.feedback,
                "items": len(meta.item_ids) - 1,
                "steps": engine.steps,
                "path": engine.path,
                "domain_filtering": engine.domain_supported,
                "max_batch": cfg.max_batch,
                "max_wait_ms": cfg.max_wait_ms,
                "answered": counts["answered"],
                "bad_requests": counts["bad_requests"],
                "batches": batcher.batches,
                "pending": batcher.pending,
            }
        )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.close()  # every request still queued is answered first
            _log.info(
                "metarec serve: drained after %d answers in %d batches",
                batcher.jobs,
                batcher.batches,
            )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        code = getattr(exc, "status_code", 500)
        why = {404: "no such route", 405: "method not allowed"}.get(
            code, getattr(exc, "detail", "error")
        )
        return JSONResponse(
            {
                "error": f"{request.method} {request.url.path}: {why}; the routes are POST /recommend, "
                "POST /predict and GET /health"
            },
            status_code=code,
        )

    app = Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/recommend", recommend, methods=["POST"]),
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.engine, app.state.batcher = engine, batcher
    return app
