"""Federated vs centralised vs local-only meta-learning, scored on each client's cold users.

For each seed: federated MAML, federated Reptile and FedAvg (``metarec.federated``), centralised
MAML (``metarec.train.loop`` on every client's meta-train tasks pooled) and local-only MAML (each
client alone, ``metarec.train.loop`` on its own tasks), each with ``rounds x local_steps`` optimiser
steps per learner, then fast adaptation to every client's cold users (the same pinned queries).
Writes ``benchmarks/results/federated_<scenario>.jsonl`` (one row per seed x method x client)
and ``.md`` (mean +- 95% CI over seeds).

    METAREC_DATA=/work/shared/datasets python benchmarks/federated_bench.py tasks/ml1m-cross-genre.toml \
        --seeds 2 --rounds 10 --local-steps 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metarec.config import load_scenario  # noqa: E402
from metarec.data.load import load_table  # noqa: E402
from metarec.federated.client import FederatedClient  # noqa: E402
from metarec.federated.data import client_data, client_names, pooled_splits  # noqa: E402
from metarec.federated.runner import run_federated  # noqa: E402
from metarec.runs.checkpoint import load_tensors  # noqa: E402
from metarec.train.loop import train  # noqa: E402

FEDERATED = {"fed-maml": "maml", "fed-reptile": "reptile", "fedavg": "fedavg"}


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and the Student-t 95% interval over seeds (a single value: no interval)."""
    v = np.asarray(values, dtype=float)
    mu = float(v.mean())
    if v.size < 2:
        return mu, mu, mu
    half = _T975.get(v.size - 1, 1.96) * float(v.std(ddof=1)) / np.sqrt(v.size)
    return mu, mu - half, mu + half


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--meta-batch", type=int, default=16)
    ap.add_argument("--backend", default="local", choices=("local", "simulation"))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument(
        "--tag", default="", help="suffix of the result files' names (federated_<scenario>[-tag])"
    )
    args = ap.parse_args()
    base = load_scenario(args.scenario, args.set)
    steps = args.rounds * args.local_steps
    base = replace(
        base,
        algorithm=replace(base.algorithm, meta_batch=args.meta_batch),
        train=replace(
            base.train,
            steps=steps,
            val_every=max(steps // 5, 1),
            checkpoint_every=steps,
            progress=False,
            patience=None,
            device="cpu",
        ),
        federated=replace(
            base.federated,
            rounds=args.rounds,
            local_steps=args.local_steps,
            meta_batch=args.meta_batch,
        ),
    )
    t0 = time.perf_counter()
    table = load_table(base.data)
    names = client_names(table, base.federated)
    rows: list[dict] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"federated_{base.name}" + (f"-{args.tag}" if args.tag else "")
    for seed in range(args.seeds):
        sc = replace(
            base, train=replace(base.train, seed=seed), federated=replace(base.federated, seed=seed)
        )
        clients = [client_data(table, sc, i) for i in range(len(names))]
        evals = {i: FederatedClient(c, sc) for i, c in enumerate(clients)}
        with tempfile.TemporaryDirectory() as tmp:
            for method, algo in FEDERATED.items():
                s = replace(sc, federated=replace(sc.federated, algorithm=algo))  # type: ignore[arg-type]
                t = time.perf_counter()
                res = run_federated(
                    s, Path(tmp) / method, backend=args.backend, table=table
                ).summary
                for c in res["clients"]:
                    rows.append(
                        {
                            "seed": seed,
                            "method": method,
                            "client": c["name"],
                            "n_train": c["num-examples"],
                            **c["cold"],
                            "seconds": time.perf_counter() - t,
                            "rounds": res["rounds"],
                            "bytes_sent_per_round": res["bytes_sent_by_clients_per_round"],
                        }
                    )
            # centralised MAML on the pooled tasks
            t = time.perf_counter()
            run = Path(tmp) / "central"
            train(sc, run, table=table, splits=pooled_splits(table, clients), evaluate_test=False)
            best = load_tensors(run / "checkpoints" / "best.pt")["params"]
            secs = time.perf_counter() - t
            for i, c in enumerate(clients):
                rows.append(
                    {
                        "seed": seed,
                        "method": "central-maml",
                        "client": c.name,
                        "n_train": c.n_train,
                        **evals[i].evaluate(best),
                        "seconds": secs,
                        "rounds": 0,
                        "bytes_sent_per_round": 0,
                    }
                )
            # local-only MAML, each client alone
            for i, c in enumerate(clients):
                t = time.perf_counter()
                run = Path(tmp) / f"local-{i}"
                train(sc, run, table=c.table, splits=c.splits, evaluate_test=False)
                best = load_tensors(run / "checkpoints" / "best.pt")["params"]
                rows.append(
                    {
                        "seed": seed,
                        "method": "local-maml",
                        "client": c.name,
                        "n_train": c.n_train,
                        **evals[i].evaluate(best),
                        "seconds": time.perf_counter() - t,
                        "rounds": 0,
                        "bytes_sent_per_round": 0,
                    }
                )
        print(f"seed {seed} done at {time.perf_counter() - t0:.0f} s", flush=True)
    meta = {
        "commit": _commit(),
        "scenario": base.name,
        "backend": args.backend,
        "seeds": args.seeds,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "meta_batch": args.meta_batch,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(sys.argv),
    }
    with (out / f"{stem}.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps({**meta, **r}) + "\n")
    (out / f"{stem}.md").write_text(_report(rows, meta, names))
    print((out / f"{stem}.md").read_text())


def _report(rows: list[dict], meta: dict, names: list[str]) -> str:
    metric = "mae" if "mae" in rows[0] else "auc"
    methods = ["central-maml", "fed-maml", "fed-reptile", "fedavg", "local-maml"]
    sizes = {r["client"]: r["n_train"] for r in rows}
    lines = [
        f"# Federated meta-learning on {meta['scenario']}",
        "",
        f"Cold-user {metric.upper()} after fast adaptation, mean ± 95% CI over {meta['seeds']} "
        f"seed(s); {meta['rounds']} rounds x {meta['local_steps']} local steps (meta-batch "
        f"{meta['meta_batch']}); the centralised and local-only learners take the same number of "
        f"steps. Backend: {meta['backend']}. Commit {meta['commit']}, {meta['seconds']} s in all.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| method | "
        + " | ".join(f"{n} ({sizes[n]} rows)" for n in names)
        + " | all (user-weighted) | s per run | bytes sent per client-round |",
        "|---" * (len(names) + 4) + "|",
    ]
    for m in methods:
        cells = []
        for n in names:
            v = [r[metric] for r in rows if r["method"] == m and r["client"] == n]
            mu, lo, hi = mean_ci(v)
            cells.append(f"{mu:.4f} ± {(hi - lo) / 2:.4f}")
        per_seed = []
        for s in sorted({r["seed"] for r in rows}):
            rs = [r for r in rows if r["method"] == m and r["seed"] == s]
            per_seed.append(np.average([r[metric] for r in rs], weights=[r["n_tasks"] for r in rs]))
        mu, lo, hi = mean_ci(per_seed)
        rs = [r for r in rows if r["method"] == m]
        secs = np.mean([r["seconds"] for r in rs])
        bpr = np.mean([r["bytes_sent_per_round"] for r in rs]) / max(len(names), 1)
        lines.append(
            f"| {m} | "
            + " | ".join(cells)
            + f" | {mu:.4f} ± {(hi - lo) / 2:.4f} | {secs:.1f} | {bpr:,.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
