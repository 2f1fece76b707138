"""What a finished federated run writes: ``final.pt`` (the global weights) and
``federated.json`` (per-client cold-user scores, their mean, traffic, failures, privacy)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec.config import Scenario, config_hash
from metarec.federated.server import ServerRun
from metarec.runs.checkpoint import atomic_write_json, save_tensors

__all__ = ["write_results"]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def write_results(
    out: str | Path, scenario: Scenario, run: ServerRun, *, backend: str
) -> dict[str, Any]:
    """Write ``final.pt`` and ``federated.json`` for a finished server loop; return the summary."""
    out = Path(out)
    fed = scenario.federated
    save_tensors(
        out / "final.pt",
        {
            "params": {k: torch.as_tensor(v) for k, v in run.params.items()},
            "round": run.rounds_done,
        },
    )
    by_client = {r.client: r for r in run.evaluation}
    clients = []
    for info in run.clients:
        rep = by_client.get(info["index"])
        row = dict(info)
        if rep is not None:
            row["cold"] = (
                rep.metrics
                if rep.status == "ok"
                else {"status": rep.status, "error": rep.error[:500]}
            )
        clients.append(row)
    scored = [c for c in clients if isinstance(c.get("cold"), dict) and "n_tasks" in c["cold"]]
    mean: dict[str, float] = {}
    if scored:
        w = np.array([c["cold"]["n_tasks"] for c in scored], dtype=float)
        for k in scored[0]["cold"]:
            vals = [c["cold"].get(k) for c in scored]
            if k not in ("n_tasks", "adapt_ms_per_task") and all(_finite(v) for v in vals):
                mean[k] = float(np.average(vals, weights=w))
    sent = [h["bytes_sent_by_clients"] for h in run.history]
    failures = [{"round": h["round"], **f} for h in run.history for f in h["failed"]]
    summary = {
        "scenario": scenario.name,
        "backend": backend,
        "algorithm": fed.algorithm,
        "config_hash": config_hash(scenario),
        "rounds": run.rounds_done,
        "rounds_planned": fed.rounds,
        "finished": run.rounds_done == fed.rounds,
        "clients": clients,
        "cold_mean_over_users": mean,
        "bytes_sent_by_clients_per_round": float(np.mean(sent)) if sent else 0.0,
        "bytes_sent_to_clients_per_round": float(
            np.mean([h["bytes_sent_to_clients"] for h in run.history])
        )
        if sent
        else 0.0,
        "skipped_rounds": [h["round"] for h in run.history if "skipped" in h],
        "failures": failures,
        "dp": None
        if fed.dp_clip is None
        else {
            "clipping_norm": fed.dp_clip,
            "noise_multiplier": fed.dp_noise,
            "noise_std_per_round": [h.get("dp_noise_std", 0.0) for h in run.history],
            "weights": "uniform",
        },
        "seconds": round(run.seconds, 2),
    }
    atomic_write_json(out / "federated.json", summary)
    return summary
