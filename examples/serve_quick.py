"""Serve a meta-trained run over HTTP: start ``metarec serve`` on a free port of 127.0.0.1,
ask for a cold user's top-5 from five ratings, score two items, read /health, shut down.

The same service from the command line: ``metarec serve --run RUN --port 8000``.
Needs the ``serve`` extra (``pip install "metarec[serve]"``). Run: python examples/serve_quick.py
"""

import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from metarec.config import load_scenario
from metarec.recommend.load import load_run
from metarec.serve import ServeConfig, ServerThread
from metarec.train.loop import train

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
small = [
    "data.synthetic.n_domains=3",
    "train.steps=10",
    "train.val_every=10",
    "train.val_tasks=16",
    "train.progress=false",
]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


with tempfile.TemporaryDirectory() as tmp:
    # 1. A short meta-training run (what `metarec train` writes).
    train(load_scenario(scenario_file, small), Path(tmp) / "run", evaluate_test=False)
    meta = load_run(Path(tmp) / "run")
    items = meta.item_ids.values[:5]

    # 2. The server: concurrent requests are adapted together (up to 64, waiting at most 2 ms).
    with ServerThread(meta, ServeConfig(max_batch=64, max_wait_ms=2.0)) as srv:
        print(f"serving on {srv.url}")
        support = [{"item": i, "rating": r} for i, r in zip(items, [5, 4, 1, 2, 5], strict=True)]
        top = post(srv.url + "/recommend", {"user": "new-user", "k": 5, "support": support})
        print(
            f"top-5 for {top['user']}: "
            + ", ".join(f"{x['item']} ({x['score']:.2f})" for x in top["items"])
        )
        pred = post(
            srv.url + "/predict", {"user": "new-user", "support": support, "items": items[:2]}
        )
        print("predicted:", {x["item"]: round(x["score"], 2) for x in pred["items"]})
        try:  # bad input: HTTP 400 with the message `metarec recommend` would print
            post(srv.url + "/recommend", {"user": "new-user", "support": "ratings.csv"})
        except urllib.error.HTTPError as e:
            print(f"HTTP {e.code}: {json.loads(e.read())['error']}")
        with urllib.request.urlopen(srv.url + "/health", timeout=30) as resp:
            health = json.loads(resp.read())
        print(
            f"health: {health['status']}, {health['answered']} answered, scoring path {health['path']}"
        )
    print("server stopped")
