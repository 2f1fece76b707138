"""Task sampler and meta-splits: shapes, determinism, and each leakage guarantee."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import ConfigError
from metarec.data.features import FeatureSpec
from metarec.data.synthetic import make_synthetic
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.leakage import run_leakage_checks, task_overlap
from metarec.episodes.pool import build_pool
from metarec.episodes.sampler import SamplerConfig, TaskSampler, pin_queries
from metarec.episodes.splits import cold_domain_users_split, melu_split, random_split, time_split


@pytest.fixture(scope="module")
def table():
    return make_synthetic(n_domains=4, n_users=60, n_items=80, density=0.3, seed=0)


def test_batch_shapes_masks_and_padding(table):
    pool = build_pool(table, np.arange(len(table)), table.users, "all", "user", min_interactions=20)
    b = TaskSampler(table, pool, SamplerConfig(n_support=5, n_query=None), seed=0).sample(16)
    assert b.support.users.shape == (16, 5)
    sizes = b.query.sizes()
    assert b.query.users.shape[1] == int(sizes.max()) and int(sizes.min()) >= 15
    pad = ~b.query.mask
    assert (
        (b.query.items[pad] == 0).all()
        and (b.query.targets[pad] == 0).all()
        and (b.query.rows[pad] == -1).all()
    )
    # each task is one user
    assert (b.support.users == b.units[:, None]).all()


def test_sampler_deterministic_per_seed(table):
    pool = build_pool(table, np.arange(len(table)), table.users, "all", "user", min_interactions=20)
    a = TaskSampler(table, pool, SamplerConfig(5, 10), seed=3).sample(8)
    b = TaskSampler(table, pool, SamplerConfig(5, 10), seed=3).sample(8)
    c = TaskSampler(table, pool, SamplerConfig(5, 10), seed=4).sample(8)
    assert torch.equal(a.support.items, b.support.items) and torch.equal(a.query.rows, b.query.rows)
    assert not torch.equal(a.support.rows, c.support.rows)


def test_query_never_in_support_random_time_pinned(table):
    pool = build_pool(table, np.arange(len(table)), table.users, "all", "user", min_interactions=20)
    for cfg, p in [
        (SamplerConfig(5, 10), pool),
        (SamplerConfig(5, None, "time"), pool),
        (SamplerConfig(None, 10), pin_queries(table, pool, 10, seed=0)),
        (SamplerConfig(3, 10, "time"), pin_queries(table, pool, 10, order="time")),
    ]:
        b = TaskSampler(table, p, cfg, seed=0).sample(64)
        assert task_overlap(b) == 0
        assert int(b.support.sizes().min()) >= 1 and int(b.query.sizes().min()) >= 1


def test_task_overlap_detects_leak(table):
    pool = build_pool(table, np.arange(len(table)), table.users, "all", "user", min_interactions=20)
    b = TaskSampler(table, pool, SamplerConfig(5, 10), seed=0).sample(4)
    leaky = type(b)(
        b.support,
        type(b.query)(
            b.support.users, b.support.items, b.support.targets, b.support.mask, b.support.rows
        ),
        b.units,
        b.domains,
    )
    assert task_overlap(leaky) == 20


def test_time_order_support_strictly_before_query():
    # many equal timestamps: ties must never straddle the support/query cut
    rng = np.random.default_rng(0)
    n = 400
    f = pd.DataFrame(
        {
            "user": np.repeat(np.arange(20), 20),
            "item": np.tile(np.arange(20), 20),
            "rating": rng.integers(1, 6, n).astype(float),
            "ts": rng.integers(0, 6, n),
        }
    )
    t = InteractionTable.from_frame(f, Columns(timestamp="ts"))
    pool = build_pool(t, np.arange(len(t)), t.users, "all", "user")
    b = TaskSampler(t, pool, SamplerConfig(4, None, "time"), seed=0).sample(20)
    ts = t.timestamps
    s, q = b.support.rows.numpy(), b.query.rows.numpy()
    for i in range(20):
        sr, qr = s[i][s[i] >= 0], q[i][q[i] >= 0]
        if qr.size:
            assert ts[sr].max() < ts[qr].min()


def test_splits_disjoint_reproducible_and_checks_pass(table):
    a = random_split(table, "user", (0.6, 0.2, 0.2), min_interactions=15, seed=1)
    b = random_split(table, "user", (0.6, 0.2, 0.2), min_interactions=15, seed=1)
    c = random_split(table, "user", (0.6, 0.2, 0.2), min_interactions=15, seed=2)
    assert all(np.array_equal(a.pools[k].units, b.pools[k].units) for k in a.pools)
    assert not np.array_equal(a.pools["meta-test"].units, c.pools["meta-test"].units)
    tr = set(a.pools["meta-train"].units.tolist())
    assert not tr & set(a.pools["meta-val"].units.tolist()) and not tr & set(
        a.pools["meta-test"].units.tolist()
    )
    res, _ = run_leakage_checks(a, SamplerConfig(5, 10))
    assert res and all(v == "passed" for v in res.values())


def test_leakage_check_fails_when_units_overlap(table):
    sp = random_split(table, "user", min_interactions=15, seed=0)
    sp.pools["meta-test"] = sp.pools["meta-train"]  # a deliberately broken split
    res, details = run_leakage_checks(sp, SamplerConfig(5, 10))
    assert res["eval_units_not_in_train"] == "failed" and res["eval_rows_not_in_train"] == "failed"


def test_time_split_orders_units_and_tasks(table):
    sp = time_split(table, "user", min_interactions=15)
    first = {}
    for u, t in zip(table.users, table.timestamps):
        first[u] = min(first.get(u, t), t)
    tr = max(first[u] for u in sp.pools["meta-train"].units)
    te = min(first[u] for u in sp.pools["meta-test"].units)
    assert tr <= te
    res, _ = run_leakage_checks(sp, SamplerConfig(5, 10, "time"))
    assert res["support_before_query"] == "passed"


def test_domain_and_cohort_units(table):
    sp = random_split(table, "domain", (0.5, 0.25, 0.25), min_interactions=20)
    b = TaskSampler(table, sp.pools["meta-train"], SamplerConfig(20, 20), seed=0).sample(2)
    assert b.support.users.unique().numel() > 1  # a domain task spans many users
    spc = random_split(table, "cohort", (0.5, 0.25, 0.25), cohort_by="u_f0", min_interactions=20)
    assert len(spc.pools["meta-train"]) >= 1
    with pytest.raises(
        ConfigError, match=r"cohort_by='u_f9': not a categorical user feature; available: \['u_f0'"
    ):
        random_split(table, "cohort", cohort_by="u_f9")


def _movielens_like(seed=0):
    rng = np.random.default_rng(seed)
    users, items = 200, 120
    rows = [
        (u, i)
        for u in range(users)
        for i in rng.choice(items, size=rng.integers(15, 60), replace=False)
    ]
    f = pd.DataFrame(rows, columns=["user", "item"])
    f["rating"] = rng.integers(1, 6, len(f)).astype(float)
    movies = pd.DataFrame(
        {"item": np.arange(items), "year": rng.integers(1990, 2001, items).astype(str)}
    )
    return InteractionTable.from_frame(
        f, item_features=movies, item_feature_specs=[FeatureSpec("year")]
    )


def test_melu_protocol_states_and_cold_items():
    t = _movielens_like()
    sp = melu_split(t, seed=0)
    assert sp.states == ["warm", "user-cold", "item-cold", "user-item-cold"]
    res, _ = run_leakage_checks(sp, SamplerConfig(None, 10))
    assert all(v == "passed" for v in res.values()) and "cold_items_not_in_train" in res
    q = TaskSampler(t, sp.pools["user-cold"], SamplerConfig(None, 10), seed=0).iterate(1000)[0]
    assert (q.query.sizes() == 10).all()
    years = t.item_features.vocabs["year"].values
    train_items = np.unique(t.items[sp.pools["meta-train"].rows])
    yr = np.array([0] + [int(y) for y in years])[
        t.item_features.categorical["year"][train_items, 0]
    ]
    assert (yr < 1998).all()


def test_cold_domain_users_split_keeps_cold_target_rows_out():
    rng = np.random.default_rng(0)
    rows = []
    for u in range(100):
        for d in ("src", "tgt"):
            for i in rng.choice(50, size=8, replace=False):
                rows.append((u, f"{d}:{i}", d))
    f = pd.DataFrame(rows, columns=["user", "item", "domain"])
    t = InteractionTable.from_frame(f, Columns(rating=None, domain="domain"), feedback="implicit")
    sp = cold_domain_users_split(t, "tgt", beta=0.5, n_query=4, min_interactions=5)
    res, _ = run_leakage_checks(sp, SamplerConfig(2, 4))
    assert all(v == "passed" for v in res.values())
    assert len(sp.pools["meta-test"]) + len(sp.pools["meta-val"]) == 50


def test_implicit_negatives_exclude_known_positives():
    t = make_synthetic(n_domains=2, n_users=30, n_items=40, feedback="implicit", seed=0)
    pool = build_pool(t, np.arange(len(t)), t.users, "all", "user", min_interactions=15)
    b = TaskSampler(t, pool, SamplerConfig(5, 5, negatives=4), seed=0).sample(30)
    pos = set(zip(t.users.tolist(), t.items.tolist()))
    m = b.support.mask & (b.support.targets == 0)
    negs = list(zip(b.support.users[m].tolist(), b.support.items[m].tolist()))
    assert len(negs) > 0.9 * 30 * 5 * 4 and not any(p in pos for p in negs)
    assert int((b.query.mask & (b.query.targets == 1)).sum()) == 30 * 5


def test_negatives_from_pool_never_leave_the_pools_items():
    """Meta-training draws negatives from its own rows' items; evaluation from the catalogue."""
    t = make_synthetic(n_domains=2, n_users=60, n_items=80, feedback="implicit", seed=0)
    train_rows = np.nonzero(t.users <= 30)[0]  # the other users' rows are "held out"
    pool = build_pool(t, train_rows, t.users, "meta-train", "user", min_interactions=10)
    allowed = set(t.items[train_rows].tolist())
    held_out_only = set(t.items.tolist()) - allowed
    assert held_out_only  # the test needs items that only held-out rows contain
    seen = {}
    for src in ("pool", "catalogue"):
        b = TaskSampler(
            t, pool, SamplerConfig(5, 5, negatives=4, negatives_from=src), seed=0
        ).sample(64)
        m = b.support.mask & (b.support.targets == 0)
        seen[src] = set(b.support.items[m].tolist())
        assert int(m.sum()) > 0.9 * 64 * 5 * 4
    assert seen["pool"] <= allowed
    assert seen["catalogue"] & held_out_only


def test_sampler_config_errors():
    with pytest.raises(
        ConfigError,
        match=r"n_support=0: each task needs at least one support interaction; pass n_support >= 1",
    ):
        SamplerConfig(n_support=0)
    with pytest.raises(ConfigError, match=r"n_query=0"):
        SamplerConfig(n_query=0)
    t = make_synthetic(n_domains=1, n_users=20, n_items=30, seed=0)
    pool = build_pool(t, np.arange(len(t)), t.users, "all", "user")
    with pytest.raises(
        ConfigError, match=r"negatives=2: sampled negatives are for implicit feedback"
    ):
        TaskSampler(t, pool, SamplerConfig(negatives=2))
    with pytest.raises(
        ConfigError,
        match=r"negatives_from='train': must be 'catalogue' \(every item of the domain\) or 'pool'",
    ):
        SamplerConfig(negatives_from="train")  # type: ignore[arg-type]
