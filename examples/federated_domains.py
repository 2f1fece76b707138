"""Federated meta-learning across domains: one client per domain, only model updates leave a
client; federated MAML (Per-FedAvg) with a client that drops out in round 2, optional
client-level DP, then each client fast-adapts the result to its own cold users.

Run: python examples/federated_domains.py
(METAREC_EXAMPLE_QUICK=1: a smaller run. `backend="simulation"` runs the same clients in
Flower's simulation engine, `backend="loopback"` as real Flower processes on 127.0.0.1; the
command line is `metarec federated tasks/synthetic-cold-start.toml --out RUN`.)
"""

import json
import os
import tempfile
from pathlib import Path

from metarec.config import load_scenario
from metarec.federated import run_federated

quick = os.environ.get("METAREC_EXAMPLE_QUICK") == "1"
scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
settings = [
    "data.synthetic.n_domains=3",
    "data.synthetic.n_users=80",
    "algorithm.meta_batch=8",
    "train.progress=false",
    "federated.algorithm=maml",
    f"federated.rounds={2 if quick else 8}",
    f"federated.local_steps={2 if quick else 5}",
    'federated.fault_injection={d1 = "drop@2"}',  # d1 fails half way through round 2; the round goes on
    "federated.dp_clip=5.0",
    "federated.dp_noise=0.1",  # clip every update to norm 5, noise multiplier 0.1
]
sc = load_scenario(scenario_file, settings)

with tempfile.TemporaryDirectory() as tmp:
    res = run_federated(sc, Path(tmp) / "run", backend="local")
    s = res.summary
    print(
        f"{s['algorithm']}: {s['rounds']} rounds, {s['bytes_sent_by_clients_per_round']:,.0f} "
        f"bytes sent by the clients per round; DP clip {s['dp']['clipping_norm']}, noise "
        f"multiplier {s['dp']['noise_multiplier']}"
    )
    for c in s["clients"]:
        print(
            f"  client {c['name']}: {c['num-examples']:>5} training ratings, cold-user MAE "
            f"{c['cold']['mae']:.3f} ({int(c['cold']['n_tasks'])} cold users)"
        )
    for f in s["failures"]:
        print(f"  round {f['round']}: client {f['client']} {f['status']}: {f['error'][:90]}")
    first = json.loads((Path(tmp) / "run" / "rounds.jsonl").read_text().splitlines()[0])
    print(f"round 1 weights (equal under DP): {first['weights']}")
