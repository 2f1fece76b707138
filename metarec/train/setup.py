"""What a training run is built from: the device, the engine's algorithm config, the model and
its keyword arguments, as :func:`metarec.train.loop.train` resolves them from a scenario.
Re-exported by :mod:`metarec.train.loop`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.algorithms import (
    AlgorithmConfig,
)
from metarec.config import Scenario
from metarec.config.objective import RANK_LOSSES
from metarec.data.table import InteractionTable
from metarec.episodes.relevance import ranking_objective
from metarec.episodes.splits import MetaSplits
from metarec.models import build_model
from metarec.models.base import RecModel
from metarec.models.graph.training import set_training_graph

__all__ = ["algorithm_config", "build_training_model", "model_kwargs", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={name!r}: CUDA is not available on this machine; pass train.device='cpu' or 'auto'"
        )
    return torch.device(name)


def algorithm_config(
    sc: Scenario, feedback: str, table: InteractionTable | None = None
) -> AlgorithmConfig:
    """The engine's :class:`AlgorithmConfig` of a scenario: :meth:`AlgorithmSection.engine`
    with the ``[model]`` section's inner-loop patterns, and, for a ranking scenario on explicit
    ratings with a click loss, its ranking objective
    (:func:`metarec.episodes.relevance.ranking_objective`, which needs ``table``).

    Raises:
        ConfigError: ``algorithm.loss`` is ``bce`` / ``bpr`` / ``softmax`` and the loaded data
            are explicit ratings outside a ranking scenario (a reader that always reads ratings,
            whatever ``data.feedback`` says), or in one but without ``table``.
    """
    loss, scale = sc.algorithm.loss, sc.data.rating_scale
    unit = scale is not None and 0.0 <= scale[0] and scale[-1] <= 1.0  # ratings in [0, 1]
    ranking = sc.protocol.ranking and feedback == "explicit" and loss in RANK_LOSSES
    if feedback == "explicit" and loss in RANK_LOSSES and not unit and not ranking:
        raise ConfigError(
            f"algorithm.loss={loss!r}: a loss for implicit feedback (0/1 clicks), but source={sc.data.source!r} "
            "read explicit ratings; training on them would fit the ratings as if they were clicks; use "
            "--set algorithm.loss=mse (or leave it unset)"
        )
    algo = sc.algorithm.engine_config(feedback, sc.model.adapt)
    if not ranking:
        return algo
    if table is None:
        raise ConfigError(
            f"algorithm.loss={loss!r} in a ranking scenario on explicit ratings trains to rank, which this entry "
            "point does not support (it has no table to set the relevance threshold from); use metarec train or "
            "metarec bench, or --set algorithm.loss=mse"
        )
    objective = ranking_objective(sc, table)
    assert objective is not None  # a ranking scenario, explicit ratings, a click loss
    return replace(
        algo,
        relevance=objective.relevance,
        negatives=objective.negatives,
        proposal=str(objective.proposal),
    )


def model_kwargs(sc: Scenario) -> dict[str, Any]:
    """Keyword arguments of :func:`metarec.models.build_model` for a scenario's ``[model]``
    (the initial weights are seeded by ``train.seed``)."""
    m = sc.model
    kw: dict[str, Any] = {"embedding_dim": m.embedding_dim, "seed": sc.train.seed}
    if m.name in ("melu", "neumf", "two_tower"):
        kw["hidden"] = tuple(m.hidden)
    if m.dropout:
        kw["dropout"] = m.dropout
    return kw


def build_training_model(sc: Scenario, table: InteractionTable, splits: MetaSplits) -> RecModel:
    """The scenario's model with the known-id buffers training uses (id models)."""
    model = build_model(sc.model.name, table, **model_kwargs(sc))
    if hasattr(model, "set_known"):
        # Ids seen in meta-train keep their own embeddings; the rest share the learned
        # "unknown" one. With user tasks every test user is cold, so meta-training must train
        # the unknown user embedding too: all users count as unknown.
        rows = splits.pools[splits.train].rows
        users: Any = [] if sc.protocol.unit == "user" else np.unique(table.users[rows])
        model.set_known(users=users, items=np.unique(table.items[rows]))  # type: ignore[operator]
    set_training_graph(model, table, splits.pools[splits.train].rows)  # hook (metarec.models.graph)
    return model
