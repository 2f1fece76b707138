"""Hostile clients against a real ``metarec serve`` on 127.0.0.1, over raw sockets, on both
serving paths (the batched kernel and the library's): neighbours unharmed, 431 for oversized
headers, idle and slow connections closed within the configured time-outs while ``/health``
keeps answering, a fast 503 beyond the connection limit, and a 400 naming the field for deep
nesting, huge numbers and ids that are no text (issue 22, problems 1 to 4)."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_serve_engine import TWO_TOWER, train_small

from metarec.recommend.load import load_run
from metarec.serve import HttpLimits, Limits, ServeConfig, ServerThread

HTTP = HttpLimits(
    max_header_bytes=4096, header_timeout=1.0, body_timeout=1.0, keep_alive=1.0, max_connections=12
)
"""Short time-outs, so that the tests are fast."""


@pytest.fixture(scope="module")
def meta(tmp_path_factory):
    return load_run(train_small(tmp_path_factory, "two_tower", TWO_TOWER))


@pytest.fixture(scope="module", params=["kernel", "library"])
def server(request, meta):
    cfg = ServeConfig(
        max_batch=64,
        max_wait_ms=300,  # concurrent requests land in one batch
        batched_kernel=request.param == "kernel",
        limits=Limits(max_body_bytes=1 << 20, max_support=50, max_items=100),
    )
    srv = ServerThread(meta, cfg, http=HTTP).start()
    assert srv.app.engine.path == ("two-tower-batched" if request.param == "kernel" else "library")
    try:
        yield srv
    finally:
        srv.stop()


def _addr(srv) -> tuple[str, int]:
    host, port = srv.url.removeprefix("http://").split(":")
    return host, int(port)


def _read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status and body of one HTTP response on ``sock`` (0, b"" if the server closed first)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return 0, b""
        if not chunk:
            return 0, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        (
            int(ln.split(b":")[1])
            for ln in head.split(b"\r\n")
            if ln.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body


def _request(srv, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, dict]:
    with socket.create_connection(_addr(srv), timeout=30) as s:
        s.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n".encode()
            + body
        )
        code, raw = _read_response(s, 60)
        return code, json.loads(raw or b"{}")


def _post(srv, body: object) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _request(srv, "POST", "/recommend", raw)


def _health(srv) -> int:
    return _request(srv, "GET", "/health")[0]


def _closed(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``within`` seconds, and what it sent first."""
    sock.settimeout(within)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def _ordinary(meta, n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    items = meta.item_ids.values
    return [
        {
            "user": f"cold-{b}",
            "k": 5,
            "support": [
                {"item": str(items[i]), "rating": int(rng.integers(1, 6))}
                for i in rng.choice(len(items), 4, replace=False)
            ],
        }
        for b in range(n)
    ]


# ---------------------------------------------------------------------- isolation
HOSTILE = [
    (b'{"user": "\\ud800", "k": 5}', "user='\\ud800': not valid Unicode text"),
    (b'{"user": "u", "k": ' + b"9" * 5000 + b"}", "k=<an integer of 5,000 digits>"),
    (
        b'{"user": "u", "support": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "field 'support' is nested 100,001",
    ),
    (b'{"user": "u", "support": [{"item": "x", "rating": 1e999}]}', "not a finite number"),
    (b'{"user": 1' + b"0" * 40 + b"}", "user=<an integer of 41 digits>: over 19 digits"),
    (
        b'{"user": "u", "support": [{"item": "\\udfff", "rating": 3}]}',
        "support[0].item='\\udfff': not valid Unicode",
    ),
    (b'{"user": "' + b"u" * 2000 + b'"}', "user: 2,000 characters, over the limit of 1024"),
]


@pytest.mark.parametrize(
    ("body", "says"),
    HOSTILE,
    ids=[
        "surrogate-user",
        "5000-digit-k",
        "deep-nesting",
        "huge-rating",
        "long-int-id",
        "surrogate-item",
        "long-id",
    ],
)
def test_legal_but_hostile_json_is_a_400_naming_the_field(server, body, says) -> None:
    code, out = _post(server, body)
    assert code == 400 and says in out["error"], (code, out)
    assert len(out["error"]) < 400  # one line, never the value in full


def test_hostile_requests_in_a_batch_leave_their_neighbours_unharmed(server, meta) -> None:
    """Ordinary requests batched with hostile ones (and with one whose adaptation fails
    inside the batch) get exactly their solo answers."""
    bodies = _ordinary(meta, 6)
    solo = [_post(server, b) for b in bodies]  # each alone (300 ms apart at most: own batches)
    assert all(c == 200 for c, _ in solo)
    engine = server.app.engine
    real = engine.run

    def failing(jobs):  # a request whose adaptation fails inside the batch (a bug, a bad run)
        if any(j.user == "boom" for j in jobs):
            raise RuntimeError("adaptation failed for user boom")
        return real(jobs)

    engine.run = failing
    server.app.batcher.fn = failing
    try:
        boom = {"user": "boom", "k": 5, "support": bodies[0]["support"]}
        mixed = [*bodies, boom, *[b for b, _ in HOSTILE[:3]]]
        with ThreadPoolExecutor(len(mixed)) as pool:
            answers = list(pool.map(lambda b: _post(server, b), mixed))
    finally:
        engine.run = real
        server.app.batcher.fn = real
    for (code, out), (code0, want) in zip(answers[:6], solo, strict=True):
        assert code == code0 == 200 and out["user"] == want["user"]
        assert [x["item"] for x in out["items"]] == [x["item"] for x in want["items"]]
        np.testing.assert_allclose(
            [x["score"] for x in out["items"]], [x["score"] for x in want["items"]], atol=1e-5
        )
    assert answers[6][0] == 500 and "internal error" in answers[6][1]["error"]
    assert [c for c, _ in answers[7:]] == [400, 400, 400]


def test_repeated_support_rows_warn_in_the_answer_and_ids_are_strings(server, meta) -> None:
    item = meta.item_ids.values[0]
    body = {"user": "rep", "k": 3, "support": [{"item": item, "rating": 5}] * 3}
    code, out = _post(server, body)
    assert code == 200 and isinstance(out["user"], str)
    assert all(isinstance(x["item"], str) for x in out["items"])
    (w,) = out["warnings"]
    assert f"rates item '{item}' 3 times" in w
    known = meta.user_ids.values[0]
    code, out = _post(server, {"user": known, "k": 2})
    assert code == 200 and out["user"] == str(known)


# ---------------------------------------------------------------------- limits and time-outs
@pytest.mark.parametrize("chunked", [False, True], ids=["at-once", "streamed"])
def test_oversized_headers_get_431(server, chunked) -> None:
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n"
    with socket.create_connection(_addr(server), timeout=10) as s:
        try:
            if chunked:
                for i in range(0, len(big), 8192):
                    s.sendall(big[i : i + 8192])
            else:
                s.sendall(big)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest arrived
        code, body = _read_response(s)
    assert code == 431 and b"--max-header-bytes" in body
    assert _health(server) == 200


def test_idle_and_slow_connections_are_closed_while_health_answers(server) -> None:
    idle = socket.create_connection(_addr(server))
    slow = socket.create_connection(_addr(server))
    stop = threading.Event()

    def trickle() -> None:  # 1 byte every 0.2 s: a head that would take minutes
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\n":
            if stop.is_set():
                return
            try:
                slow.send(bytes([b]))
            except OSError:
                return
            time.sleep(0.2)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        assert _health(server) == 200  # answered while both are open
        limit = HTTP.header_timeout + 2.0
        assert _closed(idle, limit)[0], "an idle connection stayed open"
        done, got = _closed(slow, limit)
        assert done and got.startswith(b"HTTP/1.1 408") and b"--header-timeout" in got
        assert _health(server) == 200
    finally:
        stop.set()
        idle.close()
        slow.close()


def test_a_slow_body_gets_408(server) -> None:
    with socket.create_connection(_addr(server)) as s:
        s.sendall(b'POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"user":')
        done, got = _closed(s, HTTP.body_timeout + 2.0)
    assert done and got.startswith(b"HTTP/1.1 408") and b"--body-timeout" in got


def test_keep_alive_connections_are_closed_after_the_keep_alive_time(server) -> None:
    with socket.create_connection(_addr(server)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(s)[0] == 200
        assert _closed(s, HTTP.keep_alive + 2.0)[0]


def test_beyond_max_connections_a_fast_503_then_health_again(server) -> None:
    held = [socket.create_connection(_addr(server)) for _ in range(HTTP.max_connections)]
    try:
        time.sleep(0.2)
        with socket.create_connection(_addr(server), timeout=5) as extra:
            t0 = time.monotonic()
            code, body = _read_response(extra, 5)
            assert code == 503 and b"--max-connections" in body
            assert time.monotonic() - t0 < HTTP.header_timeout  # before any time-out frees a slot
        for s in held:  # the idle ones are closed by the header time-out ...
            assert _closed(s, HTTP.header_timeout + 2.0)[0]
        assert _health(server) == 200  # ... and the server answers again
    finally:
        for s in held:
            s.close()
