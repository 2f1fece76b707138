"""``metarec serve``: an HTTP JSON service that adapts cold users and recommends, in batches.

    from metarec.serve import ServerThread, ServeConfig
    with ServerThread("runs/cold", ServeConfig(max_batch=64)) as srv:   # a free port on 127.0.0.1
        ...  # POST srv.url + "/recommend" {"user": "u", "k": 10, "support": [{"item": "1", "rating": 5}]}

Modules: :mod:`~metarec.serve.schema` (the one request/response schema: validation and
``/openapi.json``), :mod:`~metarec.serve.requests` (validated request bodies, size limits),
:mod:`~metarec.serve.kernels` (batched adapt-and-score for the models that declare one),
:mod:`~metarec.serve.answers` (a batch of requests -> answers), :mod:`~metarec.serve.batcher`
(micro-batching of concurrent requests, each failure its own request's),
:mod:`~metarec.serve.app` (the ASGI app: routes, auth, readiness),
:mod:`~metarec.serve.metrics` (``/metrics``), :mod:`~metarec.serve.docs` (the offline docs page),
:mod:`~metarec.serve.protocol` (connection limits and time-outs) and
:mod:`~metarec.serve.runner` (running it; graceful shutdown). Needs the ``serve`` extra
(``pip install "metarec[serve]"``: uvicorn with httptools, prometheus-client, swagger-ui-bundle;
uvloop is used when installed).
"""

from metarec.serve.answers import Engine
from metarec.serve.app import ServeConfig, create_app
from metarec.serve.batcher import MicroBatcher
from metarec.serve.protocol import HttpLimits
from metarec.serve.requests import Job, Limits
from metarec.serve.runner import ServerThread, read_token, serve
from metarec.serve.schema import openapi

__all__ = [
    "ServeConfig",
    "create_app",
    "MicroBatcher",
    "Engine",
    "HttpLimits",
    "Job",
    "Limits",
    "ServerThread",
    "openapi",
    "read_token",
    "serve",
]
