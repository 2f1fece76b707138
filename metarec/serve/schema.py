"""The one schema of ``metarec serve``'s requests and answers: it drives the validation of every
request body (:mod:`metarec.serve.requests`) and ``GET /openapi.json``.

A body is a :class:`Body` of :class:`Field` s; each field has a kind (``"id"``, ``"int"``,
``"bool"``, ``"string"``, ``"support"``, ``"ids"``), whether it is required, its default, its
bounds (fixed, or named after a :class:`~metarec.serve.requests.Limits` attribute, so that the
published schema shows the server's own limits) and a description. :func:`openapi` writes the
OpenAPI 3.0 document from these same objects, so the documentation cannot drift from what is
checked.

>>> [f.name for f in RECOMMEND.fields]
['user', 'k', 'support', 'domain']
>>> RECOMMEND.field("k").maximum_from
'max_items'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Field", "Body", "RECOMMEND", "PREDICT", "MAX_ID_CHARS", "MAX_INT_DIGITS", "openapi"]

MAX_ID_CHARS = 1024
"""Longest id (characters) a request may send."""
MAX_INT_DIGITS = 19
"""Most digits of an integer in a request (ids and ``k`` fit ``int64``); longer ones are refused
while parsing, naming the field, before any conversion (a 5000-digit ``k`` is a 400, not a 500)."""


@dataclass(frozen=True)
class Field:
    """One field of a request body.

    Args:
        name: the JSON key.
        kind: ``"id"`` (a non-empty string of at most :data:`MAX_ID_CHARS` characters of valid
            Unicode, or an integer), ``"int"``, ``"bool"``, ``"string"``, ``"support"`` (a list of
            ``{"item": id, "rating": number}``) or ``"ids"`` (a non-empty list of ids).
        required: whether a body must have it.
        default: its value when left out.
        minimum: the least value (``"int"``) or length (lists).
        maximum_from: the :class:`~metarec.serve.requests.Limits` attribute bounding the value or
            the length.
        description: for the published schema.
        example: for the published schema.
    """

    name: str
    kind: str
    required: bool = False
    default: Any = None
    minimum: int | None = None
    maximum_from: str | None = None
    description: str = ""
    example: Any = None


@dataclass(frozen=True)
class Body:
    """A request body: its route and fields (no other key is accepted)."""

    route: str
    summary: str
    fields: tuple[Field, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


_USER = Field(
    "user",
    "id",
    required=True,
    description="The user's id (cold users welcome): a string, or an integer; answered as a string.",
    example="u42",
)
_SUPPORT = Field(
    "support",
    "support",
    default=(),
    maximum_from="max_support",
    description="The user's own ratings to adapt on (none: the meta-learned initialisation). "
    "An item rated several times is used once per row, with a warning in the answer.",
    example=[{"item": "i7", "rating": 5}, {"item": "i12", "rating": 2}],
)

RECOMMEND = Body(
    "/recommend",
    "Top-k items of the whole catalogue for one user, adapted to its support ratings",
    (
        _USER,
        Field(
            "k",
            "int",
            default=10,
            minimum=1,
            maximum_from="max_items",
            description="How many items.",
            example=10,
        ),
        _SUPPORT,
        Field(
            "domain",
            "string",
            description="Rank only the items of this domain of the run (leave out: the whole catalogue).",
        ),
    ),
)

PREDICT = Body(
    "/predict",
    "Scores of the given items for one user, adapted to its support ratings",
    (
        _USER,
        _SUPPORT,
        Field(
            "items",
            "ids",
            required=True,
            minimum=1,
            maximum_from="max_items",
            description="The items to score, answered in this order.",
            example=["i1", "i7"],
        ),
        Field(
            "clip",
            "bool",
            default=True,
            description="Clip explicit-feedback scores to the run's rating scale.",
            example=True,
        ),
    ),
)

# ---------------------------------------------------------------------- JSON schema
_ID_SCHEMA = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
        {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    ]
}


def _schema(f: Field, limits: Any) -> dict[str, Any]:
    top = getattr(limits, f.maximum_from) if f.maximum_from else None
    if f.kind == "id":
        out: dict[str, Any] = dict(_ID_SCHEMA)
    elif f.kind == "int":
        out = {"type": "integer"}
        if f.minimum is not None:
            out["minimum"] = f.minimum
        if top is not None:
            out["maximum"] = top
    elif f.kind == "bool":
        out = {"type": "boolean"}
    elif f.kind == "string":
        out = {"type": "string", "maxLength": MAX_ID_CHARS}
    elif f.kind == "support":
        out = {"type": "array", "items": {"$ref": "#/components/schemas/SupportRow"}}
        if top is not None:
            out["maxItems"] = top
    elif f.kind == "ids":
        out = {"type": "array", "items": dict(_ID_SCHEMA), "minItems": f.minimum or 0}
        if top is not None:
            out["maxItems"] = top
    else:  # pragma: no cover - the bodies above use the kinds listed
        raise ValueError(f"unknown field kind {f.kind!r}")
    if f.description:
        out["description"] = f.description
    if f.default is not None and f.kind != "support":
        out["default"] = f.default
    if f.example is not None:
        out["example"] = f.example
    return out


def body_schema(body: Body, limits: Any) -> dict[str, Any]:
    """The JSON schema of ``body`` under ``limits``."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in body.fields if f.required],
        "properties": {f.name: _schema(f, limits) for f in body.fields},
    }


