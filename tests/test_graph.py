"""Graph propagation (dense float64 reference), the graph built from meta-train only, the item
attribute graph for cold items, and the cross-domain graph methods on synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _helpers import cold_user_maes

from metarec._errors import ConfigError
from metarec.config import load_scenario
from metarec.data.features import FeatureSpec
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.splits import cold_domain_users_split
from metarec.methods.crossdomain import cross_domain_view, fit_and_evaluate, parse_method
from metarec.methods.crossdomain.graph import GraphCF, GraphScorer
from metarec.models import build_model
from metarec.models.graph import (
    LightGCN,
    attribute_edges,
    bipartite_graph,
    dense_adjacency,
    normalized_graph,
    propagate,
    propagate_sparse,
)
from metarec.train.loop import build_training_model

# fit_and_evaluate (deprecated, a wrapper over the method interface) stays tested for one release
pytestmark = pytest.mark.filterwarnings("ignore:fit_and_evaluate is deprecated:DeprecationWarning")

FAST = {"epochs": 6, "mf_epochs": 6, "batch_size": 512, "val_tasks": 64}


def _random_graph(seed: int = 0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 7, size=30)
    items = rng.integers(0, 9, size=30)
    return users, items, bipartite_graph(users, items, 7, 9)


def test_propagation_matches_a_dense_reference(f64) -> None:
    users, items, g = _random_graph()
    # dense reference: A with one entry per distinct pair, D^-1/2 A D^-1/2, mean of A^l x
    a = torch.zeros(16, 16, dtype=torch.float64)
    a[users, 7 + items] = 1.0
    a[7 + items, users] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    norm = inv[:, None] * a * inv[None, :]
    torch.testing.assert_close(dense_adjacency(g), norm)
    x = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
    ref = (x + norm @ x + norm @ norm @ x + norm @ norm @ norm @ x) / 4
    (gref,) = torch.autograd.grad(ref.square().sum(), x, retain_graph=True)
    for fn in (propagate, propagate_sparse):
        out = fn(g, x, 3)
        torch.testing.assert_close(out, ref)
        (gx,) = torch.autograd.grad(out.square().sum(), x)
        torch.testing.assert_close(gx, gref)  # the sparse backward uses the symmetry of Â
    assert g.n_edges == len(set(zip(users.tolist(), items.tolist())))
    torch.testing.assert_close(propagate(g, x, 0), x)


def test_propagate_runs_under_vmap_and_grad(f64) -> None:
    _, _, g = _random_graph(1)
    w = torch.randn(16, 3, dtype=torch.float64)
    xs = torch.randn(4, 3, dtype=torch.float64)

    def loss(w_: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (propagate(g, w_, 2) @ x).sum()

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(w, xs)  # (4, 16, 3)
    ref = torch.stack([torch.func.grad(loss)(w, x) for x in xs])
    torch.testing.assert_close(grads, ref)


def test_graph_rejects_bad_edges() -> None:
    with pytest.raises(ConfigError, match="self-loop"):
        normalized_graph(np.array([1]), np.array([1]), 3)
    with pytest.raises(ConfigError, match=r"node 5 outside \[0, 3\)"):
        normalized_graph(np.array([0]), np.array([5]), 3)
    with pytest.raises(ConfigError, match="n_layers"):
        propagate(_random_graph()[2], torch.zeros(16, 2), -1)


@pytest.fixture(scope="module")
def implicit_split():
    table = make_two_domain(n_users=200, feedback="implicit", seed=1)
    splits = cold_domain_users_split(
        table, "target", beta=0.3, n_query=10, min_interactions=12, seed=0
    )
    return table, splits


def _pairs(table: InteractionTable, rows: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(table.users[rows].tolist(), table.items[rows].tolist()))


def _graph_pairs(src: torch.Tensor, dst: torch.Tensor, n_users: int) -> set[tuple[int, int]]:
    s, d = src.numpy(), dst.numpy()
    keep = (s < n_users) & (d >= n_users)
    return set(zip(s[keep].tolist(), (d[keep] - n_users).tolist()))


def test_no_evaluation_edge_enters_the_graphs(implicit_split) -> None:
    table, splits = implicit_split
    view = cross_domain_view(table, splits)
    eval_rows = np.concatenate([splits.pools[p].rows for p in (splits.val, *splits.states)])
    held_out = _pairs(table, eval_rows)
    train = _pairs(table, view.train_rows)
    assert held_out and not held_out & train
    for bidirectional in (False, True):
        model = GraphCF(view, 8, bidirectional=bidirectional)
        edges = set().union(*(_graph_pairs(g.src, g.dst, table.n_users) for g in model.graphs))
        assert edges == train  # exactly the meta-train pairs: no evaluation edge
        assert not edges & held_out
    # the meta-learnable model: its user-item edges come from set_graph(meta-train rows)
    rows = splits.pools[splits.train].rows
    gcn = LightGCN(table.n_users, table.n_items).set_graph(table.users[rows], table.items[rows])
    assert _graph_pairs(gcn.edge_src, gcn.edge_dst, table.n_users) == _pairs(table, rows)
    assert not _graph_pairs(gcn.edge_src, gcn.edge_dst, table.n_users) & held_out
    with pytest.raises(ConfigError, match="set_graph"):
        gcn.set_graph([1, 2], [1])
    # ... and training builds it so: build_training_model gives LightGCN the meta-train edges
    sc = load_scenario(
        "tasks/synthetic-cold-start.toml", ["model.name=lightgcn", "model.embedding_dim=4"]
    )
    trained = build_training_model(sc, table, splits)
    edges = _graph_pairs(trained.edge_src, trained.edge_dst, table.n_users)
    assert edges == _pairs(table, rows) and not edges & held_out


def test_bitgcf_carries_a_cold_users_source_embedding_to_the_target(implicit_split, f64) -> None:
    table, splits = implicit_split
    view = cross_domain_view(table, splits)
    model = GraphCF(view, 4, bidirectional=True, n_layers=0)
    cold = torch.from_numpy(view.cold_users)
    users, _ = model.embed()
    # a cold user has no target edge: a_t = 0, so the target embedding is the source one
    torch.testing.assert_close(users[1, cold], model.user[0, cold])
    warm = torch.from_numpy(view.warm_users[:5])
    a_t = model.share[1, warm]
    torch.testing.assert_close(
        users[1, warm], a_t * model.user[1, warm] + (1 - a_t) * model.user[0, warm]
    )


@pytest.mark.slow
def test_graph_methods_are_registered_and_beat_the_average_user() -> None:
    """Target taste is a map of source taste: the shared users' graph carries it to cold users."""
    assert parse_method("bitgcf+adapt") == ("bitgcf", True) and parse_method("lightgcn") == (
        "lightgcn",
        False,
    )
    for seed in (0, 1):
        table = make_two_domain(n_users=300, transfer="linear", feedback="explicit", seed=seed)
        splits = cold_domain_users_split(
            table, "target", beta=0.3, n_query=10, min_interactions=12, seed=seed
        )
        mae = {
            m: fit_and_evaluate(m, table, splits, shots=3, seed=seed, config=FAST)["states"][
                "meta-test"
            ]["mae"]
            for m in ("no-transfer", "lightgcn", "bitgcf")
        }
        assert mae["lightgcn"] < mae["no-transfer"] - 0.02, (seed, mae)
        assert mae["bitgcf"] < mae["no-transfer"] - 0.02, (seed, mae)


