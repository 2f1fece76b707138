"""``metarec serve`` over real HTTP on 127.0.0.1: concurrent answers equal the sequential ones and
``metarec recommend --json``; validation errors (the CLI's messages), size limits, health, shutdown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_serve_engine import SMALL, train_small  # noqa: F401  (one training run per session)

from metarec.cli.main import main
from metarec.recommend.load import load_run
from metarec.serve import Limits, ServeConfig, ServerThread

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_small(tmp_path_factory, "melu", [])


@pytest.fixture(scope="module")
def server(run):
    meta = load_run(run)
    cfg = ServeConfig(
        max_batch=64, max_wait_ms=50, limits=Limits(max_body_bytes=4096, max_support=20)
    )
    srv = ServerThread(meta, cfg).start()
    try:
        yield srv, meta
    finally:
        srv.stop()


def _post(
    url: str, path: str, body: object, raw: object = None, headers: dict | None = None
) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        data = raw if raw is not None else json.dumps(body).encode()
        conn.request(
            "POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _get(url: str, path: str) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _bodies(meta, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = meta.item_ids.values
    out = []
    for b in range(n):
        pick = rng.choice(len(items), 5, replace=False)
        out.append(
            {
                "user": f"cold-{seed}-{b}",
                "k": 10,
                "support": [{"item": items[i], "rating": int(rng.integers(1, 6))} for i in pick],
            }
        )
    return out


def _cli(run: Path, body: dict, tmp_path: Path, capsys) -> tuple[int, str]:
    csv = tmp_path / f"{body['user']}.csv"
    lines = ["user,item,rating"] + [
        f"{body['user']},{r['item']},{r['rating']}" for r in body.get("support", [])
    ]
    csv.write_text("\n".join(lines) + "\n")
    code = main(
        [
            "recommend",
            "--run",
            str(run),
            "--user",
            str(body["user"]),
            "--support",
            str(csv),
            "--json",
            "--k",
            str(body.get("k", 10)),
        ]
    )
    cap = capsys.readouterr()
    return code, (cap.out if code == 0 else cap.err)


def _same(got: dict, want: dict) -> None:
    assert got["user"] == want["user"]
    assert [x["item"] for x in got["items"]] == [x["item"] for x in want["items"]]
    np.testing.assert_allclose(
        [x["score"] for x in got["items"]], [x["score"] for x in want["items"]], rtol=0, atol=1e-5
    )


def test_health(server) -> None:
    srv, meta = server
    code, h = _get(srv.url, "/health")
    assert code == 200 and h["status"] == "ok" and h["path"] == "melu-batched"
    assert h["items"] == len(meta.item_ids) - 1 and h["max_batch"] == 64
    assert srv.url.startswith("http://127.0.0.1:")


def test_64_concurrent_requests_equal_sequential_and_the_cli(server, run, tmp_path, capsys) -> None:
    srv, meta = server
    bodies = _bodies(meta, 64)
    before = srv.app.state.batcher.batches
    sequential = [_post(srv.url, "/recommend", b) for b in bodies]  # one at a time: batches of one
    assert srv.app.state.batcher.batches - before == 64
    start = threading.Barrier(64)

    def go(b: dict) -> tuple[int, dict]:
        start.wait()
        return _post(srv.url, "/recommend", b)

    before = srv.app.state.batcher.batches
    with ThreadPoolExecutor(64) as pool:
        concurrent = list(pool.map(go, bodies))
    batches = srv.app.state.batcher.batches - before
    assert batches < 64, f"64 concurrent requests took {batches} batches: nothing was batched"
    for (c1, seq), (c2, con), body in zip(sequential, concurrent, bodies, strict=True):
        assert c1 == c2 == 200
        assert seq["user"] == body["user"] and len(seq["items"]) == 10
        _same(con, seq)  # the same ranking; scores equal up to float rounding
        assert not {r["item"] for r in body["support"]} & {x["item"] for x in con["items"]}
    for body, (_, con) in list(zip(bodies, concurrent, strict=True))[
        :3
    ]:  # the command line, same input
        code, out = _cli(run, body, tmp_path, capsys)
        assert code == 0
        _same(con, json.loads(out))


def test_predict(server) -> None:
    srv, meta = server
    body = _bodies(meta, 1, seed=3)[0]
    probe = meta.item_ids.values[:7]
    code, out = _post(
        srv.url, "/predict", {"user": body["user"], "support": body["support"], "items": probe}
    )
    assert code == 200 and [x["item"] for x in out["items"]] == [str(i) for i in probe]
    rows = [(r["item"], float(r["rating"])) for r in body["support"]]
    want = meta.adapt(rows, user=body["user"]).predict(body["user"], probe)
    np.testing.assert_allclose([x["score"] for x in out["items"]], want, rtol=0, atol=1e-5)


def test_validation_errors_are_the_cli_messages(server, run, tmp_path, capsys) -> None:
    srv, meta = server
    item = meta.item_ids.values[0]
    cases = [
        {"user": "v1", "support": [{"item": item, "rating": 9}]},
        {"user": "v2", "support": [{"item": "no-such-item", "rating": 3}]},
        {"user": "v3", "support": [{"item": item, "rating": "abc"}]},
        {"user": "v4", "k": 0, "support": [{"item": item, "rating": 3}]},
    ]
    for body in cases:
        code, out = _post(srv.url, "/recommend", body)
        cli_code, err = _cli(run, body, tmp_path, capsys)
        assert code == 400 and cli_code == 2
        assert err.strip() == f"metarec: error: {out['error']}"


def test_bad_requests(server) -> None:
    srv, meta = server
    code, out = _post(srv.url, "/recommend", {"user": "u", "support": "/etc/passwd"})
    assert code == 400 and "the server never reads files" in out["error"]
    code, out = _post(srv.url, "/recommend", None, raw=b"{not json")
    assert code == 400 and "not valid JSON" in out["error"]
    code, out = _post(srv.url, "/recommend", {"user": "u", "support": [], "kk": 2})
    assert code == 400 and "unknown field 'kk'" in out["error"]
    code, out = _post(srv.url, "/recommend", {"user": "u", "domain": "books"})
    if srv.app.state.engine.domain_supported:  # the recommender has a domain option: passed through
        assert code in (200, 400)
    else:
        assert code == 400 and "domain filtering is unavailable for this run" in out["error"]
    code, out = _post(srv.url, "/predict", {"user": "u", "items": ["no-such-item"]})
    assert code == 400 and "items: 1 item id(s) not in the run's item catalogue" in out["error"]
    code, out = _get(srv.url, "/nope")
    assert (
        code == 404 and "GET /nope: no such route; the routes are POST /recommend" in out["error"]
    )
    code, out = _get(srv.url, "/recommend")
    assert code == 405 and "method not allowed" in out["error"]


def test_size_limits(server) -> None:
    srv, meta = server
    item = meta.item_ids.values[0]
    code, out = _post(
        srv.url, "/recommend", {"user": "u", "support": [{"item": item, "rating": 3}] * 21}
    )
    assert code == 413 and "support: 21 rows, over the server's limit of 20" in out["error"]
    code, out = _post(srv.url, "/recommend", None, raw=b'{"user": "' + b"x" * 5000 + b'"}')
    assert code == 413 and "over the server's limit of 4,096 bytes" in out["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"user": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    code, out = _post(srv.url, "/recommend", None, raw=chunks())  # http.client sends it chunked
    assert code == 413 and "over the server's limit" in out["error"]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigterm_drains_requests_in_flight(run, workers) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metarec",
            "serve",
            "--run",
            str(run),
            "--port",
            "0",
            "--max-wait-ms",
            "1500",
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "listening on http://127.0.0.1:" in line, line + proc.stderr.read()  # type: ignore[union-attr]
        assert (f"{workers} workers" in line) == (workers > 1)
        url = line.split("listening on ")[1].split()[0]
        meta = load_run(run)
        bodies = _bodies(meta, 8, seed=7)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(_post, url, "/recommend", b) for b in bodies]
            time.sleep(0.5)  # the requests are queued (the batch waits up to 1.5 s to fill)
            proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=60) for f in futures]
        assert [c for c, _ in answers] == [200] * 8
        assert all(len(a["items"]) == 10 for _, a in answers)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(OSError):
            _get(url, "/health")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_bind_refuses_a_bad_port() -> None:
    from metarec._errors import ConfigError
    from metarec.serve.runner import bind

    with pytest.raises(ConfigError, match=r"port=70000: must be an int in 0..65535"):
        bind("127.0.0.1", 70000)
    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match=r"cannot bind .*choose another --port"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()
