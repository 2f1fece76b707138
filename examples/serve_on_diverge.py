"""A served adaptation that diverges is never a silent answer: with too large an inner rate
(``lr=1e30``) ``metarec serve`` answers HTTP 500 with the message ``metarec recommend`` prints;
with ``on_diverge="fallback"`` the user gets the meta-learned initialisation's top-k and a
``warnings`` entry saying so. Also: ``metarec.metrics.topk.top_k``, the ranking the server uses.

The same from the command line: ``metarec serve --run RUN --lr 1e30 --on-diverge fallback``.
Needs the ``serve`` extra (``pip install "metarec[serve]"``). Run: python examples/serve_on_diverge.py
"""

import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch

from metarec.config import load_scenario
from metarec.metrics.topk import top_k
from metarec.recommend.load import load_run
from metarec.serve import ServeConfig, ServerThread
from metarec.train.loop import train

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
small = [
    "data.synthetic.n_domains=3",
    "model.name='two_tower'",
    "model.hidden=[16, 8]",
    "train.steps=6",
    "train.val_every=6",
    "train.val_tasks=16",
    "train.progress=false",
]


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# top_k: best first, equal scores by the lower column (as a stable sort), without sorting the row
print(top_k(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), 3))

with tempfile.TemporaryDirectory() as tmp:
    train(load_scenario(scenario_file, small), Path(tmp) / "run", evaluate_test=False)
    meta = load_run(Path(tmp) / "run")
    support = [{"item": i, "rating": r} for i, r in zip(meta.item_ids.values[:3], [5, 1, 4])]
    body = {"user": "new-user", "k": 5, "support": support}
    for how in ("error", "fallback"):
        with ServerThread(meta, ServeConfig(lr=1e30, on_diverge=how)) as srv:
            code, out = post(srv.url + "/recommend", body)
        print(f"on_diverge={how!r}: HTTP {code}")
        print("  ", out.get("error") or out["warnings"][0])
        if "items" in out:
            print("   top-5:", [x["item"] for x in out["items"]])
