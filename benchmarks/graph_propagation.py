"""LightGCN propagation: gather/scatter (index_add, vmap-safe) vs torch.sparse CSR, side by side.

Times one forward + backward of 2 LightGCN layers (d = 32) over the full user-item graph of
MovieLens-1M and of the largest Amazon pair (cloth-electronic), and reports each operator's
memory: the stored graph (indices + weights) and the (E, d) gathered intermediate the
index_add version keeps for backward. Writes JSONL to benchmarks/results/graph_propagation.jsonl.

    METAREC_DATA=../shared/datasets OMP_NUM_THREADS=1 python benchmarks/graph_propagation.py
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from metarec.data.readers import read_amazon_pair, read_movielens_1m
from metarec.models.graph.propagate import (
    bipartite_graph,
    propagate,
    propagate_sparse,
    sparse_adjacency,
)

ROOT = Path(os.environ.get("METAREC_DATA", "../shared/datasets"))
OUT = Path(__file__).resolve().parent / "results" / "graph_propagation.jsonl"


def _time(fn, arg, x, repeats: int = 5) -> float:
    ts = []
    for _ in range(repeats):
        x.grad = None
        t0 = time.perf_counter()
        fn(arg, x, 2).square().sum().backward()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    torch.manual_seed(0)
    rows = []
    data = [
        ("ml-1m", lambda: read_movielens_1m(ROOT / "movielens-1m", melu_extra=False)),
        (
            "amazon cloth_electronic",
            lambda: read_amazon_pair(ROOT / "amazon-disencdr", "cloth_electronic"),
        ),
    ]
    for name, load in data:
        t = load()
        g = bipartite_graph(t.users, t.items, t.n_users, t.n_items)
        adj = sparse_adjacency(g)
        x = torch.randn(g.n_nodes, 32, requires_grad=True)
        e = int(g.src.shape[0])
        row = {
            "graph": name,
            "nodes": g.n_nodes,
            "undirected_edges": g.n_edges,
            "dim": 32,
            "layers": 2,
            "torch_threads": torch.get_num_threads(),
            "index_add_s": _time(propagate, g, x),
            "sparse_csr_s": _time(propagate_sparse, adj, x),
            "edge_list_mb": e * (8 + 8 + 4) / 2**20,
            "csr_mb": (
                adj.crow_indices().numel() * 8
                + adj.col_indices().numel() * 8
                + adj.values().numel() * 4
            )
            / 2**20,
            "index_add_saved_per_layer_mb": e * 32 * 4 / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        row["speedup_sparse_over_index_add"] = row["index_add_s"] / row["sparse_csr_s"]
        rows.append(row)
        print(json.dumps(row))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
