"""One worker process of ``metarec serve --workers N`` (started by :func:`metarec.serve.runner.serve`).

``python -m metarec.serve._worker SPEC``: ``SPEC`` is the JSON the supervisor writes (run
directory, the inherited listening socket's file descriptor, the :class:`ServeConfig`). The
worker prints one JSON line ``{"ready": true, "path": ..., "steps": ...}`` once it accepts
connections, then serves until SIGINT / SIGTERM and drains.
"""

from __future__ import annotations

import json
import socket
import sys

from metarec.serve.app import ServeConfig
from metarec.serve.requests import Limits
from metarec.serve.runner import serve_socket


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    raw = spec["config"]
    cfg = ServeConfig(**{**raw, "limits": Limits(**raw["limits"])})
    sock = socket.socket(fileno=spec["fd"])

    def ready(path: str, steps: int | None) -> None:
        print(json.dumps({"ready": True, "path": path, "steps": steps}), flush=True)

    serve_socket(
        spec["run"],
        sock,
        cfg,
        threads=spec["threads"],
        graceful_s=spec["graceful_s"],
        log_level=spec["log_level"],
        on_ready=ready,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
