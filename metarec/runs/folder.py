"""What a run folder holds, and the rules for writing into one.

Every folder metarec writes a run into starts with ``run.json``::

    {"format": "metarec-run", "kind": "train", "run_id": "3f2a...", "created": "2026-...Z"}

``kind`` is ``"train"`` (``metarec train``), ``"adapted"`` (``metarec adapt``) or
``"federated"`` (``metarec federated``); ``run_id`` is new for every run and is written into each
of its checkpoints (:mod:`metarec.runs.identity`). :func:`folder_kind` reads it back (folders
written before ``run.json`` existed are recognised by their ``manifest.json`` /
``federated.json``).

:func:`claim_folder` is the one gate before a run writes into a folder:

* no write follows a symbolic link out of the folder: a link among the run's files or folders
  (``checkpoints/`` pointing elsewhere) is refused, naming it;
* a folder holding files of the run's names that metarec did not write (a user's own
  ``config.json``), or a run of another kind (``--overwrite`` of ``metarec adapt`` on a trained
  run), is refused: ``--overwrite`` replaces only a run of its own kind, so it never deletes
  what it did not write;
* ``replace=True`` (``--overwrite``, or ``--resume`` with nothing to resume) deletes the run's
  own files (:data:`KIND_FILES`, with their ``.sha256``), then a new ``run.json`` is written.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from metarec._errors import ConfigError
from metarec._io.checksums import SUFFIX
from metarec._io.paths import links_in
from metarec.runs.checkpoint import atomic_write_json

__all__ = [
    "RUN_FILE",
    "KINDS",
    "KIND_FILES",
    "Claim",
    "folder_kind",
    "claim_folder",
    "read_run_id",
    "remove_kind_files",
]

RUN_FILE = "run.json"
KINDS = ("train", "adapted", "federated")
_FORMAT = "metarec-run"
_LABEL = {
    "train": "a training run (metarec train)",
    "adapted": "an adapted directory (metarec adapt)",
    "federated": "a federated run (metarec federated)",
}

KIND_FILES: dict[str, tuple[str, ...]] = {
    "train": (
        RUN_FILE,
        "manifest.json",
        "config.json",
        "encoders.json",
        "features.pt",
        "text.pt",
        "fingerprint.json",
        "metrics.jsonl",
        "summary.json",
        "test_metrics.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ),
    "adapted": (
        RUN_FILE,
        "manifest.json",
        "config.json",
        "encoders.json",
        "features.pt",
        "text.pt",
        "fingerprint.json",
        "checkpoints/best.pt",
        "adapted.pt",
        "adapted_users.json",
    ),
    "federated": (
        RUN_FILE,
        "config.json",
        "rounds.jsonl",
        "checkpoints/last.pt",
        "final.pt",
        "federated.json",
    ),
}
"""The files each kind of run writes (relative to its folder); ``--overwrite`` deletes only these
(and their ``.sha256`` checksum files)."""

_WRITE_DIRS = {
    "train": ("tensorboard",),
    "federated": ("flower-logs", "flower-home", "flower-app"),
}
"""Folders a kind writes beside its files (checked for links too)."""


class Claim(NamedTuple):
    """What :func:`claim_folder` decided: the ``run_id`` that writes into the folder (``None``: a
    run written before run ids, continued in place) and the files it ``removed``."""

    run_id: str | None
    removed: list[str]


def _read_record(out: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("format") != _FORMAT or rec.get("kind") not in KINDS:
        return None
    return rec


def read_run_id(run_dir: str | os.PathLike[str]) -> str | None:
    """The ``run_id`` of ``run_dir/run.json`` (``None``: no such file, or written before run ids)."""
    rec = _read_record(Path(run_dir))
    rid = rec.get("run_id") if rec else None
    return rid if isinstance(rid, str) else None


def folder_kind(out: str | os.PathLike[str]) -> str:
    """What ``out`` holds: ``"train"``, ``"adapted"`` or ``"federated"`` (a metarec run of that
    kind), ``"empty"`` (no file of any kind's names; missing folders too) or ``"foreign"``
    (files of those names that no metarec run wrote, or a damaged ``run.json``)."""
    out = Path(out)
    rec = _read_record(out)
    if rec is not None:
        return str(rec["kind"])
    if (out / RUN_FILE).exists():
        return "foreign"
    try:
        man = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        man = None
    if isinstance(man, dict) and man.get("format") == _FORMAT:
        return "adapted" if man.get("adapted") else "train"
    if (out / "federated.json").is_file() or (out / "rounds.jsonl").is_file():
        return "federated" if (out / "config.json").is_file() else "foreign"
    names = {n for files in KIND_FILES.values() for n in files}
    return (
        "foreign" if any((out / n).exists() or (out / n).is_symlink() for n in names) else "empty"
    )


def _present(out: Path) -> list[str]:
    names = sorted({n for files in KIND_FILES.values() for n in files})
    return [n for n in names if (out / n).exists()][:4]


def claim_folder(
    out: str | os.PathLike[str],
    kind: str,
    *,
    replace: bool = False,
    option: str = "--out",
    why: str = "--overwrite",
) -> Claim:
    """Check that a ``kind`` run may write into ``out`` (see the module docstring); with
    ``replace``, delete the run's own files first. A new ``run.json`` is written when the run
    starts afresh (``replace``, or a folder with no run yet). Call it while holding the folder's
    lock (:class:`~metarec._io.lock.RunLock`).

    Args:
        out: the run folder (created if missing).
        kind: ``"train"``, ``"adapted"`` or ``"federated"``.
        replace: delete the kind's files of a previous run in ``out`` first.
        option: the argument that named ``out`` (in messages).
        why: what asked for ``replace`` (in messages).

    Returns:
        A :class:`Claim`: the run id of the run that will write into ``out`` (``None`` for a run
        written before run ids, continued in place) and the files deleted.

    Raises:
        ConfigError: a symbolic link among the run's paths, files of the run's names that no
            metarec run wrote, or a run of another kind.
    """
    out = Path(out)
    links = links_in(out, (*KIND_FILES[kind], *_WRITE_DIRS.get(kind, ())))
    if links:
        rel, target = links[0]
        raise ConfigError(
            f"{option} {str(out)!r}: {rel!r} is a symbolic link (to {target!r}); metarec never writes through a "
            f"link out of the run folder; replace the link by a real {'folder' if '.' not in rel else 'file'} "
            f"(rm {str(out / rel)!r}), or choose another {option}"
        )
    found = folder_kind(out)
    if found == "foreign":
        shown = ", ".join(repr(n) for n in _present(out)) or repr(RUN_FILE)
        damaged = (out / RUN_FILE).exists()
        raise ConfigError(
            f"{option} {str(out)!r}: holds {shown}, "
            + (
                f"and its {RUN_FILE} is damaged, so it cannot be told for {_LABEL[kind]}"
                if damaged
                else "but no metarec run wrote them (no run.json or metarec manifest.json)"
            )
            + f"; {'--overwrite' if replace else 'metarec'} would replace those files; choose another {option} "
            "(a new or empty folder), or move those files away"
        )
    if found not in ("empty", kind):
        raise ConfigError(
            f"{option} {str(out)!r}: holds {_LABEL[found]}, not {_LABEL[kind]}; "
            + (
                f"{why} replaces only {_LABEL[kind].split(' (')[0]}, never another kind of run; "
                if replace
                else ""
            )
            + f"choose another {option}, or delete that folder yourself if it is no longer needed"
        )
    removed = remove_kind_files(out, kind) if replace else []
    if replace or found == "empty":
        return Claim(_write_record(out, kind), removed)
    return Claim(read_run_id(out), removed)


def remove_kind_files(out: str | os.PathLike[str], kind: str) -> list[str]:
    """Delete the files a ``kind`` run writes in ``out`` (and their checksum files); returns
    their paths relative to ``out``."""
    out = Path(out)
    gone = []
    for rel in KIND_FILES[kind]:
        for p in (out / rel, out / (rel + SUFFIX)):
            if p.is_file() or p.is_symlink():
                p.unlink()
                gone.append(str(p.relative_to(out)))
    return gone


def _write_record(out: Path, kind: str) -> str:
    rid = uuid.uuid4().hex
    rec = {
        "format": _FORMAT,
        "kind": kind,
        "run_id": rid,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out / RUN_FILE, rec)
    return rid
