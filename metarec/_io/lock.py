"""One writer per folder: an exclusive lock on a run directory or a bench output folder.

    with RunLock("runs/cold", what="run directory", option="--out"):
        ...                                  # only this process writes into runs/cold

The lock is the file ``FOLDER/.metarec.lock``, held with ``fcntl.flock`` for as long as the
``with`` block runs and holding a JSON record of its holder (pid, host, start time, command).
A second process that tries to take it gets a :class:`~metarec._errors.ConfigError` naming the
holder. The kernel releases a ``flock`` when its process dies, so a lock file left behind by a
killed process (a *stale* lock) does not block anyone: the next writer takes it over, and
:attr:`RunLock.stale` tells it whose it was. On exit the file is removed.

Where ``fcntl`` is missing (Windows) or the file system refuses ``flock``, the lock is the
file's existence (``O_CREAT | O_EXCL``); a file whose holder is a dead process on this host is
stale and is taken over; a holder on another host cannot be checked and stays an error that
says which file to delete once that run is known to be over.

:func:`holds_folder` is the same lock as a decorator: ``@holds_folder("out", what=...)`` locks
the folder named by a function's ``out`` argument for the duration of each call.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from metarec._errors import ConfigError

try:  # POSIX
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock", "holds_folder", "check_folder", "lock_holder"]

LOCK_FILE = ".metarec.lock"

F = TypeVar("F", bound=Callable[..., Any])


def check_folder(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` as a :class:`Path` after checking it can be a folder (missing is fine: it will
    be created).

    Raises:
        ConfigError: ``path`` (or a folder above it) is a file.
    """
    p = Path(path)
    for cand in (p, *p.parents):
        if cand.exists() and not cand.is_dir():
            where = "is a file" if cand == p else f"lies under {str(cand)!r}, which is a file"
            raise ConfigError(
                f"{option} {str(p)!r}: {where}, not a folder; pass a folder path (a missing folder is created)"
            )
    return p


def lock_holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The holder record of ``folder``'s lock file (``None`` when there is none or it is unreadable)."""
    try:
        rec = json.loads((Path(folder) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


class RunLock:
    """An exclusive, process-lifetime lock on ``folder`` (created if missing).

    Args:
        folder: the folder to lock.
        what: what the folder is, for messages (``"run directory"``, ``"bench output folder"``).
        option: the argument that named it, for messages (``"--out"``).

    Attributes:
        stale: the holder record of a stale lock this one took over (its process was dead), else ``None``.

    Raises:
        ConfigError: another live process holds the lock (the message names its pid, host,
            start time and command), or ``folder`` is a file.
    """

    def __init__(
        self, folder: str | os.PathLike[str], *, what: str = "run directory", option: str = "out"
    ) -> None:
        self.folder = Path(folder)
        self.what, self.option = what, option
        self.path = self.folder / LOCK_FILE
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    # ------------------------------------------------------------------ acquire / release
    def acquire(self) -> None:
        if self._fd is not None:
            raise ConfigError(
                f"{self.option} {str(self.folder)!r}: this lock is already held by this object"
            )
        check_folder(self.folder, self.option)
        self.folder.mkdir(parents=True, exist_ok=True)
        if _fcntl is None:  # pragma: no cover - exercised by monkeypatching in the tests
            self._acquire_exclusive()
            return
        for _ in range(20):  # retries only when a releasing holder removed the file under us
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                got = self._flock(fd)
            except BaseException:
                os.close(fd)
                raise
            if got is None:  # this file system has no flock: fall back to O_EXCL
                if os.fstat(fd).st_size == 0:  # the empty file just created here is not a lock
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                os.close(fd)
                self._acquire_exclusive()
                return
            if not got:
                os.close(fd)
                self._busy(lock_holder(self.folder))
            if self._same_file(fd):
                self._take(fd)
                return
            os.close(fd)  # locked a file that its holder unlinked on release: try the new one
        raise ConfigError(
            f"{self.option} {str(self.folder)!r}: could not take the lock {str(self.path)!r}; retry"
        )

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if self._same_file(fd):
                os.unlink(self.path)  # before unlocking: a waiter then re-opens the new file
        os.close(fd)  # drops the flock

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _flock(fd: int) -> bool | None:
        """True: locked; False: held by another process; None: this file system has no flock."""
        assert _fcntl is not None
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                return None
            raise
        return True

    def _same_file(self, fd: int) -> bool:
        try:
            a, b = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def _take(self, fd: int) -> None:
        old = _read_record(fd)
        if old is not None and old.get("pid") != os.getpid():
            self.stale = old  # we hold the flock, so its writer is gone
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(_record()) + "\n").encode())
        os.fsync(fd)
        self._fd = fd

    def _acquire_exclusive(self) -> None:
        """The lock as the file's existence, for file systems without ``flock``."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                rec = lock_holder(self.folder)
                if rec is None or not _is_stale(rec):
                    self._busy(rec, fallback=True)
                self.stale = rec
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            self._take(fd)
            return
        raise ConfigError(
            f"{self.option} {str(self.folder)!r}: could not take the lock {str(self.path)!r}; retry"
        )

    def _busy(self, rec: dict[str, Any] | None, fallback: bool = False) -> None:
        if rec is None:
            who = "another process (its lock file cannot be read)"
        else:
            cmd = rec.get("command") or "?"
            mine = rec.get("pid") == os.getpid() and rec.get("host") == socket.gethostname()
            who = (
                f"{'this same' if mine else 'another metarec'} process (pid {rec.get('pid')} on host "
                f"{rec.get('host')!r}, since {rec.get('started')}: {cmd!r})"
            )
        fix = f"wait for it to finish, or choose another {self.option}"
        if fallback and rec is not None and rec.get("host") != socket.gethostname():
            fix += f"; if that run is known to be over, delete {str(self.path)!r}"
        raise ConfigError(
            f"{self.option} {str(self.folder)!r}: this {self.what} is in use by {who}; {fix}"
        )


def holds_folder(arg: str, *, what: str, option: str | None = None) -> Callable[[F], F]:
    """Decorator: hold :class:`RunLock` on the folder passed as argument ``arg`` for each call.

    Example::

        @holds_folder("out", what="bench output folder", option="--out")
        def run_bench(scenario, *, out, ...): ...
    """

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            folder = sig.bind(*args, **kwargs).arguments[arg]
            with RunLock(folder, what=what, option=option or arg):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def _record() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(
            [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
        )[:300],
    }


def _read_record(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        rec = json.loads(os.read(fd, 65536).decode() or "null")
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _is_stale(rec: dict[str, Any]) -> bool:
    """Whether a holder record names a dead process on this host (other hosts cannot be checked)."""
    pid = rec.get("pid")
    if rec.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
