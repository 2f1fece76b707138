"""``run_federated(scenario, out)``: one federated run on the chosen backend, results on disk.

Backends (``federated.backend``, or the ``backend`` argument):

* ``simulation``: Flower's simulation engine (``flwr.simulation.run_simulation``, Ray
  actors), one virtual SuperNode per client;
* ``loopback``: real ``flower-superlink`` and ``flower-supernode`` processes on 127.0.0.1 and
  ``flwr run`` (see :mod:`metarec.federated.loopback`);
* ``local``: the same clients and server loop called directly in this process (no Flower; fast,
  used by most tests).

The run directory holds ``config.json`` (the resolved scenario every client reads),
``rounds.jsonl`` (one line per round: sampled, answered and failed clients with the reason,
weights, loss, the bytes the clients sent as Flower serialises them and the parameter
bytes sent to them, seconds), ``checkpoints/last.pt`` (parameters after the last
finished round; ``resume=True`` continues from it), ``final.pt`` and ``federated.json`` (per
client: size and cold-user scores after fast adaptation; the DP settings; the fault report).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError, require_extra
from metarec._io.lock import RunLock, check_folder
from metarec.config import Scenario, config_hash, resolve_data_paths, save_config
from metarec.data.load import load_table
from metarec.data.table import InteractionTable
from metarec.federated.client import FederatedClient, init_params
from metarec.federated.data import client_data, client_names
from metarec.federated.results import write_results
from metarec.federated.server import ClientReply, FederatedRunError, run_server
from metarec.runs.folder import claim_folder
from metarec.train.session import _DISK_ERRORS, _FIX, remove_orphan_tmp

__all__ = [
    "FederatedResult",
    "FederatedRunError",
    "run_federated",
    "write_results",
    "LocalTransport",
    "payload_bytes",
]

_LAST = "checkpoints/last.pt"


@dataclass
class FederatedResult:
    """A finished (or stopped) run: its directory and the summary written to ``federated.json``."""

    run_dir: Path
    summary: dict[str, Any]


def payload_bytes(
    params: Mapping[str, np.ndarray], num_examples: int, metrics: Mapping[str, float]
) -> int:
    """Bytes of a client's ``train`` reply on Flower's wire format (array bytes when flwr is absent)."""
    try:
        from metarec.federated.flower import content_bytes, fit_content

        return content_bytes(fit_content(params, num_examples, metrics))
    except ModuleNotFoundError:
        return int(sum(np.asarray(v).nbytes for v in params.values()))


class LocalTransport:
    """Clients called directly (threads, so that a straggler can be left behind at the timeout).

    Args:
        scenario: the resolved scenario.
        table: the full table; each client takes its own rows from it once and keeps only those.
        dtype: parameter dtype of the clients.
    """

    def __init__(
        self, scenario: Scenario, table: InteractionTable, dtype: torch.dtype = torch.float32
    ) -> None:
        self.scenario = scenario
        self.dtype = dtype
        fed = scenario.federated
        self.names = client_names(table, fed)
        self.clients: dict[int, FederatedClient] = {}
        self.errors: dict[int, str] = {}
        for i, name in enumerate(self.names):
            corrupt = fed.fault_injection.get(name, "").partition("@")[0] == "invalid"
            try:
                self.clients[i] = FederatedClient(
                    client_data(table, scenario, i, corrupt=corrupt), scenario, dtype
                )
            except Exception as e:  # noqa: BLE001 - that client fails; the others go on
                self.errors[i] = f"{type(e).__name__}: {e}"

    def hello(self, timeout: float) -> list[ClientReply]:
        out = []
        for i in range(len(self.names)):
            if i in self.errors:
                out.append(
                    ClientReply(i, "error", metrics={"name": self.names[i]}, error=self.errors[i])
                )
            else:
                c = self.clients[i]
                out.append(
                    ClientReply(
                        i,
                        "ok",
                        params=init_params(self.scenario, c.data, self.dtype),
                        num_examples=c.data.n_train,
                        metrics=c.info(),
                    )
                )
        return out

    def _call(self, clients: Sequence[int], fn: Any, timeout: float) -> list[ClientReply]:
        """``fn(client)`` for each client in turn, each in its own thread with its own
        ``timeout`` (the clients of a round run side by side in a real federation, so each
        gets the whole round's time; running them in turn keeps them off each other's CPUs)."""
        out = []
        for c in clients:
            if c not in self.clients:
                out.append(
                    ClientReply(
                        c,
                        "error",
                        metrics={"name": self.names[c]},
                        error=self.errors.get(c, "unknown client"),
                    )
                )
                continue
            pool = ThreadPoolExecutor(max_workers=1)
            f = pool.submit(fn, self.clients[c])
            done, _ = wait([f], timeout=timeout)
            pool.shutdown(wait=False)
            if f not in done:
                out.append(
                    ClientReply(c, "timeout", error=f"no reply within round_timeout={timeout} s")
                )
            elif f.exception() is not None:
                e = f.exception()
                out.append(ClientReply(c, "error", error=f"{type(e).__name__}: {e}"))
            else:
                out.append(f.result())
        return out

    def fit(
        self, round_: int, clients: Sequence[int], params: Mapping[str, np.ndarray], timeout: float
    ) -> list[ClientReply]:
        def one(c: FederatedClient) -> ClientReply:
            res = c.fit(params, round_)
            return ClientReply(
                c.data.index,
                "ok",
                params=res.params,
                num_examples=res.num_examples,
                metrics=res.metrics,
                bytes_sent=payload_bytes(res.params, res.num_examples, res.metrics),
            )

        return self._call(clients, one, timeout)

    def evaluate(
        self, clients: Sequence[int], params: Mapping[str, np.ndarray], timeout: float
    ) -> list[ClientReply]:
        def one(c: FederatedClient) -> ClientReply:
            return ClientReply(c.data.index, "ok", metrics=c.evaluate(params))

        return self._call(clients, one, timeout)


def _prepare(scenario: Scenario, out: Path, resume: bool) -> Path:
    if not resume and ((out / "federated.json").exists() or (out / "rounds.jsonl").exists()):
        raise ConfigError(
            f"out={str(out)!r}: already holds a federated run; pass --resume to continue it, --overwrite to "
            "start it afresh, or choose an empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    return save_config(scenario, out / "config.json").resolve()


def _check_extras(backend: str) -> None:
    """The backend's optional libraries, before anything is written (one line naming the extra)."""
    if backend == "local":
        return
    require_extra("flwr", "federated", f"backend={backend!r}")
    if backend == "simulation":
        require_extra("ray", "federated", "backend='simulation' (Flower's Ray engine)")


