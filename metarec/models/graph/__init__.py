"""Graph models: sparse LightGCN propagation, the item attribute graph and LightGCN as a
meta-learnable model (the cross-domain graph methods are :mod:`metarec.methods.crossdomain.graph`).

* :mod:`metarec.models.graph.propagate`: normalised graphs over edge lists and LightGCN layers;
* :mod:`metarec.models.graph.attributes`: the item attribute graph (items linked to feature values);
* :mod:`metarec.models.graph.lightgcn`: :class:`LightGCN`, a meta-learnable model (``build_model("lightgcn", table)``);
* :mod:`metarec.models.graph.training`: its meta-train graph in training, back from a checkpoint on loading;
* :mod:`metarec.methods.crossdomain.graph`: ``lightgcn`` and ``bitgcf`` cross-domain cold-start methods.
"""

from metarec.models.graph.attributes import attribute_edges
from metarec.models.graph.lightgcn import GraphConfig, LightGCN
from metarec.models.graph.propagate import (
    Graph,
    bipartite_graph,
    dense_adjacency,
    normalized_graph,
    propagate,
    propagate_sparse,
    sparse_adjacency,
    spmm,
)
from metarec.models.graph.training import restore_graph, set_training_graph, user_item_pairs

__all__ = [
    "Graph",
    "normalized_graph",
    "bipartite_graph",
    "spmm",
    "propagate",
    "propagate_sparse",
    "sparse_adjacency",
    "dense_adjacency",
    "attribute_edges",
    "GraphConfig",
    "LightGCN",
    "set_training_graph",
    "restore_graph",
    "user_item_pairs",
]
