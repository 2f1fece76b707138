"""Flower glue: the ClientApp, the ServerApp and the grid transport (needs ``flwr``).

Messages (``flwr.app.Message``) carry only:

* server -> client: ``"arrays"`` (the global parameters) and ``"config"`` (the round);
* client -> server, ``train``: ``"arrays"`` (its new parameters, one array per model
  parameter) and ``"metrics"`` (``num-examples`` and scalar training metrics);
* client -> server, ``query`` (handshake): ``"info"`` (its name and pool sizes) and ``"arrays"``
  (the initial weights, equal on every client);
* client -> server, ``evaluate``: ``"metrics"`` (its cold users' scores).

No user id, item id or interaction is ever put in a message (see :func:`fit_content`, the one
place a ``train`` reply is built, and tests/test_federated_privacy.py).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from metarec.federated.server import ClientReply

__all__ = [
    "require_flwr",
    "fit_content",
    "hello_content",
    "eval_content",
    "content_bytes",
    "arrays_of",
    "client_runtime",
    "make_client_app",
    "make_server_app",
    "GridTransport",
]

_EXTRA = 'pip install "metarec[federated]"'


def require_flwr() -> Any:
    """Import ``flwr`` (and the parts used here) or fail with the extra to install.

    flwr 1.42's own import of click raises a DeprecationWarning about click itself; it is
    silenced for this import only (nothing metarec can act on). Flower's usage telemetry is off
    unless ``FLWR_TELEMETRY_ENABLED`` is set."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import flwr
            import flwr.app
            import flwr.clientapp
            import flwr.common.serde
            import flwr.serverapp  # noqa: F401
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"metarec.federated with backend 'simulation' or 'loopback' needs flwr: {_EXTRA}"
        ) from None
    return flwr


def _arrays(params: Mapping[str, np.ndarray]) -> Any:
    require_flwr()
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in params.items()})


def arrays_of(record: Any) -> dict[str, np.ndarray]:
    """``{name: ndarray}`` of an ArrayRecord."""
    return {k: v.numpy() for k, v in record.items()}


def _metrics(m: Mapping[str, Any]) -> Any:
    require_flwr()
    from flwr.app import MetricRecord

    return MetricRecord(
        {
            k: (
                int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else float(v)
            )
            for k, v in m.items()
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
        }
    )


def fit_content(
    params: Mapping[str, np.ndarray], num_examples: int, metrics: Mapping[str, float]
) -> Any:
    """The RecordDict a client sends after local training: parameters and scalars only."""
    require_flwr()
    from flwr.app import RecordDict

    return RecordDict(
        {
            "arrays": _arrays(params),
            "metrics": _metrics({"num-examples": int(num_examples), **metrics}),
        }
    )


def hello_content(info: Mapping[str, Any], init: Mapping[str, np.ndarray] | None) -> Any:
    require_flwr()
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    rec: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        "info": ConfigRecord(
            {k: (v if isinstance(v, (str, int, float, bool)) else str(v)) for k, v in info.items()}
        )
    }
    if init is not None:
        rec["arrays"] = _arrays(init)
    return RecordDict(rec)


def eval_content(metrics: Mapping[str, float]) -> Any:
    require_flwr()
    from flwr.app import RecordDict

    return RecordDict({"metrics": _metrics(metrics)})


def content_bytes(content: Any) -> int:
    """Size in bytes of a RecordDict as Flower serialises it on the wire (protobuf)."""
    require_flwr()
    from flwr.common.serde import recorddict_to_proto

    return len(recorddict_to_proto(content).SerializeToString())


# ------------------------------------------------------------------ client side
class _Runtime:
    """Per-process cache of clients: each client's data is built once from the scenario."""

    def __init__(self) -> None:
        self.clients: dict[tuple[str, int], Any] = {}
        self.names: dict[tuple[str, int], str] = {}

    def get(self, config_path: str, index: int) -> Any:
        key = (config_path, index)
        if key not in self.clients:
            from metarec.config import load_scenario
            from metarec.data.load import load_table
            from metarec.federated.client import FederatedClient
            from metarec.federated.data import client_data, client_names

            sc = load_scenario(config_path)
            table = load_table(sc.data)
            names = client_names(table, sc.federated)
            name = names[index] if 0 <= index < len(names) else ""
            self.names[key] = name
            corrupt = sc.federated.fault_injection.get(name, "").partition("@")[0] == "invalid"
            data = client_data(table, sc, index, corrupt=corrupt)
            del table  # the client keeps its own rows only
            self.clients[key] = FederatedClient(data, sc)
        return self.clients[key]


_RUNTIME = _Runtime()


def client_runtime() -> _Runtime:
    return _RUNTIME