def run_federated(
    scenario: Scenario,
    out: str | Path,
    *,
    backend: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    table: InteractionTable | None = None,
    dtype: torch.dtype = torch.float32,
) -> FederatedResult:
    """Run ``scenario``'s ``[federated]`` section into run directory ``out``.

    Args:
        backend: ``"simulation"``, ``"loopback"`` or ``"local"`` (default ``federated.backend``).
        resume: continue from ``out/checkpoints/last.pt``; with no round checkpoint yet (a run
            killed, or stopped by a full disk, before its first round ended) the run starts from
            round 0.
        overwrite: delete the federated run in ``out`` (its own files only) and start afresh.
        stop_after: stop after this many rounds, as if killed (tests; no final evaluation).
        table: reuse an already-loaded table (``local`` backend only).
        dtype: parameter dtype (``local`` backend only; float64 in reference tests).

    This process holds the run directory's lock (:class:`~metarec._io.lock.RunLock`, the one
    ``metarec train`` takes) for the whole run, the server's writes included (in-process, or
    its child processes on the loopback backend): a second run on the same ``out`` fails at
    once, naming this one, and writes nothing. Temporary files a killed run left behind are
    removed on entry. Relative data paths are resolved against the current folder before the
    clients (other processes, other working folders) read them. A backend's missing extra
    (``flwr``, ``ray``) is one error line before anything is written.

    Raises:
        ConfigError: an unknown backend, ``resume`` with ``overwrite``, ``out`` is a file, is in
            use by another process, holds something other than a federated run, or holds a run
            and neither ``resume`` nor ``overwrite`` is set; a missing extra.
        CheckpointError: the disk filled up (or another write error) during the run.
        FederatedRunError: a Flower process failed (the message names its log).
    """
    if resume and overwrite:
        raise ConfigError(
            "--resume and --overwrite: choose one: --resume continues the run in the folder, "
            "--overwrite deletes it and starts afresh"
        )
    out = check_folder(out, "--out").resolve()
    backend = backend or scenario.federated.backend
    if backend not in ("simulation", "loopback", "local"):
        raise ConfigError(f"backend={backend!r}: choose 'simulation', 'loopback' or 'local'")
    _check_extras(backend)
    scenario = replace(
        scenario,
        data=resolve_data_paths(scenario.data, Path.cwd()),
        federated=replace(scenario.federated, backend=backend),  # type: ignore[arg-type]
    )
    try:
        with RunLock(out, what="federated run directory", option="--out"):
            restart = resume and not (out / _LAST).is_file()
            # hook (metarec.runs.folder): no write through a link; --overwrite replaces only a federated run
            claim_folder(
                out,
                "federated",
                replace=overwrite or restart,
                option="--out",
                why="--overwrite" if overwrite else "--resume with no round checkpoint yet",
            )
            if restart:
                print(
                    f"metarec: --resume: {str(out)!r} holds no round checkpoint yet; the run starts from round 0",
                    file=sys.stderr,
                )
            remove_orphan_tmp(out, ("", "checkpoints"))
            return _run(scenario, out, backend, resume and not restart, stop_after, table, dtype)
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        where = f" writing {str(e.filename)!r}" if e.filename else ""
        raise CheckpointError(
            f"--out {str(out)!r}: the federated run stopped: {_DISK_ERRORS[e.errno]}{where}; "
            f"{_FIX[e.errno]}, then rerun the same command with --resume (it continues after the last finished "
            "round, or starts from round 0 when none finished)"
        ) from None


