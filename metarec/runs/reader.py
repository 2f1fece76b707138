"""Opening a run directory of any method: :func:`open_run` reads and checks what every run has
(the manifest, its bounds, the encoders and their fingerprint) before a method's loader builds
anything from it; :func:`run_method_name` says which method wrote it.

Since format version 2 a run's manifest names its method (``"method": {"name", ...}``); a
version-1 run is refused with the conversion to run (:func:`metarec.convert_run`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarec._errors import CheckpointError
from metarec.data.table import InteractionTable
from metarec.runs.checkpoint import FORMAT, FORMAT_VERSION, load_table_meta, read_manifest
from metarec.runs.fingerprint import check_run_encoders
from metarec.runs.guard import check_run_limits

__all__ = ["OpenRun", "open_run", "run_method_name"]


@dataclass(frozen=True)
class OpenRun:
    """A checked run directory: its path, ``manifest.json`` and the table of its encoders and
    side features (no interactions)."""

    run_dir: Path
    manifest: dict[str, Any]
    table: InteractionTable


def open_run(run_dir: str | os.PathLike[str]) -> OpenRun:
    """Read and check a run directory's manifest, bounds and encoders.

    Raises:
        CheckpointError: missing or damaged files, or an unsupported format version (version 1:
            the message shows the conversion).
    """
    run = Path(run_dir)
    manifest = _manifest(run)
    check_run_limits(manifest, run)  # hook (metarec.runs.guard): bounded steps and sizes
    table = _table(run)
    check_run_encoders(run, table)  # hook (metarec.runs.fingerprint): the encoders trained with
    return OpenRun(run, manifest, table)


def run_method_name(manifest: dict[str, Any]) -> str:
    """The method a run's manifest names (runs written before it did: their algorithm's name)."""
    method = manifest.get("method")
    if isinstance(method, dict) and method.get("name"):
        return str(method["name"])
    algo = manifest.get("algorithm")
    if isinstance(algo, dict) and algo.get("name"):
        return str(algo["name"])
    raise CheckpointError(
        "manifest.json: names no method (no 'method' nor 'algorithm' section); the run directory is "
        "damaged; restore it or re-train"
    )


def _table(run: Path) -> InteractionTable:
    try:
        return load_table_meta(run)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{str(run / 'encoders.json')!r}: damaged ({type(e).__name__}: {e}); the run directory is incomplete; "
            "re-create it with 'metarec train'"
        ) from None


def _manifest(run: Path) -> dict[str, Any]:
    p = run / "manifest.json"
    if p.is_file():
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError:
            raw = {}
        if isinstance(raw, dict) and raw.get("format") == FORMAT and raw.get("format_version") == 1:
            raise CheckpointError(
                f"{str(p)!r}: format_version=1 (parameters only, no buffers) is no longer read; this metarec "
                f"reads version {FORMAT_VERSION}; convert the run in place with "
                f"`python -c \"import metarec; metarec.convert_run('{run}')\"` (needs the run's data, as for "
                "training), or re-train it"
            )
    return read_manifest(run)