def test_graph_scorer_scores_unseen_items_through_slot_zero(implicit_split) -> None:
    table, splits = implicit_split
    view = cross_domain_view(table, splits)
    scorer = GraphScorer(GraphCF(view, 4, bidirectional=False))
    unseen = (
        int(np.flatnonzero(~view.known_items[1:])[0] + 1) if (~view.known_items[1:]).any() else None
    )
    v = scorer.user_vectors(torch.tensor([1, 2]))
    assert v.shape == (2, 5)
    if unseen is not None:
        s = scorer.score(v, torch.tensor([[unseen], [unseen]]))
        torch.testing.assert_close(
            s[:, 0], v[:, 4] + scorer.model.domain_bias[view.target].detach()
        )


def _attr_table(with_text: bool = False):
    """4 users rate items 1..4; item 5 is rated by nobody; genres link items."""
    inter = pd.DataFrame(
        {
            "user": [1, 1, 2, 2, 3, 3, 4, 4],
            "item": [1, 2, 1, 3, 2, 4, 3, 4],
            "rating": [5.0, 1, 5, 2, 1, 4, 2, 4],
        }
    )
    feats = pd.DataFrame(
        {
            "item": [1, 2, 3, 4, 5],
            "genre": ["a", "b", "c", "b", "a"],
            "title": ["space war", "love story", "comedy", "drama", "space battle"],
        }
    )
    specs = [FeatureSpec("genre")] + (
        [FeatureSpec("title", "text", encoder=_FakeEncoder())] if with_text else []
    )
    return InteractionTable.from_frame(
        inter, Columns(), item_features=feats, item_feature_specs=specs
    )