def _run(
    scenario: Scenario,
    out: Path,
    backend: str,
    resume: bool,
    stop_after: int | None,
    table: InteractionTable | None,
    dtype: torch.dtype,
) -> FederatedResult:
    config_path = _prepare(scenario, out, resume)
    if backend == "local":
        transport = LocalTransport(
            scenario, table if table is not None else load_table(scenario.data), dtype
        )
        run = run_server(
            transport,
            scenario.federated,
            out,
            resume=resume,
            stop_after=stop_after,
            config_key=config_hash(scenario),
        )
        return FederatedResult(out, write_results(out, scenario, run, backend=backend))
    n = len(
        client_names(table if table is not None else load_table(scenario.data), scenario.federated)
    )
    if backend == "simulation":
        _simulate(str(config_path), out, n, resume, stop_after)
    else:
        from metarec.federated.loopback import run_loopback

        try:
            run_loopback(
                str(config_path), out, n, scenario.federated, resume=resume, stop_after=stop_after
            )
        except (RuntimeError, TimeoutError) as e:
            raise FederatedRunError(
                f"--backend loopback: {e}; fix the cause, then rerun the same command with --resume"
            ) from None
    path = out / "federated.json"
    if not path.is_file():
        raise FederatedRunError(
            f"--backend {backend}: the federated server wrote no {str(path)!r}; see the log above (rounds so far: "
            f"{str(out / 'rounds.jsonl')!r}); fix the cause, then rerun the same command with --resume"
        )
    return FederatedResult(out, json.loads(path.read_text()))


def _simulate(config_path: str, out: Path, n: int, resume: bool, stop_after: int | None) -> None:
    from metarec.federated.flower import make_client_app, make_server_app, require_flwr

    require_flwr()
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ModuleNotFoundError(
            'backend="simulation" runs Flower\'s Ray engine: pip install "metarec[federated]" '
            '(or use backend="local" / "loopback")'
        )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from flwr.simulation import run_simulation

    cpus = max(1, min(n, os.cpu_count() or 1))
    # Ray warns on every actor that it will stop overriding CUDA_VISIBLE_DEVICES for CPU-only
    # actors; opting in to that behaviour now silences it (the clients use no GPU).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    run_simulation(
        make_server_app(config_path, str(out), n, resume=resume, stop_after=stop_after),
        make_client_app(config_path),
        num_supernodes=n,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False},
        },
    )
