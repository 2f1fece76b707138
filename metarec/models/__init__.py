"""Recommender models: plain ``nn.Module``\\ s over index tensors that name their fast weights.

``forward(users (..., N), items (..., N)) -> (..., N)``; ``model.adapt`` names the parameters
the inner loop adapts and :func:`split_params` splits them off; :func:`build_model` builds one by
name from an :class:`~metarec.data.table.InteractionTable`.
"""

from metarec.models.base import RecModel, split_params
from metarec.models.factory import MODELS, build_model
from metarec.models.features import FeatureEmbedding
from metarec.models.id_models import GMF, IdConfig, IdEmbedding, IdModel, NeuMF, TwoTower
from metarec.models.melu import MeLU, MeLUConfig

__all__ = [
    "RecModel",
    "split_params",
    "MODELS",
    "build_model",
    "FeatureEmbedding",
    "MeLU",
    "MeLUConfig",
    "IdConfig",
    "IdEmbedding",
    "IdModel",
    "GMF",
    "NeuMF",
    "TwoTower",
]
