"""Federated meta-learning across domains or user cohorts, on Flower.

Each client holds the rows of one domain (or user cohort) of an interaction table and runs
metarec's task sampler on them; only model parameters and scalar metrics leave it. The server
averages the client models weighted by client size. Algorithms: FedAvg of a global model,
federated Reptile and federated MAML (Per-FedAvg, first- or second-order); afterwards every
client fast-adapts the result to its cold users and is scored on them.

``run_federated(scenario, out)`` is what ``metarec federated SCENARIO --out RUN`` calls. This
package imports torch and flwr lazily: importing it (or :mod:`metarec.config.federated`) is
cheap, and flwr is needed only by the ``simulation`` and ``loopback`` backends
(``pip install "metarec[federated]"``).
"""

from __future__ import annotations

from typing import Any

from metarec.config.federated import FAULTS, FEDERATED_ALGORITHMS, FederatedConfig

__all__ = [
    "FAULTS",
    "FEDERATED_ALGORITHMS",
    "FederatedConfig",
    "FederatedResult",
    "ClientData",
    "FederatedClient",
    "partition_clients",
    "aggregate",
    "run_federated",
]

_LAZY = {
    "FederatedResult": "metarec.federated.runner",
    "run_federated": "metarec.federated.runner",
    "ClientData": "metarec.federated.data",
    "partition_clients": "metarec.federated.data",
    "FederatedClient": "metarec.federated.client",
    "aggregate": "metarec.federated.server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metarec.federated' has no attribute {name!r}")
