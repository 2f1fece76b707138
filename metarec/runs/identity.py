"""A run's identity, carried by every checkpoint it writes, so a checkpoint is only ever loaded
into the run that wrote it.

The identity is a small record::

    {"run_id": "3f2a...", "method": "maml", "config_hash": "9c1e...", "data": "b7d0..."}

``run_id`` comes from the folder's ``run.json`` (:mod:`metarec.runs.folder`), ``config_hash`` is
the scenario's :func:`~metarec.config.config_hash`, ``data`` the SHA-256 of the run's data
fingerprint (:mod:`metarec.runs.fingerprint`). The run's ``manifest.json`` records it under
``"run"``, and each checkpoint holds the same record under ``"run"`` inside the tensor file,
whose SHA-256 the checksum file checks before it is parsed. :func:`check_identity` refuses a
checkpoint whose record differs (``best.pt`` copied from a run of another method or other data,
``--resume`` with another run's ``last.pt``) and says how the two runs differ; it also checks the
manifest's record against ``fingerprint.json``. Runs written before identities existed (no
``"run"`` in their manifest nor in their checkpoints) are not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metarec._errors import CheckpointError

__all__ = ["IDENTITY_KEYS", "make_identity", "adapted_identity", "data_digest", "check_identity"]

IDENTITY_KEYS = ("run_id", "method", "config_hash", "data")
_FIX = (
    "a checkpoint is only loaded into the run that wrote it; restore this run's own file (and its .sha256) "
    "from a copy, or re-train ('metarec train SCENARIO --out RUN --overwrite')"
)


def data_digest(fingerprint: Mapping[str, Any] | None) -> str | None:
    """SHA-256 of a data fingerprint (the ``fingerprint.json`` record), or ``None`` for none."""
    if fingerprint is None:
        return None
    blob = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def make_identity(
    run_id: str | None,
    method: str,
    config_hash: str | None,
    fingerprint: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The identity record of a run (see the module docstring)."""
    return {
        "run_id": run_id,
        "method": method,
        "config_hash": config_hash,
        "data": data_digest(fingerprint),
    }


def _short(v: Any) -> str:
    return str(v)[:12] if v is not None else "none"


def _describe(got: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    parts = [f"run id {_short(got.get('run_id'))} of method {got.get('method')!r}"]
    if got.get("method") != want.get("method"):
        parts.append("another method")
    if got.get("data") != want.get("data"):
        parts.append("other data")
    if got.get("config_hash") != want.get("config_hash"):
        parts.append("another scenario")
    theirs = ", ".join(parts)
    return (
        f"it belongs to {theirs}, not to this run (run id {_short(want.get('run_id'))} of method "
        f"{want.get('method')!r}, recorded in manifest.json)"
    )


def _manifest(run_dir: Path) -> Mapping[str, Any] | None:
    try:
        m = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, Mapping) else None


def check_identity(
    ck: Any,
    run_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    manifest: Mapping[str, Any] | None = None,
    *,
    what: str = "checkpoint",
) -> None:
    """Refuse checkpoint ``ck`` (loaded from ``path``) unless it belongs to the run in ``run_dir``.

    ``manifest`` is the run's manifest (read from ``run_dir`` when not given; a folder without
    one is not checked).

    Raises:
        CheckpointError: the checkpoint's identity differs from the run's, one of them has none,
            or the manifest's data digest differs from ``fingerprint.json``; the message says
            how the runs differ and how to recover.
    """
    run_dir = Path(run_dir)
    man = manifest if manifest is not None else _manifest(run_dir)
    if man is None:
        return
    want = man.get("run")
    got = ck.get("run") if isinstance(ck, Mapping) else None
    where = f"{what} {str(path)!r}"
    if want is None and got is None:
        return  # a run written before identities existed
    if not isinstance(want, Mapping):
        raise CheckpointError(
            f"{where}: {_describe(got, {}) if isinstance(got, Mapping) else 'it carries a run identity'}, but "
            f"{str(run_dir / 'manifest.json')!r} records none (the manifest was replaced or edited); {_FIX}"
        )
    if not isinstance(got, Mapping):
        raise CheckpointError(
            f"{where}: carries no run identity, while this run (run id {_short(want.get('run_id'))}) writes one into "
            f"every checkpoint: it was not written by this run (copied from an older run or another program?); {_FIX}"
        )
    if any(got.get(k) != want.get(k) for k in IDENTITY_KEYS):
        raise CheckpointError(f"{where}: {_describe(got, want)}; {_FIX}")
    fp = run_dir / "fingerprint.json"
    if want.get("data") is not None and fp.is_file():
        try:
            saved = json.loads(fp.read_text())
        except (OSError, ValueError):
            saved = None  # a damaged fingerprint.json is reported by its own reader
        if isinstance(saved, Mapping) and data_digest(saved) != want.get("data"):
            raise CheckpointError(
                f"{str(fp)!r}: describes other data than the run's manifest.json and checkpoints record (the "
                "manifest or the fingerprint was copied from another run); restore the run's own files from a copy, "
                "or re-train ('metarec train SCENARIO --out RUN --overwrite')"
            )


def adapted_identity(
    source_manifest: Mapping[str, Any], run_id: str | None, fingerprint: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The identity of an adapted directory (``metarec adapt``) made from the run of
    ``source_manifest``: its own ``run_id``, the source's method, scenario and data, and the
    source's run id under ``"source_run_id"``."""
    src = source_manifest.get("run")
    src = src if isinstance(src, Mapping) else {}
    method = source_manifest.get("method")
    name = src.get("method") or (method.get("name") if isinstance(method, Mapping) else None)
    return {
        **make_identity(
            run_id,
            str(name),
            src.get("config_hash", source_manifest.get("config_hash")),
            fingerprint,
        ),
        "source_run_id": src.get("run_id"),
    }
