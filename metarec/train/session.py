"""A training run's hold on its run directory: one writer, always resumable or restartable,
one clear line when the disk fills up.

``@training_session`` wraps :func:`metarec.train.loop.train` (any function with arguments ``out``,
``resume`` and ``overwrite``). For each call it:

1. checks that ``out`` can be a folder and takes its :class:`~metarec._io.lock.RunLock`, so a
   second ``metarec train`` on the same ``--out`` fails at once, naming the first, and writes
   nothing;
2. removes orphan temporary files (``.NAME.*.tmp``) that a killed write left behind (safe: no
   other process writes here while the lock is held);
3. decides how the run starts:

   - ``overwrite=True``: the run's own files (:data:`RUN_FILES`, never anything else) are
     deleted and training starts afresh; a folder that does not hold a training run (a user's
     own files, an adapted directory) is refused, and so is a symbolic link among the run's
     paths (:func:`metarec.runs.folder.claim_folder`);
   - ``resume=True`` and ``checkpoints/last.pt`` exists: resume (a partial last line of
     ``metrics.jsonl``, from a kill in mid-write, is dropped first);
   - ``resume=True`` and no checkpoint yet (killed before the first one, ``train.steps = 0``):
     the partial run's files are deleted and training starts from step 0, so the result is
     exactly that of an uninterrupted run;
   - otherwise ``train`` itself refuses a folder that already holds a run;

4. turns a full disk, an exceeded quota, a read-only file system or a permission error during
   the run into one :class:`~metarec._errors.CheckpointError` line that says what happened,
   whether the last checkpoint is intact (it is loaded and checked to say so) and how to go on.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from metarec._errors import CheckpointError, ConfigError, MetarecError
from metarec._io.lock import RunLock, check_folder
from metarec.config.limits import check_train_steps
from metarec.runs.checkpoint import atomic_write_bytes, load_tensors
from metarec.runs.folder import KIND_FILES, claim_folder
from metarec.train.loggers import check_loggers

__all__ = [
    "RUN_FILES",
    "RunSession",
    "run_session",
    "training_session",
    "remove_orphan_tmp",
    "repair_log",
    "disk_error_message",
]

RUN_FILES = KIND_FILES["train"]
"""The files a training run writes (relative to its run directory); ``--overwrite`` deletes only these
(and their ``.sha256`` checksum files), and only in a folder that holds a training run
(:func:`metarec.runs.folder.claim_folder`)."""

_LAST = "checkpoints/last.pt"
_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
_FIX = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space or raise the quota",
    errno.EROFS: "make the folder writable",
    errno.EACCES: "make the folder writable (chmod u+w)",
    errno.EPERM: "make the folder writable (chmod u+w)",
}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class RunSession:
    """What :func:`run_session` found and decided.

    Attributes:
        out: the run directory.
        resume: whether training resumes from ``checkpoints/last.pt``.
        restarted: ``resume`` was asked but there was no checkpoint: training starts from step 0.
        removed: files deleted on entry (orphan temporary files, a partial run's files, an
            overwritten run's files), relative to ``out``.
        stale_lock: the holder record of a stale lock taken over, else ``None``.
    """

    out: Path
    resume: bool
    restarted: bool = False
    removed: list[str] = field(default_factory=list)
    stale_lock: dict[str, Any] | None = None


@contextlib.contextmanager
def run_session(
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    option: str = "--out",
) -> Iterator[RunSession]:
    """Hold run directory ``out`` for one training run (see the module docstring).

    Raises:
        ConfigError: ``resume`` and ``overwrite`` together, ``out`` is a file, or another
            process holds the run directory.
        CheckpointError: a disk-full or permission error inside the block (one line; says
            whether the last checkpoint is intact).
    """
    if resume and overwrite:
        raise ConfigError(
            "--resume and --overwrite: choose one: --resume continues the run in the folder, "
            "--overwrite deletes it and trains afresh"
        )
    out = check_folder(out, option)
    try:
        with RunLock(out, what="run directory", option=option) as lock:
            s = RunSession(out, resume=resume, stale_lock=lock.stale)
            restart = resume and not (out / _LAST).is_file()
            # hook (metarec.runs.folder): no write through a link, never replace a foreign folder
            claim = claim_folder(
                out,
                "train",
                replace=overwrite or restart,
                option=option,
                why="--overwrite" if overwrite else "--resume with no checkpoint yet",
            )
            s.removed += remove_orphan_tmp(out, ("", "checkpoints")) + claim.removed
            if restart:
                s.resume, s.restarted = False, True
                warnings.warn(
                    f"--resume: {str(out)!r} holds no checkpoint yet; training starts from step 0",
                    stacklevel=3,
                )
            elif resume:
                repair_log(out / "metrics.jsonl")
            yield s
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        raise CheckpointError(disk_error_message(e, out, option)) from None


def training_session(fn: F) -> F:
    """Decorator: run each call of ``fn(scenario, out, resume=..., overwrite=...)`` inside
    :func:`run_session`, passing it the effective ``resume``; first refuse ``scenario.train.steps < 1``.

    Under ``torchrun`` only rank 0 takes the lock and applies the resume / overwrite policy; the
    other ranks resume exactly when rank 0 does (``checkpoints/last.pt`` exists)."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        sc = a.get("scenario")
        if sc is not None:  # before touching the folder: a run with no step could never checkpoint
            check_train_steps(sc.train.steps)
            check_loggers(sc.train.loggers)  # a missing extra: one line, nothing written
        from metarec.train.distributed import world_from_env

        if (
            world_from_env()[0] != 0
        ):  # [distributed] rank 0 holds and writes the run directory; the others
            # only read it (into a scratch folder), resuming exactly when rank 0 does
            if a.get("resume") and a.get("overwrite"):
                raise ConfigError(
                    "--resume and --overwrite: choose one: --resume continues the run in the "
                    "folder, --overwrite deletes it and trains afresh"
                )
            a["resume"] = bool(a.get("resume")) and (Path(a["out"]) / _LAST).is_file()
            return fn(*bound.args, **bound.kwargs)
        with run_session(
            a["out"], resume=bool(a.get("resume")), overwrite=bool(a.get("overwrite"))
        ) as s:
            a["resume"] = s.resume
            return fn(*bound.args, **bound.kwargs)

    return wrapper  # type: ignore[return-value]


def remove_orphan_tmp(
    folder: str | os.PathLike[str], subdirs: tuple[str, ...] = ("",)
) -> list[str]:
    """Delete ``.NAME.*.tmp`` files (metarec's interrupted atomic writes) in ``folder`` and its
    ``subdirs``; returns their paths relative to ``folder``. Call it only while holding the
    folder's lock."""
    folder = Path(folder)
    gone = []
    for sub in subdirs:
        d = folder / sub
        if not d.is_dir():
            continue
        for p in d.glob(".*.tmp"):
            if p.is_file():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    gone.append(str(p.relative_to(folder)))
    return gone


def repair_log(path: str | os.PathLike[str]) -> bool:
    """Drop a partial last line of a JSONL log (a write cut by a kill or a full disk).

    Returns:
        Whether a line was dropped.

    Raises:
        CheckpointError: a line other than the last is not a JSON object with a ``step``.
    """
    p = Path(path)
    if not p.is_file():
        return False
    data = p.read_bytes()
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    body = lines[:-1] if complete else lines
    bad = [i for i, ln in enumerate(body) if ln.strip() and not _is_row(ln)]
    last = len(body) - 1
    if bad and bad != [last]:
        raise CheckpointError(
            f"{str(p)!r}: line {bad[0] + 1} is not a JSON object with a 'step' (the log is "
            "damaged); delete that line, or delete the file to resume without the earlier log rows"
        )
    if not bad and complete:
        return False
    keep = body[:-1] if bad else body
    atomic_write_bytes(p, b"".join(ln + b"\n" for ln in keep if ln.strip()))
    return True


def disk_error_message(e: OSError, out: Path, option: str = "--out") -> str:
    """One line for a disk-full or permission error while training into ``out``."""
    why = _DISK_ERRORS.get(e.errno or 0, e.strerror or type(e).__name__)
    where = f" writing {str(e.filename)!r}" if e.filename else ""
    fix = _FIX.get(e.errno or 0, "fix the cause")
    last = out / _LAST
    if last.is_file():
        try:
            step = load_tensors(last).get("step")
        except (MetarecError, OSError, AttributeError):
            return (
                f"{option} {str(out)!r}: training stopped: {why}{where}; "
                f"the last checkpoint {str(last)!r} could not be "
                f"read back either; {fix}, then retrain with --overwrite"
            )
        return (
            f"{option} {str(out)!r}: training stopped: {why}{where}; the last checkpoint "
            f"{str(last)!r} (step {step}) is intact, nothing up to it is lost; {fix}, then rerun "
            "the same command with --resume"
        )
    return (
        f"{option} {str(out)!r}: training stopped: {why}{where}; no checkpoint had been written "
        f"yet; {fix}, then rerun the same command with --resume (it starts from step 0)"
    )


def _is_row(line: bytes) -> bool:
    try:
        row = json.loads(line)
    except ValueError:
        return False
    return isinstance(row, dict) and isinstance(row.get("step"), int)
