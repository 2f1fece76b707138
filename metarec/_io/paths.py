"""What a path is, before anything reads or writes it: regular files, special files, links.

Readers call :func:`special_file` (or :func:`need_file`) so that a FIFO, a device such as
``/dev/zero`` or a socket gets its own message instead of "file not found" (or a read that never
ends); writers call :func:`links_in` so that no write follows a symbolic link out of a run folder.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> special_file(os.path.join(d, "nothing.csv")) is None
True
>>> special_file("/dev/null")
'a character device'
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["special_file", "need_file", "links_in"]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_file(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it exists but is not a regular file (links followed): ``"a FIFO
    (named pipe)"``, ``"a character device"``, ...; ``None`` for a regular file or a missing path."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def need_file(path: str | os.PathLike[str], what: str, fix: str, error: type[Exception]) -> Path:
    """``path`` when it is a regular file, else ``error`` naming it, what it is, and ``fix``.

    ``what`` names the path in the message (``"data.path"``, ``"checkpoint"``); a missing file
    says "file not found", a special file says which kind it is (never read: a FIFO would block,
    ``/dev/zero`` never ends).
    """
    p = Path(path)
    kind = special_file(p)
    if kind is not None:
        raise error(
            f"{what} {str(p)!r}: is {kind}, not a regular file; metarec reads only regular files; {fix}"
        )
    if not p.is_file():
        raise error(f"{what} {str(p)!r}: file not found; {fix}")
    return p


def links_in(root: str | os.PathLike[str], rels: Iterable[str]) -> list[tuple[str, str]]:
    """The symbolic links among ``root / rel`` and the folders between ``root`` and it, as
    ``(relative path, link target)``; ``root`` itself may be a link (the folder the user named)."""
    root = Path(root)
    seen: dict[str, str] = {}
    for rel in rels:
        parts = Path(rel).parts
        for n in range(1, len(parts) + 1):
            sub = Path(*parts[:n])
            key = sub.as_posix()
            if key in seen:
                continue
            p = root / sub
            if p.is_symlink():
                seen[key] = os.readlink(p)
    return sorted(seen.items())
