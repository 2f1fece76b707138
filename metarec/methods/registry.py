"""The entry point of the method registry: :func:`ensure_registered`.

The methods metarec ships are registered by the modules that define them
(:mod:`metarec.methods.builtin`, the cold-start learners of :mod:`metarec.methods.learners`, the
ranking baselines of :mod:`metarec.methods.ranking`). Everything
that reads or extends the registry (:func:`~metarec.methods.build_method`,
:func:`~metarec.methods.build_fitted`, :func:`~metarec.methods.method_names`,
:func:`~metarec.methods.register_method`, and through them ``metarec bench``'s method listing)
calls :func:`ensure_registered` first, so no import order is needed for the registry to be
complete.
"""

from __future__ import annotations

import importlib

__all__ = ["REGISTERING_MODULES", "ensure_registered"]

REGISTERING_MODULES = (
    "metarec.methods.builtin",
    "metarec.methods.learners",
    "metarec.methods.ranking",
)
"""The modules whose import registers the shipped methods."""

_done = False
_running = False


def ensure_registered() -> None:
    """Register every method metarec ships (idempotent: each module is imported once).

    A call made while the registering modules are being imported (their own
    ``register_method`` calls) returns at once.
    """
    global _done, _running
    if _done or _running:
        return
    _running = True
    try:
        for name in REGISTERING_MODULES:
            importlib.import_module(name)
    finally:
        _running = False
    _done = True
