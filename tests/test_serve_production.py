"""The production surface of ``metarec serve`` on a real server on 127.0.0.1: ``/openapi.json``
from the schema that validates, the offline docs page, ``/metrics`` in Prometheus format,
``/ready`` apart from ``/health`` (also while the run loads), bearer-token auth, a failed load as
one error line."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_serve_engine import TWO_TOWER, train_small

from metarec._errors import CheckpointError, ConfigError
from metarec.cli.main import main
from metarec.recommend.load import load_run
from metarec.serve import Limits, ServeConfig, ServerThread, openapi, read_token
from metarec.serve.schema import PREDICT, RECOMMEND

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_small(tmp_path_factory, "two_tower", TWO_TOWER)


@pytest.fixture(scope="module")
def meta(run):
    return load_run(run)


def _call(
    url: str, method: str, path: str, body: object = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _body(meta) -> dict:
    items = meta.item_ids.values
    return {"user": "cold", "k": 3, "support": [{"item": items[0], "rating": 4}]}


def test_openapi_is_written_from_the_schema_that_validates(meta) -> None:
    limits = Limits(max_items=77, max_support=9)
    with ServerThread(meta, ServeConfig(limits=limits)) as srv:
        code, _, raw = _call(srv.url, "GET", "/openapi.json")
        doc = json.loads(raw)
        assert code == 200 and doc["openapi"].startswith("3.0")
        assert set(doc["paths"]) == {"/recommend", "/predict", "/health", "/ready", "/metrics"}
        rec = doc["components"]["schemas"]["Recommend"]
        assert list(rec["properties"]) == list(RECOMMEND.keys) and rec["required"] == ["user"]
        assert rec["properties"]["k"]["maximum"] == 77  # the server's own limit
        assert rec["properties"]["support"]["maxItems"] == 9
        assert list(doc["components"]["schemas"]["Predict"]["properties"]) == list(PREDICT.keys)
        assert doc == json.loads(json.dumps(openapi(limits)))
        # the validator enforces what the document says: the field list of its error is the schema's
        code, _, raw = _call(srv.url, "POST", "/recommend", {"user": "u", "kk": 1})
        assert code == 400 and f"the fields are {list(RECOMMEND.keys)}" in json.loads(raw)["error"]
        code, _, raw = _call(srv.url, "POST", "/recommend", {"user": "u", "k": 78})
        assert code == 413 and "--max-items" in json.loads(raw)["error"]


def test_the_docs_page_is_served_with_local_assets(meta) -> None:
    import swagger_ui_bundle

    with ServerThread(meta) as srv:
        code, head, page = _call(srv.url, "GET", "/docs")
        assert code == 200 and head["content-type"].startswith("text/html")
        html = page.decode()
        assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
        for asset in ("/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/init.js"):
            assert asset in html
            code, _, data = _call(srv.url, "GET", asset)
            assert code == 200 and data
        want = (Path(swagger_ui_bundle.swagger_ui_path) / "swagger-ui-bundle.js").read_bytes()
        assert _call(srv.url, "GET", "/docs/swagger-ui-bundle.js")[2] == want
        assert b"/openapi.json" in _call(srv.url, "GET", "/docs/init.js")[2]
        assert _call(srv.url, "GET", "/docs/../manifest.json")[0] == 404


def _chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name) or (
            f"/usr/lib/chromium/{name}" if os.path.exists(f"/usr/lib/chromium/{name}") else None
        )
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium installed")
def test_the_docs_page_renders_in_headless_chromium_offline(meta, tmp_path) -> None:
    """The page renders the API from /openapi.json with no network but 127.0.0.1."""
    with ServerThread(meta) as srv:
        out = subprocess.run(
            [
                _chromium(),  # type: ignore[list-item]
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp_path}",
                "--proxy-server=http://0.0.0.0:9",  # any request beyond 127.0.0.1 fails
                "--proxy-bypass-list=127.0.0.1",
                "--virtual-time-budget=8000",
                "--dump-dom",
                srv.url + "/docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    dom = out.stdout
    assert "swagger-ui" in dom and "/recommend" in dom and "/predict" in dom, out.stderr[-2000:]
    assert "Recommend" in dom  # the request schema, read from /openapi.json


def test_metrics_in_prometheus_format(meta) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with ServerThread(meta, ServeConfig(lr=1e30)) as srv:  # every adaptation diverges
        assert _call(srv.url, "POST", "/recommend", _body(meta))[0] == 500
        assert _call(srv.url, "POST", "/recommend", {"user": "u", "k": 0})[0] == 400
    with ServerThread(meta) as srv:
        for _ in range(3):
            assert _call(srv.url, "POST", "/recommend", _body(meta))[0] == 200
        code, head, raw = _call(srv.url, "GET", "/metrics")
        assert code == 200 and head["content-type"].startswith("text/plain")
        fams = {f.name: f for f in text_string_to_metric_families(raw.decode())}
        req = {
            (s.labels["route"], s.labels["code"]): s.value
            for s in fams["metarec_requests"].samples
            if s.name == "metarec_requests_total"
        }
        assert req[("/recommend", "200")] == 3
        lat = [s for s in fams["metarec_request_seconds"].samples if s.name.endswith("_count")]
        assert any(s.labels["route"] == "/recommend" and s.value == 3 for s in lat)
        sizes = [s for s in fams["metarec_batch_size"].samples if s.name.endswith("_count")]
        assert sizes[0].value == 3
        for name in ("metarec_adapt_failures", "metarec_diverged_users", "metarec_ready"):
            assert name in fams
    with ServerThread(meta, ServeConfig(lr=1e30)) as srv:
        assert _call(srv.url, "POST", "/recommend", _body(meta))[0] == 500
        fams = {
            f.name: f
            for f in text_string_to_metric_families(_call(srv.url, "GET", "/metrics")[2].decode())
        }
        value = {s.name: s.value for f in fams.values() for s in f.samples}
        assert value["metarec_diverged_users_total"] == 1
        assert value["metarec_adapt_failures_total"] == 1


def test_ready_is_not_health_while_the_run_loads(meta) -> None:
    release = threading.Event()

    def slow_load():
        release.wait(60)
        return meta

    with ServerThread(None, loader=slow_load) as srv:
        code, _, raw = _call(srv.url, "GET", "/health")
        assert code == 200 and json.loads(raw)["status"] == "loading"
        code, head, raw = _call(srv.url, "GET", "/ready")
        assert code == 503 and "still loading" in json.loads(raw)["error"]
        code, head, raw = _call(srv.url, "POST", "/recommend", _body(meta))
        assert code == 503 and head.get("retry-after") == "1"
        release.set()
        for _ in range(200):
            if _call(srv.url, "GET", "/ready")[0] == 200:
                break
            threading.Event().wait(0.05)
        assert _call(srv.url, "GET", "/ready")[0] == 200
        assert _call(srv.url, "POST", "/recommend", _body(meta))[0] == 200


def test_bearer_token_auth(meta, tmp_path, monkeypatch) -> None:
    with ServerThread(meta, ServeConfig(token="s3cret-token")) as srv:
        code, head, raw = _call(srv.url, "POST", "/recommend", _body(meta))
        assert code == 401 and head["www-authenticate"].startswith("Bearer")
        assert "missing or wrong bearer token" in json.loads(raw)["error"]
        bad = {"Authorization": "Bearer wrong"}
        assert _call(srv.url, "POST", "/recommend", _body(meta), bad)[0] == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert _call(srv.url, "POST", "/recommend", _body(meta), good)[0] == 200
        assert _call(srv.url, "GET", "/metrics")[0] == 401
        assert _call(srv.url, "GET", "/metrics", headers=good)[0] == 200
        for open_route in ("/health", "/ready", "/openapi.json", "/docs"):
            assert _call(srv.url, "GET", open_route)[0] == 200
        assert "s3cret" not in repr(srv.app.config)
    f = tmp_path / "token"
    f.write_text("  from-a-file \n")
    assert read_token(f) == "from-a-file"
    monkeypatch.setenv("METAREC_SERVE_TOKEN", "from-env")
    assert read_token() == "from-env" and read_token(f) == "from-a-file"
    f.write_text("\n")
    with pytest.raises(ConfigError, match=r"--token-file '.*token': empty"):
        read_token(f)
    with pytest.raises(ConfigError, match=r"--token-file '.*nothing': file not found"):
        read_token(tmp_path / "nothing")


def test_a_run_that_fails_to_load_is_one_error_line(run, tmp_path, capsys) -> None:
    bad = Path(shutil.copytree(run, tmp_path / "run"))
    (bad / "checkpoints" / "best.pt").write_bytes(b"not weights")
    code = main(["serve", "--run", str(bad), "--port", "0"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("metarec: error")]
    assert code == 2 and len(err) == 1 and "best.pt" in err[0]
    with pytest.raises(CheckpointError, match="no manifest.json"):
        from metarec.serve import serve

        serve(tmp_path / "empty", port=0)


def test_the_token_reaches_every_worker_but_no_command_line(run, tmp_path) -> None:
    """--workers 2 with --token-file: every worker requires the token; the spec on the workers'
    command lines does not hold it."""
    token = tmp_path / "token"
    token.write_text("worker-token\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "metarec", "serve", "--run", str(run), "--port", "0"]
        + ["--workers", "2", "--token-file", str(token)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "listening on http://127.0.0.1:" in line and "bearer token" in line, line
        url = line.split("listening on ")[1].split()[0]
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert "worker-token" not in ps
        for _ in range(6):  # the kernel spreads connections over both workers
            assert _call(url, "GET", "/metrics")[0] == 401
            good = {"Authorization": "Bearer worker-token"}
            assert _call(url, "GET", "/metrics", headers=good)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
