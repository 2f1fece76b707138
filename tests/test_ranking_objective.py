"""Meta-learners trained to rank on ratings (metarec.config.objective): the relevance sampler
and its logQ, a support turned into a ranking set, the config rules (by message), the MAML family
and the learners trained to rank (round trips, no serving kernel), and a planted-exposure table
where MAML trained to rank beats MAML on MSE over seeds."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from metarec._errors import ConfigError
from metarec.algorithms import AlgorithmConfig
from metarec.config import load_scenario, scenario_from_dict
from metarec.config.objective import RankingObjective
from metarec.data.synthetic_exposure import make_exposure_table
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.build import build_splits, sampler_config
from metarec.episodes.relevance import (
    NegativeCatalogue,
    rank_support,
    ranking_objective,
    training_sampler,
)
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.methods import FitData, build_fitted, build_method
from metarec.methods.catalogue import evaluate_ranking
from metarec.train.setup import algorithm_config

PROTOCOL = {
    "split": "random",
    "fractions": [0.6, 0.2, 0.2],
    "ranking": True,
    "relevance": 4.0,
    "support_pool": 20,
    "n_support": 5,
    "n_query": 10,
    "min_interactions": 21,
    "max_interactions": "none",
}


def _scenario(loss: str | None, name: str = "maml", steps: int = 100, **algorithm):
    algo = {"name": name, "inner_steps": 2, "inner_lr": 0.1, "meta_batch": 16, **algorithm}
    if loss is not None:
        algo["loss"] = loss
    return load_scenario(
        None,
        data={"source": "synthetic"},
        protocol=PROTOCOL,
        model={"name": "melu", "embedding_dim": 8, "hidden": [16]},
        algorithm=algo,
        train={
            "steps": steps,
            "val_every": 50,
            "val_tasks": 60,
            "outer_lr": 0.01,
            "progress": False,
        },
    )


@pytest.fixture(scope="module")
def exposure():
    table = make_exposure_table(seed=0)
    return table, build_splits(table, _scenario(None).protocol)


# ---------------------------------------------------------------------- the training sampler
def test_training_sampler_labels_ratings_and_adds_negatives(exposure):
    table, splits = exposure
    obj = RankingObjective("bpr", 4.0, negatives=3)
    cfg = training_sampler(SamplerConfig(n_support=5, n_query=10), obj)
    assert cfg.negatives == 3 and cfg.relevance == 4.0 and cfg.negatives_from == "pool"
    b = TaskSampler(table, splits.pools[splits.train], cfg, seed=1).sample(8)
    for s, n in ((b.support, 5), (b.query, 10)):
        assert set(s.targets[s.mask].unique().tolist()) <= {0.0, 1.0}
        rated = s.rows >= 0
        assert int(rated.sum()) == 8 * n and int((s.mask & ~rated).sum()) == 3 * 8 * n
        want = torch.as_tensor(table.ratings[s.rows[rated].numpy()] >= 4.0, dtype=s.targets.dtype)
        torch.testing.assert_close(s.targets[rated], want)
        assert s.logq is None  # a uniform draw: no correction
        for t in range(8):  # a sampled negative is an item the user never rated
            u = int(s.users[t, 0])
            seen = set(table.items[table.users == u].tolist())
            negs = s.items[t][s.mask[t] & ~rated[t]].tolist()
            assert negs and not set(negs) & seen


def test_popularity_negatives_carry_their_log_probability(exposure):
    table, splits = exposure
    pool = splits.pools[splits.train]
    cfg = training_sampler(SamplerConfig(n_support=5, n_query=10), RankingObjective("softmax", 4.0))
    assert cfg.negatives_by == "popularity"
    sampler = TaskSampler(table, pool, cfg, seed=2)
    counts = np.bincount(table.items[pool.rows], minlength=table.n_items).astype(np.float64)
    q = counts / counts.sum()
    b = sampler.sample(64)
    s = b.query
    real = s.mask
    torch.testing.assert_close(
        s.logq[real], torch.as_tensor(np.log(q[s.items[real].numpy()]), dtype=s.logq.dtype)
    )
    assert bool((s.logq[~real] == 0).all())
    # the draws follow the counts: popular items are drawn more often than uniform would
    negs = s.items[real & (s.rows < 0)].numpy()
    cfg_u = training_sampler(SamplerConfig(n_support=5, n_query=10), RankingObjective("bpr", 4.0))
    u = TaskSampler(table, pool, cfg_u, seed=2).sample(64).query
    negs_u = u.items[u.mask & (u.rows < 0)].numpy()
    assert q[negs].mean() > 1.2 * q[negs_u].mean()


def test_negatives_on_ratings_need_relevance_labels(exposure):
    table, splits = exposure
    with pytest.raises(
        ConfigError, match=r"negatives=4: sampled negatives are for implicit feedback.*relevance="
    ):
        TaskSampler(table, splits.pools[splits.train], SamplerConfig(negatives=4))
    with pytest.raises(ConfigError, match=r"negatives_by='pop': must be 'uniform' or 'popularity'"):
        SamplerConfig(negatives_by="pop")


# ---------------------------------------------------------------------- a support to rank from
def _support(users, items, ratings):
    n = max(len(x) for x in items)
    U = torch.zeros(len(users), n, dtype=torch.long)
    It = torch.zeros(len(users), n, dtype=torch.long)
    R = torch.zeros(len(users), n)
    M = torch.zeros(len(users), n, dtype=torch.bool)
    for t, (u, its, rs) in enumerate(zip(users, items, ratings, strict=True)):
        U[t, : len(its)], It[t, : len(its)] = u, torch.as_tensor(its)
        R[t, : len(its)], M[t, : len(its)] = torch.as_tensor(rs), True
    return EpisodeSet(U, It, R, M)


def test_rank_support_labels_and_draws_per_user(exposure):
    table, _ = exposure
    cat = NegativeCatalogue.of(table)
    obj = RankingObjective("bce", 4.0, negatives=4)
    sup = _support([3, 9], [[5, 6, 7], [8]], [[5.0, 2.0, 4.0], [1.0]])
    out = rank_support(sup, obj, cat)
    assert out.users.shape == (2, 3 + 12)
    assert out.targets[0, :3].tolist() == [1.0, 0.0, 1.0] and out.targets[1, 0].item() == 0.0
    assert int(out.mask[0].sum()) == 3 + 12 and int(out.mask[1].sum()) == 1 + 4
    negs = out.items[0, 3:][out.mask[0, 3:]].tolist()
    assert not set(negs) & {5, 6, 7} and bool((out.targets[:, 3:] == 0).all())
    assert bool((out.users[0][out.mask[0]] == 3).all()) and bool(
        (out.users[1][out.mask[1]] == 9).all()
    )
    # a user's draw does not depend on the batch around it, and repeats exactly
    alone = rank_support(sup.select(slice(1, 2)), obj, cat)
    assert (
        alone.items[0, 1:][alone.mask[0, 1:]].tolist() == out.items[1, 3:][out.mask[1, 3:]].tolist()
    )
    again = rank_support(sup, obj, cat)
    assert torch.equal(again.items, out.items) and torch.equal(again.mask, out.mask)


# ---------------------------------------------------------------------- config rules
def test_click_losses_on_ratings_are_accepted_exactly_in_ranking_scenarios():
    data = {"source": "csv", "path": "a.csv"}
    for loss in ("bce", "bpr", "softmax"):
        with pytest.raises(
            ConfigError,
            match=rf"algorithm.loss='{loss}'.*explicit ratings.*loss=mse.*protocol.ranking = true",
        ):
            scenario_from_dict({"name": "x", "data": data, "algorithm": {"loss": loss}})
        sc = scenario_from_dict(
            {"name": "x", "data": data, "protocol": PROTOCOL, "algorithm": {"loss": loss}}
        )
        assert sc.algorithm.loss == loss


def test_ranking_objective_of_a_scenario(exposure):
    table, _ = exposure
    assert ranking_objective(_scenario("bpr"), table) == RankingObjective("bpr", 4.0)
    assert ranking_objective(_scenario(None), table) is None  # mse: ratings
    algo = algorithm_config(_scenario("softmax"), "explicit", table)
    assert (algo.relevance, algo.negatives, algo.proposal) == (4.0, 4, "popularity")
    assert algo.ranking == RankingObjective("softmax", 4.0)
    with pytest.raises(
        ConfigError, match=r"algorithm.loss='bpr' in a ranking scenario.*--set algorithm.loss=mse"
    ):
        algorithm_config(_scenario("bpr"), "explicit")  # no table to set the threshold from
    assert algorithm_config(_scenario(None), "explicit").relevance is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "mse", "relevance": 4.0}, r"loss='mse': a ranking objective trains a click loss"),
        ({"loss": "bpr", "relevance": 4.0, "negatives": -1}, r"negatives=-1: sampled negatives"),
        (
            {"loss": "bpr", "relevance": 4.0, "proposal": "zipf"},
            r"proposal='zipf': negatives are drawn",
        ),
        ({"loss": "bpr", "relevance": float("nan")}, r"relevance=nan: the relevance threshold"),
    ],
)
def test_objective_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AlgorithmConfig("maml", **kwargs)


def test_a_learner_without_a_ranking_objective_says_it_keeps_its_own():
    with pytest.warns(
        UserWarning, match=r"content-bias: algorithm.loss='bpr' trains to rank.*rating objective"
    ):
        build_method("content-bias", _scenario("bpr"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_method("r2d2", _scenario("bpr"))  # it ranks
        build_method("content-bias", _scenario(None))  # nothing asked


# ---------------------------------------------------------------------- trained to rank
def _ndcg(fitted, table, splits, sc, pool="meta-test") -> float:
    ev = evaluate_ranking(
        fitted, table, splits, pool, sampler_config(sc.protocol), relevance=4.0, negatives=None
    )
    return float(ev["ndcg@10_all"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_maml_trained_to_rank_beats_maml_on_mse(seed):
    """Planted exposure (make_exposure_table): users rate popular, on-taste items; the ratings
    carry item quality. MAML on MSE ranks by predicted rating; trained to rank (sampled softmax,
    popularity negatives, logQ) it ranks what the cold user will rate highly, and adapting to
    the support beats the same objective without adaptation (global)."""
    table = make_exposure_table(seed=seed)
    mse, rank, flat = _scenario(None), _scenario("softmax"), _scenario("softmax", "global")
    splits = build_splits(table, mse.protocol)
    got = {}
    for key, sc in (("mse", mse), ("rank", rank), ("global", flat)):
        fitted = build_method(sc.algorithm.name, sc).fit(FitData(table, splits, seed=seed))
        got[key] = _ndcg(fitted, table, splits, sc)
    assert got["rank"] > got["mse"] + 0.02, got
    assert got["rank"] > got["global"], got


def test_engine_run_trained_to_rank_round_trips_and_serves_through_the_library(exposure, tmp_path):
    from metarec.methods.engine.method import load_engine
    from metarec.recommend.load import load_run
    from metarec.serve.kernels import kernel_for

    table, splits = exposure
    sc = _scenario("bpr", steps=20)
    fitted = build_method("maml", sc).fit(FitData(table, splits, seed=0, out=tmp_path / "run"))
    assert fitted.algo.ranking == RankingObjective("bpr", 4.0)
    assert fitted.training_log.metric == "ndcg@10_all"
    loaded = load_engine(tmp_path / "run")
    assert loaded.algo.ranking == fitted.algo.ranking
    sup = _support([3, 9], [[5, 6, 7], [8, 40]], [[5.0, 2.0, 4.0], [5.0, 1.0]])
    items = torch.arange(1, table.n_items)
    a, b = fitted.adapt(sup), loaded.adapt(sup)
    assert a.score_kind == "rank"
    users = sup.users[:, :1].expand(-1, items.shape[0])
    grid = items.unsqueeze(0).expand(2, -1)
    torch.testing.assert_close(a.score(users, grid), b.score(users, grid))
    # adaptation changes the scores (the support is a ranking set, not ignored)
    init = fitted.adapt(sup, steps=0).score(users, grid)
    assert not torch.allclose(init, a.score(users, grid))
    run = load_run(tmp_path / "run")
    assert run.ranks and kernel_for(run) is None  # the kernels fit ratings: the library path
    ids = table.item_ids.decode(np.array([5, 6, 7]))
    rec = run.adapt([("cold", ids[0], 5.0), ("cold", ids[1], 2.0), ("cold", ids[2], 4.0)])
    top = rec.recommend("cold", k=5)
    assert len(top) == 5 and not {i for i, _ in top} & set(ids)
    raw = rec.predict("cold", [i for i, _ in top])
    assert raw.tolist() == pytest.approx([s for _, s in top], abs=1e-5)  # scores, never clipped


@pytest.mark.parametrize("name", ["r2d2", "mamo", "tanp"])
def test_learners_trained_to_rank_round_trip(exposure, name):
    table, splits = exposure
    sc = _scenario("bce", name="maml", steps=10)
    settings = {"steps": 10, "val_every": 5, "val_tasks": 30}
    if name == "mamo":
        settings["inner_steps"] = 1
    method = build_method(name, sc, **settings)
    fitted = method.fit(FitData(table, splits, seed=0))
    assert fitted.ranking == RankingObjective("bce", 4.0)
    assert fitted.learner.loss == "bce" and fitted.training_log.metric == "ndcg@10_all"
    cfg = fitted.config()
    assert cfg["ranking"]["loss"] == "bce"
    shell = build_fitted(name, cfg, table)
    shell.load_state_dict(fitted.state_dict())
    assert shell.ranking == fitted.ranking
    sup = _support([3, 9], [[5, 6, 7], [8, 40]], [[5.0, 2.0, 4.0], [5.0, 1.0]])
    items = torch.arange(1, table.n_items).unsqueeze(0).expand(2, -1)
    users = sup.users[:, :1].expand_as(items)
    a = fitted.adapt(sup)
    assert a.score_kind == "rank"
    torch.testing.assert_close(a.score(users, items), shell.adapt(sup).score(users, items))
    assert math.isfinite(_ndcg(fitted, table, splits, sc))