class _FakeEncoder:
    """Bag of letters: a deterministic stand-in for a pretrained encoder."""

    name = "fake-letters"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for k, t in enumerate(texts):
            for ch in t:
                if ch.isalpha():
                    out[k, ord(ch) - 97] += 1.0
        return out


def test_attribute_graph_reaches_an_item_without_interactions(monkeypatch, tmp_path) -> None:
    table = _attr_table()
    f = table.item_features
    items, nodes, n_attr = attribute_edges(f, offset=100)
    assert n_attr == 3 and items.shape == (5,) and set(nodes.tolist()) == {100, 101, 102}
    with pytest.raises(ConfigError, match="not a categorical item feature"):
        attribute_edges(f, ["genres"])
    cold = int(table.item_ids.encode(np.array([5]))[0])
    rows = np.arange(len(table))
    model = build_model("lightgcn", table, embedding_dim=4)
    model.set_graph(table.users[rows], table.items[rows]).set_known(
        users=table.users, items=table.items
    )
    assert not bool(model.known_items[cold])
    x = model.node_embeddings()
    assert x[model.known_users.numel() + cold].abs().sum() > 0  # its genre node reached it
    same_genre = int(table.item_ids.encode(np.array([1]))[0])
    g = model.graph
    dense = dense_adjacency(g)
    two_hop = dense @ dense
    nu = model.known_users.numel()
    assert two_hop[nu + cold, nu + same_genre] > 0  # item 5 and item 1 share genre "a"


def test_lightgcn_item_with_text_and_no_interactions_is_scored_by_its_text(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    table = _attr_table(with_text=True)
    model = build_model("lightgcn", table, embedding_dim=4, attributes=False)
    rows = np.arange(len(table))
    model.set_graph(table.users[rows], table.items[rows]).set_known(users=[], items=table.items)
    cold = int(table.item_ids.encode(np.array([5]))[0])
    with torch.no_grad():
        base = model(torch.tensor([1]), torch.tensor([cold]))
        model.text["0"].weight.mul_(2.0)
        moved = model(torch.tensor([1]), torch.tensor([cold]))
        model.text["0"].weight.zero_()
        none = model(torch.tensor([1]), torch.tensor([cold]))
    assert not torch.allclose(base, moved)  # the score of the cold item comes from its text
    torch.testing.assert_close(
        none, model.head.bias.detach()
    )  # no text signal: the head's bias only


@pytest.mark.slow
def test_maml_over_lightgcn_beats_global_on_cold_users(tmp_path) -> None:
    """The meta-learnable LightGCN (item attribute graph; cold users are the adapted unknown
    vector) trained by MAML beats the same model without adaptation, for two seeds."""
    over = [
        "data.synthetic.n_domains=10",
        "data.synthetic.n_users=80",
        "data.synthetic.n_items=120",
        "train.steps=60",
        "train.val_every=30",
        "train.val_tasks=64",
        "train.progress=false",
        "model.name=lightgcn",
        "algorithm.meta_batch=16",
    ]
    for seed in (0, 1):
        maes = cold_user_maes(tmp_path, over, seed)
        assert maes["maml"] < maes["global"] - 0.02, (seed, maes)
