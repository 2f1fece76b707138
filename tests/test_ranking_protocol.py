"""The catalogue ranking protocol: config rules, pinned support pools, catalogues, relevance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec._errors import ConfigError
from metarec.config import scenario_from_dict
from metarec.data.synthetic import make_synthetic
from metarec.data.table import InteractionTable
from metarec.episodes.build import build_splits, sampler_config
from metarec.episodes.pool import build_pool
from metarec.episodes.ranking import (
    pin_support_pool,
    ranking_splits,
    ranking_targets,
    relevance_threshold,
    state_catalogue,
)
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import MetaSplits, random_split


def _scenario(**protocol):
    base = {"ranking": True, "min_interactions": 21, "max_interactions": "none", "n_support": 5}
    return scenario_from_dict({"name": "r", "protocol": {**base, **protocol}})


@pytest.mark.parametrize(
    ("protocol", "match"),
    [
        (
            {"min_interactions": 20},
            r"min_interactions=20: the ranking protocol needs support_pool \+ 1 = 21",
        ),
        ({"n_support": "none"}, r"n_support=\"none\": the ranking protocol takes k shots"),
        (
            {"n_support": 25, "split": "melu"},
            r"n_support=25: more shots than the support pool holds",
        ),
        ({"support_pool": 0}, r"support_pool=0: must be >= 1"),
        ({"unit": "domain"}, r"unit='domain': the ranking protocol ranks a catalogue for one user"),
        ({"relevance": 9.0}, r"relevance=9.0: outside the rating scale \[1.0, 5.0\]"),
    ],
)
def test_ranking_config_errors(protocol, match):
    with pytest.raises(ConfigError, match=match):
        _scenario(**protocol)


def test_relevance_without_ranking_and_shots_beyond_the_pool_are_refused():
    with pytest.raises(
        ConfigError, match="relevance=4.0: the relevance threshold belongs to the catalogue ranking"
    ):
        scenario_from_dict({"name": "r", "protocol": {"relevance": 4.0}})
    with pytest.raises(
        ConfigError, match=r"bench.shots=\[5, 30\]: 30 shots exceed protocol.support_pool=20"
    ):
        scenario_from_dict(
            {
                "name": "r",
                "protocol": {"ranking": True, "min_interactions": 21, "n_support": 5},
                "bench": {"shots": [5, 30]},
            }
        )
    with pytest.raises(ConfigError, match="implicit feedback has no ratings"):
        scenario_from_dict(
            {
                "name": "r",
                "data": {"source": "csv", "feedback": "implicit", "rating_scale": "none"},
                "protocol": {"ranking": True, "min_interactions": 21, "relevance": 1.0},
            }
        )


@pytest.fixture(scope="module")
def table():
    return make_synthetic(n_domains=1, n_users=120, n_items=100, density=0.35, seed=0)


def test_support_pool_is_pinned_nested_and_the_query_is_identical_across_shots(table):
    splits = ranking_splits(
        random_split(table, min_interactions=21, seed=0), support_pool=20, seed=0
    )
    pool = splits.pools["meta-test"]
    assert (
        np.bincount(np.repeat(np.arange(len(pool)), pool.lengths), weights=~pool.query_flag) == 20
    ).all()
    sel = np.arange(len(pool))
    batches = {
        (k, seed): TaskSampler(
            table, pool, SamplerConfig(n_support=k, n_query=None), seed=seed
        ).batch(sel)
        for k in (1, 3, 5, 10, 20)
        for seed in (0, 7)
    }
    ref = batches[(20, 0)]
    for (k, _), b in batches.items():
        assert (b.query.rows == ref.query.rows).all()  # same query for every k and sampler seed
        assert (b.support.sizes() == k).all()
        assert (b.support.rows == ref.support.rows[:, :k]).all()  # nested: the pool's first k
    # query = every other interaction of the unit
    assert (ref.query.sizes() + 20 == torch_lengths(pool)).all()
    # meta-train is untouched
    assert splits.pools["meta-train"] is not None and splits.pools["meta-train"].query_flag is None


def torch_lengths(pool):
    import torch

    return torch.from_numpy(pool.lengths)


def test_time_order_pins_the_earliest_rows(table):
    rows = np.arange(len(table))
    pool = build_pool(table, rows, table.users, "p", "user", min_interactions=25)
    pinned = pin_support_pool(table, pool, 20, order="time")
    for j in range(3):
        sl = slice(pool.offsets[j], pool.offsets[j + 1])
        assert (~pinned.query_flag[sl]).tolist()[:20] == [True] * 20  # rows are time-ordered
        assert pinned.support_rank[sl][:20].tolist() == list(range(20))


def test_kept_queries_stay_and_the_pool_comes_from_the_other_rows(table):
    rows = np.arange(len(table))
    pool = build_pool(table, rows, table.users, "p", "user", min_interactions=25)
    flag = np.zeros(pool.rows.shape[0], dtype=bool)
    flag[pool.offsets[:-1]] = True  # one held-out row per unit (a leave-one-out split)
    from dataclasses import replace

    pool = replace(pool, query_flag=flag)
    keep = np.zeros(len(pool), dtype=bool)
    keep[:5] = True
    pinned = pin_support_pool(table, pool, 4, seed=0, keep_query=keep)
    for j in range(len(pool)):
        q = pinned.query_flag[pool.offsets[j] : pool.offsets[j + 1]]
        if j < 5:
            assert q.sum() == 1 and q[0]  # the dataset's query kept
            sr = pinned.support_rank[pool.offsets[j] : pool.offsets[j + 1]]
            assert ((sr >= 0) & (sr < 4)).sum() == 4
        else:
            assert (~q).sum() == 4  # re-cut: 4 pool rows, the rest query


def _cold_item_table():
    """Two users x 6 items; items 4, 5 are new (a MeLU-like split with cold items)."""
    frame = pd.DataFrame(
        {
            "user": [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2],
            "item": [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6],
            "rating": [5, 4, 3, 2, 5, 1, 1, 4, 5, 3, 4, 4],
        }
    )
    return InteractionTable.from_frame(frame)


def test_state_catalogues_come_from_the_split_not_the_pool_rows():
    t = _cold_item_table()
    items = np.unique(t.items)
    new = items[-2:]
    old_rows = np.flatnonzero(~np.isin(t.items, new))
    new_rows = np.flatnonzero(np.isin(t.items, new))
    pools = {
        "meta-train": build_pool(
            t, old_rows[t.users[old_rows] == t.users[0]], t.users, "meta-train", "user"
        ),
        "user-cold": build_pool(
            t, old_rows[t.users[old_rows] != t.users[0]][:2], t.users, "user-cold", "user"
        ),
        "item-cold": build_pool(t, new_rows[:1], t.users, "item-cold", "user"),
    }
    s = MetaSplits(t, pools, states=["user-cold", "item-cold"], cold_items={"item-cold": new})
    assert state_catalogue(s, "item-cold").tolist() == sorted(new.tolist())
    # user-cold: every existing item, though its pool rows hold only two of them
    assert state_catalogue(s, "user-cold").tolist() == sorted(items[:-2].tolist())


def test_ranking_targets_relevance_and_exclusion():
    t = _cold_item_table()
    pool = build_pool(t, np.arange(len(t)), t.users, "p", "user")
    pinned = pin_support_pool(t, pool, 2, seed=3)
    tg = ranking_targets(t, pinned)  # default threshold: 4 on 1..5
    assert tg.threshold == 4.0
    for j in range(len(pinned)):
        rows = pinned.rows[pinned.offsets[j] : pinned.offsets[j + 1]]
        q = pinned.query_flag[pinned.offsets[j] : pinned.offsets[j + 1]]
        assert sorted(tg.excluded_of(j).tolist()) == sorted(t.items[rows[~q]].tolist())
        good = t.items[rows[q & (t.ratings[rows] >= 4)]]
        assert sorted(tg.relevant_of(j).tolist()) == sorted(good.tolist())
    assert ranking_targets(t, pinned, 5.0).relevant.shape[0] <= tg.relevant.shape[0]
    with pytest.raises(ConfigError, match="ranking needs pinned query sets"):
        ranking_targets(t, pool)


def test_relevance_threshold_rules():
    t = _cold_item_table()
    assert relevance_threshold(t) == 4.0
    assert relevance_threshold(t, 3.5) == 3.5
    with pytest.raises(ConfigError, match=r"relevance=0.5: outside the rating scale"):
        relevance_threshold(t, 0.5)
    imp = make_synthetic(n_domains=1, n_users=20, n_items=30, feedback="implicit", seed=0)
    assert relevance_threshold(imp) == 1.0
    with pytest.raises(ConfigError, match="implicit feedback has no ratings"):
        relevance_threshold(imp, 1.0)


def test_build_splits_recuts_every_evaluation_pool_and_passes_the_leakage_checks(table):
    from metarec.episodes.leakage import run_leakage_checks

    sc = _scenario(split="random", support_pool=20)
    splits = build_splits(table, sc.protocol)
    for name in ("meta-val", "meta-test"):
        pool = splits.pools[name]
        assert pool.support_rank is not None
        assert ((~pool.query_flag).sum()) == 20 * len(pool)
    checks, _ = run_leakage_checks(splits, sampler_config(sc.protocol), seed=0)
    assert all(v == "passed" for v in checks.values())
