"""fetch(): download, verify and extract atomically, against a local HTTP server only.

The archive served here is made up (the GroupLens layout, fake content); its checksum is put in
place of the published one through ``fetch.CHECKSUMS``. Nothing contacts the internet.
"""

from __future__ import annotations

import hashlib
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metarec._errors import DataError
from metarec.data import fetch as fetch_mod
from metarec.data.fetch import fetch


class _Handler(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet server
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, served folder, request log) of a local server on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/datasets", served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _fake_archive(
    served: Path, members: tuple[str, ...] = ("ratings.dat", "users.dat", "movies.dat")
) -> str:
    """Write a fake ml-1m.zip under served/datasets; return its md5."""
    path = served / "datasets" / "ml-1m.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-1m/", "")
        for m in members:
            zf.writestr(f"ml-1m/{m}", f"fake {m}\n")
        zf.writestr("ml-1m/README", "fake readme\n")
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_fetch_downloads_verifies_and_is_idempotent(
    server: tuple[str, Path, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served, requests = server
    monkeypatch.setitem(fetch_mod.CHECKSUMS, "movielens-1m", _fake_archive(served))
    root = tmp_path / "data"
    out = fetch("movielens-1m", root, base_url=base)
    assert out == root / "ml-1m"
    assert (out / "ratings.dat").read_text() == "fake ratings.dat\n"
    assert sorted(p.name for p in root.iterdir()) == ["ml-1m"]  # no temporary file or folder left
    assert requests == ["/datasets/ml-1m.zip"]
    err = capsys.readouterr().err
    assert "no redistribution" in err and "Harper and Joseph A. Konstan" in err and "5(4):19" in err

    assert fetch("movielens-1m", root, base_url=base) == out  # second time: nothing downloaded
    assert requests == ["/datasets/ml-1m.zip"]
    assert "already present" in capsys.readouterr().err
    fetch("ml-1m", root, base_url=base, quiet=True)
    assert capsys.readouterr().err == ""


def test_env_var_base_url(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, requests = server
    monkeypatch.setitem(fetch_mod.CHECKSUMS, "movielens-1m", _fake_archive(served))
    monkeypatch.setenv("METAREC_FETCH_BASE_URL", base + "/")
    assert (fetch("movielens-1m", tmp_path, quiet=True) / "movies.dat").is_file()
    assert requests == ["/datasets/ml-1m.zip"]


def test_checksum_mismatch_leaves_nothing(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, _ = server
    _fake_archive(served)
    monkeypatch.setitem(fetch_mod.CHECKSUMS, "movielens-1m", "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch.*expected 0{32}.*nothing was written"):
        fetch("movielens-1m", root, base_url=base, quiet=True)
    assert list(root.iterdir()) == []


def test_archive_without_expected_members(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, _ = server
    monkeypatch.setitem(
        fetch_mod.CHECKSUMS, "movielens-1m", _fake_archive(served, ("ratings.dat",))
    )
    with pytest.raises(DataError, match="lacks.*ml-1m/users.dat"):
        fetch("movielens-1m", tmp_path, base_url=base, quiet=True)
    assert [p.name for p in tmp_path.iterdir()] == ["served"]


def test_not_a_zip_and_http_error(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, _ = server
    bogus = served / "datasets" / "ml-100k.zip"
    bogus.parent.mkdir(parents=True)
    bogus.write_bytes(b"not a zip")
    monkeypatch.setitem(
        fetch_mod.CHECKSUMS, "movielens-100k", hashlib.md5(b"not a zip").hexdigest()
    )
    root = tmp_path / "data"
    with pytest.raises(DataError, match="not a valid zip"):
        fetch("movielens-100k", root, base_url=base, quiet=True)
    with pytest.raises(DataError, match="could not download .*ml-1m.zip: HTTP 404"):
        fetch("movielens-1m", root, base_url=base, quiet=True)
    assert list(root.iterdir()) == []


def test_unknown_name_and_incomplete_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="did you mean 'movielens-1m'"):
        fetch("movielens-1n", tmp_path)
    (tmp_path / "ml-100k").mkdir()
    with pytest.raises(DataError, match="exists but lacks.*remove that folder"):
        fetch("movielens-100k", tmp_path, base_url="http://127.0.0.1:9/never-contacted")
    assert "cite" in fetch_mod.licence("movielens-100k")
