"""A federated client: local meta-training on its own tasks, fast adaptation to its cold users.

:class:`FederatedClient` wraps one :class:`~metarec.federated.data.ClientData`. ``fit`` takes
the global parameters, runs ``federated.local_steps`` optimiser steps of metarec's engine
(:func:`~metarec.algorithms.meta_loss_and_grads`: MAML, first-order MAML, Reptile or the global
loss of FedAvg) on meta-batches from metarec's task sampler over its own meta-train users, and
returns only the new parameters (clipped for DP), its size and scalar metrics. ``evaluate``
fast-adapts given parameters to each cold user's support set
(:func:`~metarec.metrics.evaluate.evaluate_pool`) and scores the query sets.

The task sampler of round ``r`` is seeded by ``(federated.seed, client index, r)``, so a round
gives the same update whether it runs first or after a resume.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from metarec.algorithms import AlgorithmConfig, meta_loss_and_grads
from metarec.config import Scenario
from metarec.episodes.build import sampler_config
from metarec.episodes.sampler import TaskSampler
from metarec.federated.data import ClientData
from metarec.federated.privacy import clip_update
from metarec.metrics.evaluate import evaluate_pool
from metarec.models import build_model
from metarec.models.base import seeded
from metarec.train.loop import algorithm_config, model_kwargs

__all__ = [
    "ClientDropped",
    "FitResult",
    "FederatedClient",
    "local_algorithm",
    "round_seed",
    "init_params",
]

_ENGINE = {"fedavg": "finetune", "reptile": "reptile", "maml": "maml", "fomaml": "fomaml"}


class ClientDropped(RuntimeError):
    """A client stopped in the middle of its local steps (the ``drop`` fault)."""


@dataclass
class FitResult:
    """What a client sends back after a round: parameters, size, scalar metrics only."""

    params: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float]


def local_algorithm(scenario: Scenario, feedback: str) -> AlgorithmConfig:
    """The engine's algorithm for a client's local steps (``fedavg`` trains with the
    ``finetune`` loss, support + query with no inner loop, and fine-tunes at evaluation)."""
    a = scenario.algorithm
    name = _ENGINE[scenario.federated.algorithm]
    sec = replace(
        a,
        name=name,
        first_order=a.first_order and name == "maml",
        per_step_lr=False,
        multi_step_loss=a.multi_step_loss and name in ("maml", "fomaml"),
    )
    return algorithm_config(replace(scenario, algorithm=sec), feedback)


def round_seed(seed: int, client: int, round_: int) -> int:
    """Seed of client ``client``'s task sampler in round ``round_``."""
    return int(np.random.SeedSequence([seed, client, round_]).generate_state(1)[0])


def _model(scenario: Scenario, data: ClientData, dtype: torch.dtype) -> torch.nn.Module:
    with seeded(scenario.train.seed):  # the initial weights, the global RNG untouched
        model = build_model(scenario.model.name, data.table, **model_kwargs(scenario))
    set_known = getattr(model, "set_known", None)
    if set_known is not None:
        set_known(users=[])  # tasks are users: every user id is cold, as in metarec.train.loop
    return model.to(dtype)


def init_params(
    scenario: Scenario, data: ClientData, dtype: torch.dtype = torch.float32
) -> dict[str, np.ndarray]:
    """The model's initial weights (seeded by ``train.seed``; equal on every client)."""
    return {
        k: v.detach().cpu().numpy().copy()
        for k, v in _model(scenario, data, dtype).named_parameters()
    }


