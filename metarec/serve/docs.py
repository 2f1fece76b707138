"""The docs page of ``metarec serve`` (``GET /docs``): Swagger UI on ``/openapi.json``, its
assets served by the server itself from the ``swagger-ui-bundle`` package (the ``serve`` extra),
so the page works with no network beyond the server.

>>> code, body, ctype, _ = docs_file("/docs")
>>> code, ctype, b"/docs/swagger-ui-bundle.js" in body
(200, b'text/html; charset=utf-8', True)
>>> docs_file("/docs/../manifest.json")[0]
404
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path

from metarec._errors import MetarecError, require_extra

__all__ = ["docs_file", "ASSETS"]

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>metarec serve: API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body></html>
"""
_INIT = 'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", deepLinking: true});\n'
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")
"""The bundle's files the page uses (nothing else of the package is served)."""


def _error(code: int, message: str) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    return code, json.dumps({"error": message}).encode(), b"application/json", []


def docs_file(path: str) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """``(status, body, content type, extra headers)`` of ``GET path`` (``/docs`` or ``/docs/<asset>``)."""
    if path == "/docs":
        return 200, _HTML.encode(), b"text/html; charset=utf-8", []
    name = path.removeprefix("/docs/")
    if name == "init.js":
        return 200, _INIT.encode(), b"text/javascript", []
    if name not in ASSETS:
        return _error(404, f"GET {path}: no such asset of the docs page")
    try:
        bundle = require_extra("swagger_ui_bundle", "serve", "the docs page (GET /docs)")
    except MetarecError as e:
        return _error(503, str(e))
    data = (Path(bundle.swagger_ui_path) / name).read_bytes()
    ctype = (mimetypes.guess_type(name)[0] or "application/octet-stream").encode()
    return 200, data, ctype, [(b"cache-control", b"max-age=86400")]
