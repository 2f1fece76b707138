"""In a ranking scenario on implicit feedback (no relevance threshold: every interaction is
relevant), ``elae`` and ``metatower`` are selected on the scenario's own meta-val tasks, as the
ranking baselines are tuned: the meta-val score each records is the protocol's
``ndcg@10_all`` on meta-val, recomputed here from the fitted model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from metarec.config import load_scenario
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.build import build_splits
from metarec.methods import FitData
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.learners.elae import make_elae
from metarec.methods.learners.metatower import make_metatower
from metarec.methods.ranking._common import Protocol


@pytest.fixture(scope="module")
def implicit_ranking():
    table = make_two_domain(n_users=160, seed=1, feedback="implicit")
    sc = load_scenario(
        None,
        data={"source": "synthetic"},
        protocol={
            "split": "cold_domain_users",
            "target_domain": "target",
            "beta": 0.3,
            "val_fraction": 0.3,
            "ranking": True,
            "support_pool": 5,
            "n_support": 3,
            "n_query": 5,
            "min_interactions": 6,
            "max_interactions": "none",
        },
        train={"steps": 40, "val_every": 20, "val_tasks": 30, "progress": False},
        bench={"shots": [1, 3]},
    )
    assert sc.protocol.relevance is None  # implicit: no threshold, yet a ranking scenario
    return table, build_splits(table, sc.protocol), sc


def _protocol_ndcg(fitted, table, splits, sc, k: int, max_tasks: int, seed: int) -> float:
    proto = Protocol.of(sc)
    ev = evaluate_ranking(
        fitted,
        table,
        splits,
        splits.val,
        replace(proto.sampler, n_support=k),
        relevance=None,
        max_tasks=max_tasks,
        seed=seed,
    )
    return float(ev["ndcg@10_all"])


def test_protocol_of_an_implicit_ranking_scenario_is_a_ranking_protocol(implicit_ranking):
    _, _, sc = implicit_ranking
    proto = Protocol.of(sc)
    assert proto.ranking and proto.relevance is None
    assert not Protocol.of(None).ranking


def test_elae_selects_on_the_protocols_meta_val_tasks(implicit_ranking):
    table, splits, sc = implicit_ranking
    method = make_elae(sc, shots=(1, 3), val_tasks=30)
    assert method.protocol is not None
    fitted = method.fit(FitData(table, splits, seed=0))
    for k, recorded in zip(fitted.shots, fitted.val_ndcg, strict=True):
        again = _protocol_ndcg(fitted, table, splits, sc, k, max_tasks=30, seed=0)
        assert recorded == pytest.approx(again, abs=1e-6), (k, recorded, again)


def test_metatower_selects_on_the_protocols_meta_val_tasks(implicit_ranking):
    table, splits, sc = implicit_ranking
    method = make_metatower(sc, dim=8, steps=40, val_every=20, val_tasks=30, shots=(1, 3))
    assert method.protocol is not None
    fitted = method.fit(FitData(table, splits, seed=0))
    assert fitted.training_log.rows, "no meta-val evaluation was logged"
    best = fitted.training_log.best_val["ndcg@10_all"]
    k_scores = [_protocol_ndcg(fitted, table, splits, sc, k, max_tasks=30, seed=0) for k in (1, 3)]
    assert best == pytest.approx(sum(k_scores) / 2, abs=1e-5), (best, k_scores)
