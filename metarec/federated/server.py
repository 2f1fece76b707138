"""The server: weighted aggregation, the round loop, per-round checkpoints and the fault report.

The loop talks to clients through a :class:`Transport` (Flower's grid in the simulation and
loopback backends, direct calls in the ``local`` one), so the same code decides every backend's
rounds::

    hello   <- transport.hello()                          # names, sizes, initial weights
    for r in rounds:
        replies <- transport.fit(r, sampled clients, theta, timeout)
        theta   <- theta + server_lr * (mean_w(ok replies) [+ DP noise] - theta)
        checkpoint(theta, r)                               # checkpoints/last.pt
    scores  <- transport.evaluate(every client, theta)     # fast adaptation to cold users

A reply is ``ok``, ``error`` (the client raised: it dropped out or its data is invalid) or
``timeout`` (a straggler past ``federated.round_timeout``); a round aggregates its ``ok`` replies
and, with fewer than ``federated.min_clients``, keeps the previous model. Every failure is
logged in ``rounds.jsonl`` with its reason.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from metarec._errors import CheckpointError, MetarecError
from metarec.config.federated import FederatedConfig
from metarec.federated.privacy import add_noise, noise_std
from metarec.runs.checkpoint import atomic_write_bytes, load_tensors, save_tensors
from metarec.runs.folder import RUN_FILE, read_run_id

__all__ = [
    "ClientReply",
    "FederatedRunError",
    "Transport",
    "aggregate",
    "sample_clients",
    "run_server",
    "ServerRun",
]

Status = Literal["ok", "error", "timeout"]


@dataclass
class ClientReply:
    """One client's answer to a request (``params`` only for ``fit``)."""

    client: int
    status: Status
    params: dict[str, np.ndarray] | None = None
    num_examples: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    bytes_sent: int = 0


class Transport(Protocol):
    """How the server reaches its clients (Flower's grid, or direct calls)."""

    def hello(self, timeout: float) -> list[ClientReply]:
        """Every client's ``info`` (client 0's reply also carries the initial weights)."""
        ...

    def fit(
        self, round_: int, clients: Sequence[int], params: Mapping[str, np.ndarray], timeout: float
    ) -> list[ClientReply]: ...

    def evaluate(
        self, clients: Sequence[int], params: Mapping[str, np.ndarray], timeout: float
    ) -> list[ClientReply]: ...


