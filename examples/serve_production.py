"""A production-shaped server: a bearer token, connection limits and time-outs, readiness apart
from liveness, the OpenAPI document, Prometheus metrics.

The same from the command line (see README, "Deployment")::

    metarec serve --run RUN --host 0.0.0.0 --token-file token --max-connections 500 --header-timeout 5

Needs the ``serve`` extra (``pip install "metarec[serve]"``). Run: python examples/serve_production.py
"""

import json
import secrets
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from metarec.config import load_scenario
from metarec.recommend.load import load_run
from metarec.serve import HttpLimits, ServeConfig, ServerThread
from metarec.train.loop import train

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
small = ["data.synthetic.n_domains=3", "train.steps=6", "train.val_every=6", "train.progress=false"]


def call(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


with tempfile.TemporaryDirectory() as tmp:
    train(load_scenario(scenario_file, small), Path(tmp) / "run", evaluate_test=False)
    meta = load_run(Path(tmp) / "run")
    token = secrets.token_urlsafe(24)  # in production: a file passed with --token-file
    http = HttpLimits(max_header_bytes=8192, header_timeout=5, body_timeout=10, max_connections=200)
    with ServerThread(meta, ServeConfig(token=token), http=http) as srv:
        print("GET /health ->", call(srv.url + "/health")[0], "(liveness, no token needed)")
        print("GET /ready  ->", call(srv.url + "/ready")[0], "(readiness)")
        spec = json.loads(call(srv.url + "/openapi.json")[1])
        print("OpenAPI paths:", ", ".join(spec["paths"]))
        body = {
            "user": "new-user",
            "k": 3,
            "support": [{"item": meta.item_ids.values[0], "rating": 5}],
        }
        code, out = call(srv.url + "/recommend", body)
        print(f"POST /recommend without the token -> {code}: {json.loads(out)['error'][:60]}...")
        code, out = call(srv.url + "/recommend", body, token)
        print(
            f"POST /recommend with the token -> {code}: {[x['item'] for x in json.loads(out)['items']]}"
        )
        metrics = call(srv.url + "/metrics", token=token)[1].decode()
        print(
            *[ln for ln in metrics.splitlines() if ln.startswith("metarec_requests_total")],
            sep="\n",
        )