class FederatedClient:
    """One client: its data, model and local algorithm.

    Args:
        data: the client's rows and splits.
        scenario: the resolved scenario (``[federated]``, ``[algorithm]``, ``[train]``...).
        dtype: parameter dtype (float64 in reference tests).
    """

    def __init__(
        self, data: ClientData, scenario: Scenario, dtype: torch.dtype = torch.float32
    ) -> None:
        self.data = data
        self.scenario = scenario
        self.fed = scenario.federated
        self.dtype = dtype
        self.model = _model(scenario, data, dtype)
        self.algo = local_algorithm(scenario, data.table.feedback)
        self.sampler_config = sampler_config(scenario.protocol)

    @property
    def name(self) -> str:
        return self.data.name

    def info(self) -> dict[str, Any]:
        """Name, size and pool sizes (what the server learns in the handshake)."""
        return {
            "name": self.name,
            "index": self.data.index,
            "num-examples": self.data.n_train,
            **{k.replace(" ", "-"): v for k, v in self.data.sizes().items()},
        }

    def _tensors(self, params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        names = [k for k, _ in self.model.named_parameters()]
        missing = [k for k in names if k not in params]
        if missing:
            raise KeyError(
                f"global parameters lack {missing[0]!r}; the server and client models differ"
            )
        return {k: torch.as_tensor(np.asarray(params[k]), dtype=self.dtype).clone() for k in names}

    def fit(self, params: Mapping[str, Any], round_: int) -> FitResult:
        """``federated.local_steps`` local steps from ``params`` (``{name: array}``)."""
        t0 = time.perf_counter()
        fault = self.fed.fault_for(self.name, round_)
        if fault == "straggle":
            time.sleep(self.fed.round_timeout + 2.0)
        start = self._tensors(params)
        p = {k: v.clone().requires_grad_(True) for k, v in start.items()}
        tr = self.scenario.train
        lr = self.fed.local_lr or tr.outer_lr
        opt = (torch.optim.Adam if self.fed.local_optimizer == "adam" else torch.optim.SGD)(
            list(p.values()), lr=lr
        )
        scfg = replace(self.sampler_config, negatives_from="pool")
        sampler = TaskSampler(
            self.data.table,
            self.data.splits.pools["meta-train"],
            scfg,
            seed=round_seed(self.fed.seed, self.data.index, round_),
            dtype=self.dtype,
        )
        n_batch = self.fed.meta_batch or self.scenario.algorithm.meta_batch
        losses, skipped = [], 0
        for step in range(self.fed.local_steps):
            if fault == "drop" and step == self.fed.local_steps // 2:
                raise ClientDropped(
                    f"client {self.name!r} dropped out after {step} of {self.fed.local_steps} local steps "
                    f"in round {round_} (fault_injection)"
                )
            batch = sampler.sample(n_batch)
            loss, grads = meta_loss_and_grads(self.algo, self.model, p, batch)
            if not (
                torch.isfinite(loss) and all(bool(torch.isfinite(g).all()) for g in grads.values())
            ):
                skipped += 1
                continue
            for k, t in p.items():
                t.grad = grads[k].to(t.dtype)
            if tr.grad_clip:
                torch.nn.utils.clip_grad_norm_(list(p.values()), tr.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
        new = {k: v.detach() for k, v in p.items()}
        norm = float("nan")
        if self.fed.dp_clip is not None:
            new, norm = clip_update(new, start, self.fed.dp_clip)
        metrics = {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "skipped-steps": float(skipped),
            "update-norm": norm,
            "seconds": time.perf_counter() - t0,
        }
        return FitResult({k: v.cpu().numpy() for k, v in new.items()}, self.data.n_train, metrics)

    def evaluate(self, params: Mapping[str, Any], pool: str = "meta-test") -> dict[str, float]:
        """Fast-adapt ``params`` to each user of ``pool`` (default: the cold users) on their
        support sets and score their queries: ``{metric: mean over users, "n_tasks"}``."""
        p = self._tensors(params)
        a = self.scenario.algorithm
        ev = evaluate_pool(
            self.model,
            p,
            self.algo,
            self.data.table,
            self.data.splits.pools[pool],
            self.sampler_config,
            steps=a.eval_steps,
            lr=a.eval_lr,
            k=self.scenario.metrics.k,
            names=self.scenario.metrics.names,
        )
        return {
            k: float(v)
            for k, v in ev.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
