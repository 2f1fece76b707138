"""Build a model by name from an interaction table: ``build_model("melu", table, hidden=(64, 64))``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from metarec._errors import ConfigError, suggest
from metarec.models.base import RecModel
from metarec.models.id_models import GMF, IdConfig, NeuMF, TwoTower
from metarec.models.melu import MeLU, MeLUConfig

__all__ = ["MODELS", "build_model"]

MODELS: dict[str, tuple[type[Any], type[Any]]] = {
    "melu": (MeLU, MeLUConfig),
    "gmf": (GMF, IdConfig),
    "neumf": (NeuMF, IdConfig),
    "two_tower": (TwoTower, IdConfig),
}
"""Model name -> (model class, config dataclass). ``"lightgcn"``
(:class:`metarec.models.graph.lightgcn.LightGCN`, :class:`metarec.models.graph.lightgcn.GraphConfig`) joins on the
first :func:`build_model` call: :mod:`metarec.models` builds on this package, so importing it here
at module level would be an import cycle."""


def _add_graph_models() -> None:
    if "lightgcn" not in MODELS:
        from metarec.models.graph.lightgcn import GraphConfig, LightGCN

        MODELS["lightgcn"] = (LightGCN, GraphConfig)


def build_model(
    name: str, table: Any, *, adapt: Sequence[str] | None = None, **config: Any
) -> RecModel:
    """Build model ``name`` over ``table`` (an :class:`~metarec.data.table.InteractionTable`).

    Args:
        name: one of :data:`MODELS` (``"melu"``, ``"gmf"``, ``"neumf"``, ``"two_tower"``,
            ``"lightgcn"``).
        table: gives the index spaces (``n_users``, ``n_items``) and side features.
        adapt: inner-loop patterns overriding the model's default.
        **config: fields of the model's config dataclass (:class:`MeLUConfig` or :class:`IdConfig`).

    Raises:
        ConfigError: unknown model name or config field (with a close-match suggestion), or a
            bad config value.

    Example:
        >>> import torch
        >>> from metarec.data.synthetic import make_synthetic
        >>> table = make_synthetic(n_domains=2, n_users=20, n_items=30, seed=0)
        >>> model = build_model("gmf", table, embedding_dim=4)
        >>> model(torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6]])).shape
        torch.Size([1, 3])
        >>> model.adapt  # what the inner loop adapts: the cold user's embedding and the head
        ('user.unknown', 'head.*')
        >>> build_model("gfm", table)
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: model name='gfm': unknown model; choose one of ['gmf',
        'lightgcn', 'melu', 'neumf', 'two_tower'] (did you mean 'gmf'?)
    """
    _add_graph_models()
    if name not in MODELS:
        raise ConfigError(
            f"model name={name!r}: unknown model; choose one of {sorted(MODELS)}"
            f"{suggest(name, MODELS)}"
        )
    cls, cfg_cls = MODELS[name]
    fields = [f.name for f in dataclasses.fields(cfg_cls)]
    for key in config:
        if key not in fields:
            raise ConfigError(
                f"model {name!r}: unknown config field {key!r}; {cfg_cls.__name__} has {fields}"
                f"{suggest(key, fields)}"
            )
    return cls.from_table(table, cfg_cls(**config), adapt=adapt)
