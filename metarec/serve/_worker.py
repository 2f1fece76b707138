"""One worker process of ``metarec serve --workers N`` (started by :func:`metarec.serve.runner.serve`).

``python -m metarec.serve._worker SPEC``: ``SPEC`` is the JSON the supervisor writes (run
directory, the inherited listening socket's file descriptor, the :class:`ServeConfig` without
its token, the :class:`~metarec.serve.protocol.HttpLimits`); the bearer token, if any, comes in
the environment (``METAREC_SERVE_TOKEN``), never on the command line. The worker prints one
JSON line ``{"ready": true, "path": ..., "steps": ...}`` once the run is loaded (or
``{"ready": false, "error": ...}``), then serves until SIGINT / SIGTERM and drains.
"""

from __future__ import annotations

import json
import socket
import sys

from metarec._errors import MetarecError
from metarec.serve.app import ServeConfig
from metarec.serve.protocol import HttpLimits
from metarec.serve.requests import Limits
from metarec.serve.runner import read_token, serve_socket


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    raw = spec["config"]
    cfg = ServeConfig(**{**raw, "limits": Limits(**raw["limits"]), "token": read_token()})
    sock = socket.socket(fileno=spec["fd"])
    told = []

    def ready(path: str, steps: int | None) -> None:
        told.append(True)
        print(json.dumps({"ready": True, "path": path, "steps": steps}), flush=True)

    try:
        serve_socket(
            spec["run"],
            sock,
            cfg,
            threads=spec["threads"],
            graceful_s=spec["graceful_s"],
            log_level=spec["log_level"],
            on_ready=ready,
            http=HttpLimits(**spec["http"]),
        )
    except MetarecError as e:
        if not told:
            print(json.dumps({"ready": False, "error": str(e)}), flush=True)
        print(f"metarec: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
