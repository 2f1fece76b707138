"""Graph knowledge transfer: sparse LightGCN propagation, graph recommenders and cross-domain
graph methods.

* :mod:`metarec.graph.propagate`: normalised graphs over edge lists and LightGCN layers;
* :mod:`metarec.graph.attributes`: the item attribute graph (items linked to feature values);
* :mod:`metarec.graph.models`: :class:`LightGCN`, a meta-learnable model (``build_model("lightgcn", table)``);
* :mod:`metarec.graph.training`: its meta-train graph in training, back from a checkpoint on loading;
* :mod:`metarec.graph.crossdomain`: ``lightgcn`` and ``bitgcf`` cross-domain cold-start methods.
"""

from metarec.graph.attributes import attribute_edges
from metarec.graph.models import GraphConfig, LightGCN
from metarec.graph.propagate import (
    Graph,
    bipartite_graph,
    dense_adjacency,
    normalized_graph,
    propagate,
    propagate_sparse,
    sparse_adjacency,
    spmm,
)
from metarec.graph.training import restore_graph, set_training_graph, user_item_pairs

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
