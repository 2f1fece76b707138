"""Audit of the graph methods' lead on implicit pairs (issue 21, item 4): every method is ranked
against the same sampled negatives, and the fitted LightGCN / BiTGCF graphs hold meta-train edges
only, with no edge between a cold user and any target item (also under the ranking protocol,
whose support pools are evaluation rows). Each test fails if the property is broken."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec.bench.evaluation import Catalogue, score_pool
from metarec.bench.ranking import RankingSpec
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.ranking import ranking_splits
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import cold_domain_users_split
from metarec.methods import FitData, build_method
from metarec.methods.crossdomain import cross_domain_view
from metarec.methods.crossdomain.method import CrossDomainFitted
from metarec.methods.crossdomain.methods import fit_method

FAST = {"epochs": 2, "mf_epochs": 2, "batch_size": 256, "val_tasks": 32, "patience": 1}


@pytest.fixture(scope="module")
def split():
    table = make_two_domain(n_users=160, feedback="implicit", seed=2)
    base = cold_domain_users_split(
        table, "target", beta=0.3, n_query=5, min_interactions=12, seed=0
    )
    return table, ranking_splits(base, support_pool=5, seed=0)


def _pairs(table, rows):
    return set(zip(table.users[rows].tolist(), table.items[rows].tolist()))


def _graph_pairs(graph, n_users):
    s, d = graph.src.numpy(), graph.dst.numpy()
    keep = (s < n_users) & (d >= n_users)
    return set(zip(s[keep].tolist(), (d[keep] - n_users).tolist()))


@pytest.mark.parametrize("method", ["lightgcn", "bitgcf"])
def test_fitted_graphs_hold_meta_train_edges_only(split, method):
    table, splits = split
    fm = fit_method(method, table, splits, seed=0, config=FAST)
    model = fm.scorer.model
    view = cross_domain_view(table, splits)
    train = _pairs(table, splits.pools[splits.train].rows)
    assert train == _pairs(table, view.train_rows)
    edges = set().union(*(_graph_pairs(g, table.n_users) for g in model.graphs))
    assert edges == train  # meta-train pairs, nothing else
    cold = set(view.cold_users.tolist())
    target_items = set(np.unique(table.items[table.domains == view.target]).tolist())
    # no edge joins a cold user to any target item (support pools and queries are evaluation rows)
    assert not {(u, i) for u, i in edges if u in cold and i in target_items}
    eval_rows = np.concatenate([splits.pools[p].rows for p in (splits.val, *splits.states)])
    assert not edges & _pairs(table, eval_rows)
    if method == "bitgcf":  # a cold user's target side is all carried over from the source side
        a_t = model.share[1, torch.from_numpy(view.cold_users), 0]
        assert torch.all(a_t == 0)
        assert torch.all(model.graphs[1].degree[torch.from_numpy(view.cold_users)] == 0)


class _Recorder:
    """Wraps a scorer, recording every (user, item) pair it is asked to score."""

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def wrap(self, score):
        def scorer(users, items):
            self.seen.append(np.stack([users.reshape(-1).numpy(), items.reshape(-1).numpy()]))
            return score(users, items)

        return scorer


def _recorded(table, splits, fitted, ranking=None):
    rec = _Recorder()
    score_pool(
        table,
        splits.pools["meta-test"],
        SamplerConfig(n_support=3, n_query=None, negatives=4),
        lambda b: rec.wrap(fitted.adapt(b.support).score),
        seed=5,
        cat=Catalogue(table),
        catalogue=True,
        ranking=ranking,
    )
    return rec.seen


def test_every_method_is_ranked_against_the_same_candidates(split):
    """A graph method, popularity and a ranking baseline ask to score exactly the same (user,
    item) pairs, call by call: the query sets with their sampled negatives, the 99 sampled
    negatives and the catalogue (rating-scenario protocol), and under the ranking protocol the
    same query sets (the catalogue is scored through each method's own path)."""
    table, splits = split
    graph = CrossDomainFitted.from_fitted_method(
        fit_method("lightgcn", table, splits, config=FAST), None
    )
    pop = build_method("popularity").fit(FitData(table, splits))
    ease = build_method("ease", lambdas=[10.0]).fit(FitData(table, splits))
    calls = {
        name: _recorded(table, splits, f)
        for name, f in (("lightgcn", graph), ("popularity", pop), ("ease", ease))
    }
    ref = calls["lightgcn"]
    assert len(ref) >= 3  # the query, the sampled negatives, the catalogue
    for name, seen in calls.items():
        assert len(seen) == len(ref), name
        for a, b in zip(seen, ref):
            np.testing.assert_array_equal(a, b)
    spec = RankingSpec(splits, None, 100, seed=5)
    ranked = {
        name: _recorded(table, splits, f, spec)
        for name, f in (("lightgcn", graph), ("popularity", pop))
    }
    np.testing.assert_array_equal(ranked["lightgcn"][0], ranked["popularity"][0])  # the same query