def hello(
    get_client: Any, index: int, name: Any = None
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """A client's handshake: its info and initial weights, or ``{"error": ...}`` when its data
    is refused (the client is still reported and sampled; its rounds fail with the error)."""
    from metarec.federated.client import init_params

    try:
        c = get_client(index)
    except Exception as e:  # noqa: BLE001 - reported to the server, which goes on with the others
        return {
            "index": index,
            "name": (name(index) if name else "") or f"#{index}",
            "error": f"{type(e).__name__}: {e}",
        }, None
    return c.info(), init_params(c.scenario, c.data, c.dtype)


def make_client_app(config_path: str) -> Any:
    """The Flower ClientApp of a run (client index = node config ``partition-id``)."""
    require_flwr()
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    app = ClientApp()

    def get(index: int) -> Any:
        return _RUNTIME.get(config_path, index)

    def index_of(context: Context) -> int:
        return int(context.node_config["partition-id"])

    @app.query()
    def _hello(msg: Message, context: Context) -> Message:
        info, init = hello(
            get, index_of(context), lambda i: _RUNTIME.names.get((config_path, i), "")
        )
        return Message(hello_content(info, init), reply_to=msg)

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        c = get(index_of(context))
        server_round = msg.content["config"]["server-round"]
        if not isinstance(server_round, (int, float, str)):
            raise TypeError(
                f"train message: config['server-round']={server_round!r} is not a round number; "
                "the server app sends it as an int"
            )
        res = c.fit(arrays_of(msg.content["arrays"]), int(server_round))
        return Message(fit_content(res.params, res.num_examples, res.metrics), reply_to=msg)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        c = get(index_of(context))
        return Message(eval_content(c.evaluate(arrays_of(msg.content["arrays"]))), reply_to=msg)

    return app


# ------------------------------------------------------------------ server side
class GridTransport:
    """The server's view of the clients through a Flower ``Grid``."""

    def __init__(self, grid: Any, n_clients: int, startup_timeout: float) -> None:
        self.grid = grid
        self.n = n_clients
        deadline = time.monotonic() + startup_timeout
        while len(list(grid.get_node_ids())) < n_clients:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(list(grid.get_node_ids()))} of {n_clients} client nodes connected within "
                    f"startup_timeout={startup_timeout} s; start every client or raise federated.startup_timeout"
                )
            time.sleep(0.2)
        self.nodes = sorted(grid.get_node_ids())
        self.node_of: dict[int, int] = {}

    def _send(
        self,
        kind: str,
        node_ids: Sequence[int],
        arrays: Mapping[str, np.ndarray] | None,
        config: Mapping[str, Any],
        timeout: float,
    ) -> dict[int, Any]:
        from flwr.app import ConfigRecord, Message, RecordDict

        msgs = []
        for nid in node_ids:
            rec: dict[str, Any] = {"config": ConfigRecord(dict(config))}
            if arrays is not None:
                rec["arrays"] = _arrays(arrays)
            msgs.append(Message(RecordDict(rec), message_type=kind, dst_node_id=nid))
        return {
            m.metadata.src_node_id: m for m in self.grid.send_and_receive(msgs, timeout=timeout)
        }

    def hello(self, timeout: float) -> list[ClientReply]:
        got = self._send("query", self.nodes, None, {}, timeout)
        out = []
        for nid, m in got.items():
            if m.has_error():
                continue
            info = dict(m.content["info"])
            idx = int(info["index"])
            self.node_of[idx] = nid
            if "error" in info:
                out.append(
                    ClientReply(
                        idx,
                        "error",
                        metrics={"name": str(info.get("name", ""))},
                        error=str(info["error"]),
                    )
                )
            else:
                init = arrays_of(m.content["arrays"]) if "arrays" in m.content else None
                out.append(
                    ClientReply(
                        idx, "ok", params=init, num_examples=int(info["num-examples"]), metrics=info
                    )
                )
        return out

    def _replies(
        self, clients: Sequence[int], got: Mapping[int, Any], with_params: bool
    ) -> list[ClientReply]:
        out = []
        for c in clients:
            m = got.get(self.node_of.get(c, -1))
            if c not in self.node_of:
                out.append(
                    ClientReply(c, "error", error="no node answered the handshake for this client")
                )
            elif m is None:
                out.append(ClientReply(c, "timeout", error="no reply within round_timeout"))
            elif m.has_error():
                out.append(ClientReply(c, "error", error=str(m.error.reason)))
            else:
                metrics = dict(m.content["metrics"])
                params = arrays_of(m.content["arrays"]) if with_params else None
                out.append(
                    ClientReply(
                        c,
                        "ok",
                        params=params,
                        num_examples=int(metrics.get("num-examples", 0)),
                        metrics=metrics,
                        bytes_sent=content_bytes(m.content),
                    )
                )
        return out

    def fit(
        self, round_: int, clients: Sequence[int], params: Mapping[str, np.ndarray], timeout: float
    ) -> list[ClientReply]:
        known = [c for c in clients if c in self.node_of]
        got = self._send(
            "train", [self.node_of[c] for c in known], params, {"server-round": round_}, timeout
        )
        return self._replies(clients, got, True)

    def evaluate(
        self, clients: Sequence[int], params: Mapping[str, np.ndarray], timeout: float
    ) -> list[ClientReply]:
        known = [c for c in clients if c in self.node_of]
        got = self._send("evaluate", [self.node_of[c] for c in known], params, {}, timeout)
        return self._replies(clients, got, False)


def make_server_app(
    config_path: str,
    out: str,
    n_clients: int,
    *,
    resume: bool = False,
    stop_after: int | None = None,
) -> Any:
    """The Flower ServerApp of a run: the round loop of :func:`metarec.federated.server.run_server`
    over the grid; writes the run's results into ``out``."""
    require_flwr()
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        from metarec.config import load_scenario
        from metarec.federated.results import write_results
        from metarec.federated.server import run_server

        sc = load_scenario(config_path)
        transport = GridTransport(grid, n_clients, sc.federated.startup_timeout)
        from metarec.config import config_hash

        run = run_server(
            transport,
            sc.federated,
            out,
            resume=resume,
            stop_after=stop_after,
            config_key=config_hash(sc),
        )
        write_results(out, sc, run, backend=sc.federated.backend)

    return app
