"""Download the official MovieLens archives from GroupLens, verified and written atomically.

metarec never ships data: :func:`fetch` downloads the archive a user asks for, checks its
published MD5 checksum and its member files, and only then moves the extracted folder into
place. A failed or interrupted fetch leaves nothing behind; a second fetch of data already
present does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from metarec._errors import DataError, suggest
from metarec._io.lock import check_folder

__all__ = ["CHECKSUMS", "DEFAULT_BASE_URL", "FETCHABLE", "fetch", "licence"]

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
"""Where the archives live; overridden by ``base_url=`` or ``METAREC_FETCH_BASE_URL``."""

_MOVIELENS_LICENCE = (
    "MovieLens {label} is provided by GroupLens Research (University of Minnesota) under these terms:\n"
    "  - research use only; no commercial use without permission;\n"
    "  - no redistribution (do not re-share the files, in whole or part) without permission;\n"
    "  - cite: F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History\n"
    "    and Context. ACM Transactions on Interactive Intelligent Systems (TiiS) 5(4):19.\n"
    "  Full terms: the README inside the archive, https://grouplens.org/datasets/movielens/"
)


@dataclass(frozen=True)
class _Archive:
    archive: str  # file name under the base URL
    folder: str  # top-level folder inside the zip, and the folder created under root
    members: tuple[str, ...]  # files that must be in that folder
    label: str


FETCHABLE: dict[str, _Archive] = {
    "movielens-100k": _Archive("ml-100k.zip", "ml-100k", ("u.data", "u.item", "u.user"), "100K"),
    "movielens-1m": _Archive(
        "ml-1m.zip", "ml-1m", ("ratings.dat", "users.dat", "movies.dat"), "1M"
    ),
}
"""Datasets :func:`fetch` knows, by name."""

CHECKSUMS: dict[str, str] = {
    "movielens-100k": "0e33842e24a9c977be4e0107933c0723",
    "movielens-1m": "c4d9eecfca2ab87c1945afe126590906",
}
"""Published GroupLens MD5 checksums of the archives."""

_ALIASES = {"ml-100k": "movielens-100k", "ml-1m": "movielens-1m"}
_CHUNK = 1 << 20


def licence(name: str) -> str:
    """What the licence of dataset ``name`` allows, and how to cite it."""
    return _MOVIELENS_LICENCE.format(label=FETCHABLE[_resolve(name)].label)


def fetch(name: str, root: str | Path, *, base_url: str | None = None, quiet: bool = False) -> Path:
    """Download dataset ``name`` into ``root/<folder>`` (``root/ml-1m`` for ``movielens-1m``).

    The archive is downloaded to a temporary file in ``root``, checked against its published
    MD5 checksum and its expected member files, extracted to a temporary folder in ``root`` and
    only then renamed into place, so a failure leaves nothing behind. If the folder is already
    there with its files, nothing is downloaded.

    Args:
        name: ``"movielens-100k"`` or ``"movielens-1m"``.
        root: the folder to hold the dataset folder (created if needed); pass the same ``root``
            to :func:`metarec.data.readers.read_movielens_1m`.
        base_url: where the archives live (default ``METAREC_FETCH_BASE_URL`` or GroupLens).
        quiet: print nothing (the licence terms included).

    Returns:
        The dataset folder.

    Raises:
        DataError: an unknown name, a failed download, a checksum mismatch, an archive
            without the expected files, or an incomplete folder already in place.
    """
    key = _resolve(name)
    spec = FETCHABLE[key]
    root = check_folder(root, "root")  # hook (metarec._io.lock): a file here is a clear error
    target = root / spec.folder
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))
    if target.exists():
        _check_complete(target, spec, key)
        say(f"{key}: already present at {target}; nothing to do")
        return target
    base = base_url or os.environ.get("METAREC_FETCH_BASE_URL") or DEFAULT_BASE_URL
    url = f"{base.rstrip('/')}/{spec.archive}"
    say(licence(key))
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.folder}.", suffix=".zip.part", dir=root)
    tmp_zip = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        say(f"{key}: downloading {url}")
        with os.fdopen(fd, "wb") as out:
            digest, size = _download(url, out)
        expected = CHECKSUMS[key]
        if digest != expected:
            raise DataError(
                f"{key}: checksum mismatch for {url}: md5 {digest}, expected {expected} "
                f"({size} bytes received); the download is corrupt or the file changed upstream; "
                "nothing was written; try again, or check base_url / METAREC_FETCH_BASE_URL"
            )
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".extract", dir=root))
        _extract(tmp_zip, tmp_dir, spec, key)
        try:
            os.replace(tmp_dir / spec.folder, target)
        except OSError:
            if not target.exists():
                raise
            _check_complete(target, spec, key)  # another process fetched it meanwhile
        say(f"{key}: {size / 1e6:.1f} MB verified (md5 {digest}); extracted to {target}")
        return target
    finally:
        tmp_zip.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _resolve(name: str) -> str:
    key = _ALIASES.get(name, name)
    if key not in FETCHABLE:
        raise DataError(
            f"fetch: unknown dataset {name!r}{suggest(name, list(FETCHABLE) + list(_ALIASES))}; "
            f"fetchable datasets are {sorted(FETCHABLE)}"
        )
    return key


def _download(url: str, out: BinaryIO) -> tuple[str, int]:
    """Stream ``url`` into ``out``; return (md5 hex digest, bytes)."""
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(_CHUNK):
                md5.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError) as e:
        reason = (
            f"HTTP {e.code} {e.reason}"
            if isinstance(e, urllib.error.HTTPError)
            else getattr(e, "reason", e)
        )
        raise DataError(
            f"could not download {url}: {reason}; check the network (or base_url / "
            "METAREC_FETCH_BASE_URL), or download the archive by hand and unzip it into root"
        ) from e
    return md5.hexdigest(), size


def _extract(zpath: Path, dest: Path, spec: _Archive, key: str) -> None:
    """Check the archive (opens, CRCs, expected members, safe paths) and extract it to ``dest``."""
    try:
        with zipfile.ZipFile(zpath) as zf:
            names = zf.namelist()
            for n in names:
                p = PurePosixPath(n)
                if p.is_absolute() or ".." in p.parts or "\\" in n:
                    raise DataError(f"{key}: unsafe archive member path {n!r}; refusing to extract")
            missing = [m for m in spec.members if f"{spec.folder}/{m}" not in names]
            if missing:
                raise DataError(
                    f"{key}: the archive lacks {[f'{spec.folder}/{m}' for m in missing]}; "
                    "it is not the expected GroupLens archive; nothing was written"
                )
            bad = zf.testzip()
            if bad is not None:
                raise DataError(
                    f"{key}: archive member {bad!r} is corrupt (CRC); nothing was written"
                )
            zf.extractall(dest, members=[n for n in names if n.startswith(f"{spec.folder}/")])
    except zipfile.BadZipFile as e:
        raise DataError(
            f"{key}: the download is not a valid zip archive ({e}); nothing was written"
        ) from e


def _check_complete(target: Path, spec: _Archive, key: str) -> None:
    missing = [m for m in spec.members if not (target / m).is_file()]
    if missing:
        raise DataError(
            f"{key}: {target} exists but lacks {missing}; remove that folder and fetch again"
        )
