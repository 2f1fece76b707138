"""The ``[federated]`` section of a scenario: who the clients are and how the rounds run.

Plain frozen dataclass (no torch, no flwr, no :mod:`metarec.config` import), so that
:class:`metarec.config.Scenario` can hold it and validate a TOML section like any other::

    [federated]
    clients = "domains"        # one client per domain of the table
    algorithm = "maml"         # fedavg | reptile | maml | fomaml
    rounds = 30
    local_steps = 10
    dp_clip = 1.0              # client-level DP: clip each update's L2 norm ...
    dp_noise = 0.5             # ... and add N(0, (dp_noise * dp_clip / clients)^2) to the mean

>>> FederatedConfig(rounds=3).local_steps
5
>>> FederatedConfig(rounds=0)
Traceback (most recent call last):
...
metarec._errors.ConfigError: rounds=0: must be >= 1; set rounds >= 1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from metarec._errors import ConfigError

__all__ = ["FEDERATED_ALGORITHMS", "FAULTS", "FederatedConfig"]

FEDERATED_ALGORITHMS = ("fedavg", "reptile", "maml", "fomaml")
"""``fedavg``: FedAvg of a global model trained on support + query (no inner loop), then
fine-tuned per cold user; ``reptile``: every local step is a Reptile step (FedMeta-Reptile);
``maml`` / ``fomaml``: every local step is a (first-order) MAML step (Per-FedAvg)."""

FAULTS = ("drop", "straggle", "invalid")
"""Faults a client can be told to simulate (``fault_injection``): ``drop`` raises half way
through its local steps, ``straggle`` sleeps past ``round_timeout``, ``invalid`` corrupts its
own ratings so that its data check fails."""


def _at_least(obj: object, low: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < low:
            raise ConfigError(f"{name}={value!r}: must be >= {low}; set {name} >= {low}")


@dataclass(frozen=True)
class FederatedConfig:
    """Federated meta-learning across domains or user cohorts (``metarec federated``).

    Fields:
        clients: ``"domains"`` (one client per domain of the table) or ``"cohorts"`` (one per
            value of the user column ``cohort_by``).
        cohort_by: user column that forms the cohorts (``clients = "cohorts"``).
        algorithm: one of :data:`FEDERATED_ALGORITHMS`.
        rounds: federated rounds (server updates).
        clients_per_round: clients sampled per round (``None`` = every client).
        local_steps: optimiser steps a client takes per round, each on a fresh meta-batch of
            its own tasks.
        meta_batch: tasks per local step (``None`` = ``algorithm.meta_batch``).
        local_lr: local optimiser learning rate (``None`` = ``train.outer_lr``).
        local_optimizer: ``"adam"`` (fresh state every round) or ``"sgd"`` (plain SGD).
        server_lr: the server moves ``server_lr`` of the way to the weighted mean of the client
            models (1.0 = FedAvg's replacement; < 1 damps, the Reptile server step).
        fractions: each client's users are split into meta-train / meta-val / cold test users.
        min_clients: a round with fewer successful clients keeps the previous model.
        round_timeout: seconds the server waits for the clients of a round; a later reply is
            dropped (a straggler).
        dp_clip: client-level DP: L2 norm each client update is clipped to (``None`` = no DP).
        dp_noise: noise multiplier ``z``: the server adds ``N(0, (z * dp_clip / m)^2)`` to the
            mean of the ``m`` sampled clients' clipped updates (with DP, clients weigh equally).
        backend: ``"simulation"`` (Flower's simulation engine), ``"local"`` (the same clients
            called in this process, no Flower) or ``"loopback"`` (real Flower SuperLink and
            SuperNode processes on 127.0.0.1).
        port: first TCP port of the loopback backend (SuperLink; SuperNodes use the next ones).
        startup_timeout: seconds the loopback backend waits for its processes to come up.
        fault_injection: ``{client name: fault}`` for fault-tolerance checks, fault one of
            :data:`FAULTS`, optionally ``"drop@ROUND"`` to fault in one round only.
        seed: seed of client sampling and the clients' task samplers.
    """

    clients: Literal["domains", "cohorts"] = "domains"
    cohort_by: str | None = None
    algorithm: Literal["fedavg", "reptile", "maml", "fomaml"] = "maml"
    rounds: int = 20
    clients_per_round: int | None = None
    local_steps: int = 5
    meta_batch: int | None = None
    local_lr: float | None = None
    local_optimizer: Literal["adam", "sgd"] = "adam"
    server_lr: float = 1.0
    fractions: tuple[float, ...] = (0.7, 0.1, 0.2)
    min_clients: int = 1
    round_timeout: float = 600.0
    dp_clip: float | None = None
    dp_noise: float = 0.0
    backend: Literal["simulation", "local", "loopback"] = "simulation"
    port: int = 19200
    startup_timeout: float = 60.0
    fault_injection: dict[str, str] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least(
            self, 1, "rounds", "clients_per_round", "local_steps", "meta_batch", "min_clients"
        )
        _at_least(self, 0, "dp_noise")
        for name in ("local_lr", "server_lr", "round_timeout", "dp_clip", "startup_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(
                    f"{name}={value!r}: must be > 0; e.g. server_lr = 1.0, round_timeout = 600"
                )
        fr = list(self.fractions)
        if (
            len(fr) != 3
            or any(f < 0 for f in fr)
            or abs(sum(fr) - 1) > 1e-6
            or fr[0] == 0
            or fr[2] == 0
        ):
            raise ConfigError(
                f"fractions={fr}: need three non-negative fractions (meta-train, meta-val, cold test users of "
                "each client) summing to 1, with meta-train and test > 0; e.g. fractions = [0.7, 0.1, 0.2]"
            )
        if self.clients == "cohorts" and not self.cohort_by:
            raise ConfigError(
                'clients="cohorts" needs cohort_by, the user column that forms the cohorts; '
                'set cohort_by = "age" or use clients = "domains"'
            )
        if self.dp_noise > 0 and self.dp_clip is None:
            raise ConfigError(
                f"dp_noise={self.dp_noise}: noise is calibrated to the clipping norm; set dp_clip (e.g. dp_clip = 1.0) "
                "or dp_noise = 0"
            )
        if not 1024 <= self.port <= 65000:
            raise ConfigError(f"port={self.port}: must lie in [1024, 65000]; e.g. port = 19200")
        for client, fault in self.fault_injection.items():
            kind, _, rnd = str(fault).partition("@")
            if kind not in FAULTS or (rnd and not rnd.isdigit()):
                raise ConfigError(
                    f"fault_injection[{client!r}]={fault!r}: expected one of {FAULTS}, optionally with '@ROUND' "
                    '(e.g. "drop@2")'
                )

    def fault_for(self, client: str, round_: int) -> str | None:
        """The fault ``client`` simulates in round ``round_`` (``None``: none)."""
        fault = self.fault_injection.get(client)
        if fault is None:
            return None
        kind, _, rnd = fault.partition("@")
        return kind if not rnd or int(rnd) == round_ else None
