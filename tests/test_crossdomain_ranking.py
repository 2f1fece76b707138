"""Cross-domain methods in a ranking scenario: trained on relevance labels plus sampled
negatives with binary cross-entropy, selected on meta-val ``ndcg@10_all``, scored as ranks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import two_domain_scenario

from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.build import build_splits, sampler_config
from metarec.methods import FitData, build_method, train_method
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.crossdomain._train import point_loss
from metarec.methods.crossdomain.data import RowBatches, cross_domain_view
from metarec.methods.crossdomain.methods import fit_method
from metarec.recommend.load import load_run
from metarec.recommend.run_model import RunModel

PROTOCOL = {
    "split": "cold_domain_users",
    "target_domain": "target",
    "beta": 0.3,
    "val_fraction": 0.3,
    "n_support": 3,
    "n_query": 10,
    "min_interactions": 11,
    "max_interactions": "none",
}
CD = {"epochs": 30, "mf_epochs": 5, "embedding_dim": 16, "batch_size": 512, "lr": 0.02}


def _quiet_splits(table, sc):
    """Splits of a deliberately tiny table (its small-pool warnings are expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_splits(table, sc.protocol)


def _scenario(ranking: bool):
    protocol = {
        **PROTOCOL,
        "ranking": ranking,
        **({"support_pool": 10, "relevance": 4.0} if ranking else {}),
    }
    return load_scenario(
        None,
        data={"source": "synthetic"},
        protocol=protocol,
        train={"val_tasks": 40, "progress": False},
        crossdomain=CD,
    )


@pytest.fixture(scope="module")
def two_domains():
    table = make_two_domain(n_users=400, seed=0)
    sc = _scenario(True)
    return table, build_splits(table, sc.protocol), sc


def test_ranking_loss_is_bce_on_relevance_labels_and_sampled_negatives(two_domains):
    table, splits, _ = two_domains
    view = cross_domain_view(table, splits, relevance=4.0)
    assert view.train_feedback == "implicit"
    rows = view.target_rows[:50]
    (batch,) = list(RowBatches(view, rows, batch_size=50, negatives=2, seed=3).epoch())
    u, i, y, d = batch
    assert u.shape == (150,)
    order = np.sort(rows)  # the batch holds the rows shuffled, then 2 negatives per row
    got = np.lexsort((i[:50].numpy(), u[:50].numpy()))
    want = np.lexsort((table.items[order], table.users[order]))
    np.testing.assert_array_equal(i[:50].numpy()[got], table.items[order][want])
    labels = (table.ratings[order][want] >= 4.0).astype(np.float64)
    np.testing.assert_array_equal(y[:50].numpy()[got], labels)
    assert 0 < labels.sum() < 50  # both labels occur
    assert (y[50:] == 0).all() and (d[50:] == view.target).all()
    seen = set(zip(table.users[view.train_rows].tolist(), table.items[view.train_rows].tolist()))
    assert not any((a, b) in seen for a, b in zip(u[50:].tolist(), i[50:].tolist()))
    # the loss of the ranking path, in float64, is BCE on those labels and zero-label negatives
    pred = torch.linspace(-2.0, 3.0, 150, dtype=torch.float64)
    loss = point_loss(pred, y, view.train_feedback)
    yy = y.to(torch.float64)
    p = torch.sigmoid(pred)
    ref = -(yy * torch.log(p) + (1 - yy) * torch.log1p(-p)).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    # a rating scenario's view keeps the ratings and draws no negative
    plain = cross_domain_view(table, splits)
    (b2,) = list(RowBatches(plain, rows, batch_size=50, negatives=2, seed=3).epoch())
    assert plain.train_feedback == "explicit" and b2[2].shape == (50,) and b2[2].max() > 1.0


def test_relevance_labels_need_ratings():
    table = make_two_domain(n_users=60, seed=0, feedback="implicit")
    sc = _scenario(False)
    splits = _quiet_splits(table, sc)
    with pytest.raises(Exception, match=r"relevance=4.0: implicit feedback has no ratings"):
        cross_domain_view(table, splits, relevance=4.0)


def _test_ndcg(fitted, table, splits, sc) -> float:
    ev = evaluate_ranking(
        fitted, table, splits, "meta-test", sampler_config(sc.protocol), relevance=4.0
    )
    return float(ev["ndcg@10_all"])


def test_lightgcn_trained_to_rank_beats_lightgcn_trained_on_ratings(two_domains):
    table, splits, sc = two_domains
    ranked, rated = [], []
    for seed in (0, 1):
        f = build_method("lightgcn", sc).fit(FitData(table, splits, seed=seed))
        assert f.score_kind == "rank" and f.training_log.metric == "ndcg@10_all"
        assert f.ranking is not None and f.ranking.relevance == 4.0
        assert f.adapt(_support(table, splits, sc)).score_kind == "rank"
        ranked.append(_test_ndcg(f, table, splits, sc))
        # the same model trained on squared error and selected on MAE (a rating scenario)
        fm = fit_method("lightgcn", table, splits, seed=seed, config=f.settings)
        assert fm.metric == "mae" and fm.score_kind == "rating"
        assert fm.log["history"][0]["val"] < 0  # -MAE
        from metarec.methods.crossdomain.method import CrossDomainFitted

        g = CrossDomainFitted.from_fitted_method(fm, None)
        assert g.score_kind == "rating"
        rated.append(_test_ndcg(g, table, splits, sc))
    assert all(a > b for a, b in zip(ranked, rated, strict=True)), (ranked, rated)
    assert np.mean(ranked) > np.mean(rated) + 0.02, (ranked, rated)


def _support(table, splits, sc):
    from metarec.episodes.sampler import TaskSampler

    pool = splits.pools["meta-test"]
    return TaskSampler(table, pool, sampler_config(sc.protocol), seed=0).batch(np.arange(3)).support


def test_adapt_in_a_ranking_scenario_steps_on_labels_and_negatives(two_domains):
    table, splits, sc = two_domains
    f = (
        build_method("lightgcn+adapt", sc)
        .with_settings(epochs=2, mf_epochs=1)
        .fit(FitData(table, splits, seed=0))
    )
    fm = f.info["fitted_method"]
    assert fm.adapt_loss == "bce" and fm.metric == "ndcg@10_all"
    assert set(fm.log["adapt_lrs"]["3"]) == set(f.settings.adapt_lrs)
    s = _support(table, splits, sc)
    zero = f.adapt(s, steps=0).vectors
    moved = f.adapt(s, steps=3, lr=0.5).vectors
    assert not torch.allclose(zero, moved)


def test_a_ranking_run_saves_and_loads_as_ranks(tmp_path: Path):
    toml = two_domain_scenario(
        tmp_path, n_users=80, n_source_items=30, n_target_items=25, n_source=10
    )
    sc = load_scenario(
        toml,
        [
            "algorithm.name=bitgcf+adapt",
            "protocol.ranking=true",
            "protocol.relevance=4.0",
            "protocol.support_pool=4",
            "protocol.n_support=2",
            "bench.shots=[1, 2]",
            "protocol.min_interactions=5",
            "crossdomain.mf_epochs=1",
            "crossdomain.epochs=2",
            "crossdomain.embedding_dim=4",
            "crossdomain.adapt_steps=1",
            "crossdomain.adapt_lrs=[0.1]",
            "train.val_tasks=8",
            "train.progress=false",
        ],
    )
    table = load_table(sc.data)
    splits = _quiet_splits(table, sc)
    run = tmp_path / "run"
    train_method(sc, run, table=table, splits=splits, evaluate_test=False)
    back = load_run(run)
    assert back.fitted.score_kind == "rank" and back.ranks
    assert back.fitted.ranking is not None and back.fitted.ranking.relevance == 4.0
    fitted = build_method("bitgcf+adapt", sc).fit(FitData(table, splits, seed=sc.train.seed))
    assert RunModel(fitted).ranks
    users = table.user_ids.values[:2]
    items = table.item_ids.values[-3:]
    rows = [(users[0], items[0], 5.0), (users[1], items[1], 2.0)]
    a, b = RunModel(fitted).adapt_many(rows), back.adapt_many(rows)
    for u in users:
        ta, tb = a.recommend(u, k=5), b.recommend(u, k=5)
        assert [i for i, _ in ta] == [i for i, _ in tb]
        np.testing.assert_allclose([s for _, s in ta], [s for _, s in tb], rtol=1e-5, atol=1e-5)