_ANSWER = {
    "type": "object",
    "required": ["user", "items"],
    "properties": {
        "user": {
            "type": "string",
            "description": "The catalogue's id of the user when the run knows it, else the id sent; always a string.",
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["item", "score"],
                "properties": {
                    "item": {"type": "string", "description": "An item id, always a string."},
                    "score": {"type": "number"},
                },
            },
        },
        "warnings": {
            "type": "array",
            "items": {"type": "string"},
            "description": "What was done that the client may not expect (repeated support rows, a "
            "diverged adaptation served the meta-learned initialisation).",
        },
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "string",
            "description": "One line: the field, the value, the rule and the fix.",
        }
    },
}
_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok", "loading", "draining", "failed"]}},
    "additionalProperties": True,
}


def _error(text: str) -> dict[str, Any]:
    return {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi(limits: Any, *, title: str = "metarec serve", version: str = "0") -> dict[str, Any]:
    """The OpenAPI 3.0 document of the service under ``limits`` (what ``GET /openapi.json``
    answers)."""
    errors = {
        "400": _error("A field that fails validation (named in the message)."),
        "401": _error("Missing or wrong bearer token (when the server has one)."),
        "413": _error("A body, a support list or an item list over the server's limits."),
        "431": _error("Request headers over --max-header-bytes."),
        "500": _error("The served run cannot answer (a diverged adaptation, non-finite scores)."),
        "503": _error("Loading, draining for shutdown, or over --max-connections."),
    }
    paths: dict[str, Any] = {}
    for body in (RECOMMEND, PREDICT):
        name = body.route.strip("/").capitalize()
        paths[body.route] = {
            "post": {
                "summary": body.summary,
                "operationId": body.route.strip("/"),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    },
                },
                "responses": {
                    "200": {
                        "description": "The answer.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}
                        },
                    },
                    **errors,
                },
                "security": [{"bearer": []}, {}],
            }
        }
    for route, what in (
        ("/health", "Liveness: the process answers (also while loading and draining)."),
        ("/ready", "Readiness: 200 once the run is loaded, 503 while loading or draining."),
    ):
        paths[route] = {
            "get": {
                "summary": what,
                "operationId": route.strip("/"),
                "responses": {
                    "200": {
                        "description": what,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Status"}}
                        },
                    },
                    "503": _error("Not ready."),
                },
            }
        }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics (text format 0.0.4): requests, latencies, batch sizes, "
            "adaptation failures, diverged users.",
            "operationId": "metrics",
            "responses": {
                "200": {"description": "Metrics.", "content": {"text/plain": {}}},
                "401": errors["401"],
            },
            "security": [{"bearer": []}, {}],
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "Cold-start recommendations by fast adaptation of a meta-learned run. "
            "Limits of this server: "
            + ", ".join(f"{k}={getattr(limits, k)}" for k in _LIMIT_NAMES if hasattr(limits, k)),
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Recommend": body_schema(RECOMMEND, limits),
                "Predict": body_schema(PREDICT, limits),
                "SupportRow": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["item", "rating"],
                    "properties": {
                        "item": dict(_ID_SCHEMA),
                        "rating": {
                            "type": "number",
                            "description": "A finite number on the run's rating scale (0 or 1 for implicit feedback).",
                        },
                    },
                },
                "Answer": _ANSWER,
                "Error": _ERROR,
                "Status": _STATUS,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_LIMIT_NAMES = ("max_body_bytes", "max_support", "max_items", "max_json_depth")
