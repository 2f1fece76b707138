"""SHA-256 checksums of checkpoint files, written with each file and checked on every load.

``write_checked(path, data)`` writes ``data`` atomically and records its SHA-256 in the sidecar
``path.sha256`` (JSON ``{"file": NAME, "sha256": [HEX, ...]}``); ``verify(path)`` recomputes
the file's hash and raises :class:`~metarec._errors.CheckpointError` naming the file when it
matches none of the recorded ones, so a flipped byte in ``best.pt`` is never served.

The sidecar is updated in two atomic steps around the file's own replacement: first it lists
the old and the new hash, then (the new file in place) only the new one. A process killed at
any moment therefore leaves a file whose hash the sidecar lists: an interrupted write is never
mistaken for damage. A file without a sidecar (written by an older metarec) is not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from metarec._errors import CheckpointError

__all__ = [
    "SUFFIX",
    "atomic_write",
    "sha256_file",
    "sidecar",
    "write_checked",
    "verify",
    "recorded",
]

SUFFIX = ".sha256"
_CHUNK = 1 << 20


def sidecar(path: str | os.PathLike[str]) -> Path:
    """The checksum file of ``path``: ``path.sha256`` beside it."""
    p = Path(path)
    return p.with_name(p.name + SUFFIX)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def recorded(path: str | os.PathLike[str]) -> list[str] | None:
    """The hashes ``path``'s sidecar accepts, or ``None`` when it has no sidecar.

    Raises:
        CheckpointError: the sidecar exists but is not a checksum record.
    """
    s = sidecar(path)
    if not s.is_file():
        return None
    try:
        rec = json.loads(s.read_text())
        hashes = rec["sha256"]
        if not (isinstance(hashes, list) and hashes and all(isinstance(x, str) for x in hashes)):
            raise TypeError("no list of hashes")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checksum file {str(s)!r}: damaged ({type(e).__name__}: {e}); restore it, or delete "
            f"it to load {str(Path(path).name)!r} unchecked"
        ) from None
    return hashes


def write_checked(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``path`` and record its SHA-256 in ``path.sha256``."""
    path = Path(path)
    new = hashlib.sha256(data).hexdigest()
    try:
        old = recorded(path)
    except CheckpointError:
        old = None
    if old is None and path.is_file():
        old = [
            sha256_file(path)
        ]  # an unrecorded file: its current content stays acceptable until replaced
    keep = [h for h in (old or [])[-1:] if h != new]
    _write_record(path, [*keep, new])  # step 1: old or new content both verify
    atomic_write(path, data)
    if keep:
        _write_record(path, [new])  # step 2: only the new content


def verify(path: str | os.PathLike[str]) -> None:
    """Check ``path`` against its recorded SHA-256 (no sidecar: nothing to check).

    Raises:
        CheckpointError: the file's content differs from what was written (a flipped byte,
            a truncated copy), naming the file and how to recover.
    """
    path = Path(path)
    want = recorded(path)
    if want is None or not path.is_file():
        return
    got = sha256_file(path)
    if got not in want:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: damaged: its SHA-256 {got[:12]}... differs from the "
            f"{want[-1][:12]}... recorded in {sidecar(path).name!r} when it was written (a disk or "
            "copy error changed it); restore the file from a copy, or re-create the run ('metarec "
            "train SCENARIO --out RUN --overwrite'); for checkpoints/last.pt only, deleting it and "
            "its .sha256 lets '--resume' start again from step 0"
        )


def _write_record(path: Path, hashes: list[str]) -> None:
    atomic_write(sidecar(path), (json.dumps({"file": path.name, "sha256": hashes}) + "\n").encode())


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsynced, then
    ``os.replace`` (a crash leaves the old file or the new one, never a torn one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