def aggregate(
    updates: Sequence[Mapping[str, Any]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted mean ``sum_c w_c theta_c / sum_c w_c`` of client parameter dicts (accumulated in
    float64, returned in each tensor's dtype)."""
    if not updates or len(updates) != len(weights):
        raise ValueError(
            f"aggregate: {len(updates)} updates and {len(weights)} weights; pass one weight per "
            "update"
        )
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if not (w >= 0).all() or float(w.sum()) <= 0:
        raise ValueError(f"aggregate: weights {w.tolist()} must be >= 0 with a positive sum")
    w = w / w.sum()
    out = {}
    for k in updates[0]:
        stack = torch.stack(
            [torch.as_tensor(np.asarray(u[k])).double() for u in updates]
        )  # (clients, *shape)
        out[k] = torch.einsum("c,c...->...", w, stack).to(
            torch.as_tensor(np.asarray(updates[0][k])).dtype
        )
    return out


def sample_clients(n: int, per_round: int | None, seed: int, round_: int) -> list[int]:
    """The clients of round ``round_`` (every client when ``per_round`` is None or >= n)."""
    if per_round is None or per_round >= n:
        return list(range(n))
    rng = np.random.default_rng([seed, round_, 7])
    return sorted(int(c) for c in rng.choice(n, size=per_round, replace=False))


@dataclass
class ServerRun:
    """What the loop produced: final parameters, per-round log, per-client scores."""

    params: dict[str, np.ndarray]
    rounds_done: int
    history: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    evaluation: list[ClientReply]
    seconds: float


def _numpy(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in params.items()
    }


class FederatedRunError(MetarecError):
    """A federated run that could not go on (no client answered, a Flower process failed); the
    message says why and where its log is."""


def _failure(rep: ClientReply, names: Mapping[int, str]) -> dict[str, Any]:
    return {
        "client": names.get(rep.client, f"#{rep.client}"),
        "status": rep.status,
        "error": rep.error[:500],
    }


def run_server(
    transport: Transport,
    fed: FederatedConfig,
    out: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    config_key: str = "",
) -> ServerRun:
    """Run the rounds of ``fed`` over ``transport``, checkpointing into ``out``.

    Args:
        resume: continue from ``out/checkpoints/last.pt`` (the rounds after it are re-run).
        stop_after: stop after this many rounds in total, as if killed (tests).
        config_key: the scenario's hash; a checkpoint of another config is refused.
    """
    t0 = time.perf_counter()
    out = Path(out)
    last = out / "checkpoints" / "last.pt"
    # the handshake is where each client first loads its data and builds its model
    hello = transport.hello(fed.startup_timeout + fed.round_timeout)
    names = {r.client: str(r.metrics.get("name", f"#{r.client}")) for r in hello}
    clients = [
        {"index": r.client, **r.metrics}
        if r.status == "ok"
        else {
            "index": r.client,
            "name": names[r.client],
            "status": r.status,
            "error": r.error[:500],
        }
        for r in sorted(hello, key=lambda r: r.client)
    ]
    init = next(
        (r.params for r in sorted(hello, key=lambda r: r.client) if r.status == "ok" and r.params),
        None,
    )
    if init is None:
        why = "; ".join(
            f"{names.get(r.client, r.client)}: {r.status} {r.error[:200]}" for r in hello
        ) or (
            "no reply within startup_timeout + round_timeout = "
            f"{fed.startup_timeout + fed.round_timeout:g} s"
        )
        raise FederatedRunError(
            f"no client answered the handshake with initial weights ({why}); fix the clients' data "
            "or settings, or raise federated.startup_timeout if the clients are slow to load their "
            "data"
        )
    params = {k: torch.as_tensor(np.asarray(v)) for k, v in init.items()}
    start, history = 0, []
    log_path = out / "rounds.jsonl"
    run_id = read_run_id(out)
    if resume:
        if not last.is_file():
            raise CheckpointError(
                f"--resume: {str(last)!r} not found; run_federated(resume=True) starts such a run "
                "from round 0"
            )
        ck = load_tensors(last)
        if ck.get("run_id") != run_id:  # hook (metarec.runs.folder): this run's own checkpoint
            raise CheckpointError(
                f"--resume: {str(last)!r} belongs to another federated run (run id "
                f"{str(ck.get('run_id'))[:12]}, not {str(run_id)[:12]} of "
                f"{str(out / RUN_FILE)!r}); a checkpoint is only loaded into the run that wrote "
                "it; restore this run's own file (and its .sha256), or start afresh with "
                "--overwrite"
            )
        if ck.get("config_key") != config_key:
            raise CheckpointError(
                f"--resume: {str(last)!r} was written by another configuration "
                f"({ck.get('config_key')} vs {config_key}); "
                "resume with the same scenario and --set values"
            )
        params, start = dict(ck["params"]), int(ck["round"])
        history = json.loads(ck["history"])
    atomic_write_bytes(log_path, "".join(json.dumps(h) + "\n" for h in history).encode())
    dp = fed.dp_clip is not None
    n = len(hello)
    bytes_down = sum(np.asarray(v).nbytes for v in params.values())
    with log_path.open("a") as log:
        for r in range(start + 1, fed.rounds + 1):
            tr = time.perf_counter()
            sampled = sample_clients(n, fed.clients_per_round, fed.seed, r)
            replies = transport.fit(r, sampled, _numpy(params), fed.round_timeout)
            ok = [x for x in replies if x.status == "ok" and x.params is not None]
            row: dict[str, Any] = {
                "round": r,
                "sampled": [names.get(c, f"#{c}") for c in sampled],
                "ok": [names.get(x.client, f"#{x.client}") for x in ok],
                "failed": [_failure(x, names) for x in replies if x.status != "ok"],
                "bytes_sent_by_clients": int(sum(x.bytes_sent for x in replies)),
                "bytes_sent_to_clients": int(bytes_down * len(sampled)),
            }
            if len(ok) >= fed.min_clients:
                weights = [1.0] * len(ok) if dp else [float(x.num_examples) for x in ok]
                mean = aggregate([x.params for x in ok], weights)  # type: ignore[misc]
                if dp and fed.dp_noise > 0:
                    std = noise_std(fed.dp_noise, fed.dp_clip, len(sampled))  # type: ignore[arg-type]
                    mean = add_noise(
                        mean,
                        std,
                        torch.Generator().manual_seed(
                            int(np.random.SeedSequence([fed.seed, r, 11]).generate_state(1)[0])
                        ),
                    )
                    row["dp_noise_std"] = std
                params = {k: params[k] + fed.server_lr * (mean[k] - params[k]) for k in params}
                row["weights"] = weights
                losses = [x.metrics.get("loss", math.nan) for x in ok]
                row["loss"] = (
                    float(np.average(losses, weights=weights))
                    if all(math.isfinite(v) for v in losses)
                    else math.nan
                )
            else:
                row["skipped"] = (
                    f"{len(ok)} client(s) answered, fewer than min_clients={fed.min_clients}; the "
                    "model is kept"
                )
            row["seconds"] = round(time.perf_counter() - tr, 3)
            history.append(row)
            save_tensors(
                last,
                {
                    "params": {k: v.detach().clone() for k, v in params.items()},
                    "round": r,
                    "history": json.dumps(history),
                    "config_key": config_key,
                    "run_id": run_id,
                },
            )
            log.write(json.dumps(row) + "\n")
            log.flush()
            if stop_after is not None and r >= stop_after:
                break
    final = _numpy(params)
    evaluation = (
        transport.evaluate(list(range(n)), final, fed.round_timeout)
        if history and history[-1]["round"] == fed.rounds
        else []
    )
    return ServerRun(
        final,
        history[-1]["round"] if history else 0,
        history,
        clients,
        evaluation,
        time.perf_counter() - t0,
    )
