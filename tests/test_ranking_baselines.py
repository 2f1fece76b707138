"""The ranking baselines (metarec.methods.ranking): float64 references of each core computation,
the interface (fit on meta-train, tune on meta-val, adapt with no gradient step, save/load), and
a planted-taste scenario where opposite supports get different lists."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.config import scenario_from_dict
from metarec.data.features import FeatureSpec
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.build import build_splits, sampler_config
from metarec.methods import FitData, build_fitted, build_method
from metarec.methods.catalogue import evaluate_ranking, score_catalogue
from metarec.methods.ranking import _itemitem as ii
from metarec.methods.ranking import content_similarity, ease_weights, fold_in, ials
from metarec.methods.ranking import mf_foldin as mf

# ---------------------------------------------------------------------------- core computations


def test_ease_solve_by_hand_and_against_the_formula():
    # X = [[1, 1], [1, 0]] -> G = [[2, 1], [1, 1]]; lambda = 1: P = (G + I)^-1 = [[.4, -.2], [-.2, .6]]
    # B_01 = -P_01 / P_11 = 1/3, B_10 = -P_10 / P_00 = 1/2, zero diagonal
    b = ease_weights(np.array([[2.0, 1.0], [1.0, 1.0]]), 1.0)
    assert b.dtype == np.float64
    np.testing.assert_allclose(b, [[0.0, 1 / 3], [0.5, 0.0]], atol=1e-15)
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(np.float64)
    g = x.T @ x
    lam = 7.0
    p = np.linalg.inv(g + lam * np.eye(12))
    want = np.eye(12) - p @ np.diag(1.0 / np.diag(p))  # B = I - P diag(1/diag(P))
    np.testing.assert_allclose(ease_weights(g, lam), want, atol=1e-12)
    # B minimises ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0: the gradient is -2 (G - G B - lambda B)
    # off the diagonal, which must vanish
    bb = ease_weights(g, lam)
    grad = g - g @ bb - lam * bb
    np.testing.assert_allclose(grad - np.diag(np.diag(grad)), 0.0, atol=1e-10)


def test_itemknn_similarity_by_hand_dense_and_sparse_paths():
    # users: u0 {0, 1}, u1 {0, 1, 2}, u2 {1, 2}; co-counts: (0,1) 2, (0,2) 1, (1,2) 2; norms sqrt2, sqrt3, sqrt2
    users = np.array([0, 0, 1, 1, 1, 2, 2])
    cols = np.array([0, 1, 0, 1, 2, 1, 2])
    h = 1.0
    want = {
        (0, 1): 2 / (math.sqrt(2) * math.sqrt(3) + h),
        (0, 2): 1 / (2 + h),
        (1, 2): 2 / (math.sqrt(3) * math.sqrt(2) + h),
    }
    for dense_items in (10, 0):  # the dense Gram path and the sorted-pairs path
        norms, out = ii.cosine_topk(users, cols, 3, (h,), 2, dense_items=dense_items)
        np.testing.assert_allclose(norms, [math.sqrt(2), math.sqrt(3), math.sqrt(2)])
        off, nbr, sim = out[h]
        got = {
            (i, int(j)): float(s)
            for i in range(3)
            for j, s in zip(nbr[off[i] : off[i + 1]], sim[off[i] : off[i + 1]])
        }
        for (a, b), v in want.items():
            assert got[(a, b)] == pytest.approx(v, abs=1e-15) and got[(b, a)] == pytest.approx(
                v, abs=1e-15
            )
        # best first: item 0's neighbours are 1 (0.69) then 2 (0.33)
        assert nbr[off[0] : off[1]].tolist() == [1, 2]


def test_gram_paths_agree(monkeypatch):
    rng = np.random.default_rng(3)
    users = rng.integers(0, 50, 400)
    cols = rng.integers(0, 30, 400)
    dense = ii.gram_dense(users, cols, 30)
    x = np.zeros((50, 30))
    x[users, cols] = 1.0
    np.testing.assert_array_equal(dense, x.T @ x)
    monkeypatch.setattr(ii, "_PAIR_CHUNK", 7)  # many small chunks of rows
    i, j, c = ii.gram_pairs(users, cols, 30)
    g = np.zeros((30, 30))
    g[i, j] = c
    np.testing.assert_array_equal(g, (x.T @ x) - np.diag(np.diag(x.T @ x)))


def test_itemknn_scores_sum_the_neighbourhood_similarities():
    users = np.array([0, 0, 1, 1, 1, 2, 2])
    cols = np.array([0, 1, 0, 1, 2, 1, 2])
    _, out = ii.cosine_topk(users, cols, 3, (0.0,), 1)
    off, c, v = ii.neighbours_by_source(out[0.0], 1)
    # K = 1: N(0) = {1}; N(1) = {0} (sim(1,0) = sim(1,2) = 2/sqrt6: the lower index); N(2) = {1}
    rows = ii.sum_sparse_rows(
        torch.tensor([0, 1]), torch.tensor([1, 2]), 2, off, c, v, 3, torch.float64
    )
    s01 = 2 / math.sqrt(6)
    # task 0 (support {1}): item 0 scores sim(0,1) (1 is 0's neighbour), item 2 scores sim(2,1)
    np.testing.assert_allclose(rows[0].numpy(), [s01, 0.0, s01], atol=1e-15)
    # task 1 (support {2}): item 2 is in no item's neighbourhood, so every score is 0
    np.testing.assert_allclose(rows[1].numpy(), [0.0, 0.0, 0.0], atol=1e-15)


def test_fold_in_against_the_formula_float64():
    rng = np.random.default_rng(0)
    v = torch.from_numpy(rng.normal(size=(9, 4)))
    task = torch.tensor([0, 0, 0, 1])
    item = torch.tensor([1, 4, 7, 2])
    alpha, reg = 3.0, 0.5
    u = fold_in(v, task, item, 3, alpha, reg)
    V = v.numpy()
    for t, items in ((0, [1, 4, 7]), (1, [2])):
        vs = V[items]
        a = V.T @ V + alpha * vs.T @ vs + reg * np.eye(4)
        want = np.linalg.solve(a, (1 + alpha) * vs.sum(axis=0))
        np.testing.assert_allclose(u[t].numpy(), want, atol=1e-12)
        # it minimises sum_i c_i (p_i - u.v_i)^2 + reg ||u||^2 over the task's row
        p = np.zeros(9)
        p[items] = 1.0
        c = 1 + alpha * p
        grad = -2 * (c * (p - V @ want)) @ V + 2 * reg * want
        np.testing.assert_allclose(grad, 0.0, atol=1e-10)
    assert u[2].abs().max().item() == 0.0  # no support: zero vector


@pytest.mark.parametrize("dense_cells", [10**9, 0])
def test_ials_cg_half_step_converges_to_the_exact_als_solve(dense_cells, monkeypatch):
    monkeypatch.setattr(mf, "DENSE_CELLS", dense_cells)
    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(0, 12, 60) * 15 + rng.integers(0, 15, 60))
    rows, cols = torch.from_numpy(keys // 15), torch.from_numpy(keys % 15)
    fixed = torch.from_numpy(rng.normal(size=(15, 3)))
    x0 = torch.zeros(12, 3, dtype=torch.float64)
    got = mf._cg_half(fixed, x0, rows, cols, 2.0, 0.3, steps=30)
    F = fixed.numpy()
    for r in range(12):
        items = cols[rows == r].numpy()
        a = F.T @ F + 2.0 * F[items].T @ F[items] + 0.3 * np.eye(3)
        want = np.linalg.solve(a, 3.0 * F[items].sum(axis=0)) if items.size else np.zeros(3)
        np.testing.assert_allclose(got[r].numpy(), want, atol=1e-9)


def test_ials_lowers_its_loss_and_the_two_paths_agree(monkeypatch):
    rng = np.random.default_rng(2)
    keys = np.unique(rng.integers(0, 30, 300) * 40 + rng.integers(0, 40, 300))
    r, c = keys // 40, keys % 40

    def loss(u, v, alpha=2.0, reg=1.0):
        p = np.zeros((30, 40))
        p[r, c] = 1.0
        pred = u.double().numpy() @ v.double().numpy().T
        return float(
            ((1 + alpha * p) * (p - pred) ** 2).sum() + reg * ((u**2).sum() + (v**2).sum())
        )

    u1, v1 = ials(
        r, c, 30, 40, factors=4, alpha=2.0, reg=1.0, iterations=1, cg_steps=3, dtype=torch.float64
    )
    u5, v5 = ials(
        r, c, 30, 40, factors=4, alpha=2.0, reg=1.0, iterations=6, cg_steps=3, dtype=torch.float64
    )
    assert loss(u5, v5) < loss(u1, v1)
    monkeypatch.setattr(mf, "DENSE_CELLS", 0)
    u5s, v5s = ials(
        r, c, 30, 40, factors=4, alpha=2.0, reg=1.0, iterations=6, cg_steps=3, dtype=torch.float64
    )
    torch.testing.assert_close(v5s, v5, atol=1e-10, rtol=0)


def _feature_table():
    frame = pd.DataFrame(
        {"user": [1, 1, 2, 2], "item": ["a", "b", "c", "d"], "rating": [5, 4, 3, 4]}
    )
    feats = pd.DataFrame(
        {
            "item": ["a", "b", "c", "d"],
            "genre": ["x|y", "x", "z", "x|z"],
            "year": ["1990", "1990", "2000", "1990"],
        }
    )
    specs = [FeatureSpec("genre", kind="multi"), FeatureSpec("year")]
    return InteractionTable.from_frame(frame, item_features=feats, item_feature_specs=specs)


def test_content_similarity_by_hand():
    t = _feature_table()
    items = np.unique(t.items)  # a, b, c, d in index order
    sim = content_similarity(t, items, idf=False).numpy()
    # blocks (each L2-normalised): genre a=(1,1,0)/sqrt2, b=(1,0,0), c=(0,0,1), d=(1,0,1)/sqrt2;
    # year: a,b,d=1990, c=2000
    # concatenated norm sqrt2 for every item; sim = (genre dot + year dot) / 2
    g = {
        "a": np.array([1, 1, 0]) / math.sqrt(2),
        "b": np.array([1, 0, 0]),
        "c": np.array([0, 0, 1]),
        "d": np.array([1, 0, 1]) / math.sqrt(2),
    }
    y = {"a": 0, "b": 0, "c": 1, "d": 0}
    names = "abcd"
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            want = (g[a] @ g[b] + float(y[a] == y[b])) / 2
            assert sim[i, j] == pytest.approx(want, abs=1e-15), (a, b)
    # IDF: genre x is on 3 of 4 items, y and z on fewer: rarer shared values weigh more
    sim_idf = content_similarity(t, items, idf=True).numpy()
    assert sim_idf.dtype == np.float64 and sim_idf[0, 3] != pytest.approx(sim[0, 3])


# ------------------------------------------------------------------- planted tastes, interface


def planted_table(seed: int = 0, n_users: int = 240, n_items: int = 120) -> InteractionTable:
    """Two groups of users with opposite tastes. Items form 6 clusters of 20; group 0 likes
    clusters 0-2, group 1 clusters 3-5. A user rates 16 items of a primary cluster of their group
    and 6 of their group's other clusters (all 5 stars): no item is more popular than another by
    design, so only the support tells which items a user likes."""
    rng = np.random.default_rng(seed)
    size = n_items // 6
    rows = []
    for u in range(n_users):
        g = u % 2
        mine = [3 * g + k for k in range(3)]
        primary = mine[rng.integers(3)]
        own = rng.choice(size, size=16, replace=False) + primary * size
        rest = np.concatenate([np.arange(size) + c * size for c in mine if c != primary])
        other = rng.choice(rest, size=6, replace=False)
        rows += [(f"u{u}", f"i{i}", 5.0) for i in np.concatenate([own, other])]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating"])
    return InteractionTable.from_frame(frame)


def ranking_scenario(**learners):
    return scenario_from_dict(
        {
            "name": "planted",
            "protocol": {
                "ranking": True,
                "split": "random",
                "support_pool": 10,
                "n_support": 5,
                "min_interactions": 11,
                "max_interactions": "none",
                "n_query": 5,
            },
            "train": {"val_tasks": 64},
            "bench": {"shots": [1, 5, 10]},
            "learners": learners,
        }
    )


SMALL = {
    "itemknn": {"neighbours": [20, 50], "shrinks": [0.0, 10.0]},
    "ease": {"lambdas": [10.0, 100.0]},
    "mf-foldin": {"alphas": [2.0], "regs": [1.0, 10.0], "factors": 8, "iterations": 4},
}


@pytest.fixture(scope="module")
def planted():
    t = planted_table(0)
    sc = ranking_scenario(**SMALL)
    return t, sc, build_splits(t, sc.protocol)


def _group_of(t, users):
    raw = t.user_ids.decode(np.asarray(users)) if hasattr(t, "user_ids") else users
    return np.array([int(str(u)[1:]) % 2 for u in raw])


@pytest.mark.parametrize("name", ["ease", "itemknn"])
def test_opposite_supports_get_lists_that_overlap_at_most_3_of_10(planted, name):
    t, sc, splits = planted
    fitted = build_method(name, sc).fit(FitData(t, splits, seed=0))
    pool = splits.pools["meta-test"]
    from metarec.episodes.sampler import TaskSampler

    b = TaskSampler(t, pool, sampler_config(sc.protocol), seed=0).batch(np.arange(len(pool)))
    items = torch.from_numpy(np.unique(t.items))
    scores = score_catalogue(fitted.adapt(b.support), items)
    scores[
        b.support.mask.nonzero(as_tuple=True)[0],
        torch.searchsorted(items, b.support.items[b.support.mask]),
    ] = -torch.inf
    top = torch.topk(scores, 10, dim=1).indices.numpy()
    groups = _group_of(t, b.units.numpy())
    a, z = np.flatnonzero(groups == 0), np.flatnonzero(groups == 1)
    assert a.size >= 5 and z.size >= 5
    worst = max(len(set(top[i]) & set(top[j])) for i in a for j in z)
    assert worst <= 3, f"{name}: opposite users share up to {worst} of their top-10"


@pytest.mark.parametrize("name", ["ease", "itemknn", "mf-foldin"])
def test_baselines_beat_popularity_on_planted_tastes_over_seeds(name):
    wins = []
    for seed in (0, 1, 2):
        t = planted_table(seed)
        sc = ranking_scenario(**SMALL)
        splits = build_splits(t, sc.protocol)
        res = {}
        for m in (name, "popularity"):
            f = build_method(m, sc).fit(FitData(t, splits, seed=seed))
            res[m] = evaluate_ranking(
                f, t, splits, "meta-test", sampler_config(sc.protocol), seed=seed
            )["ndcg@10_all"]
        wins.append(res[name] - res["popularity"])
    assert all(w > 0.1 for w in wins), wins


@pytest.mark.parametrize("name", ["ease", "itemknn", "mf-foldin", "popularity"])
def test_fit_adapt_save_load_and_both_scoring_paths_agree(planted, name):
    t, sc, splits = planted
    fitted = build_method(name, sc).fit(FitData(t, splits, seed=0))
    from metarec.episodes.sampler import TaskSampler

    b = TaskSampler(t, splits.pools["meta-test"], sampler_config(sc.protocol), seed=0).batch(
        np.arange(6)
    )
    adapted = fitted.adapt(b.support)
    items = torch.arange(t.n_items)
    fast = score_catalogue(adapted, items)
    users = b.query.users[:, 0]
    slow = score_catalogue(
        adapted.score, items, users
    )  # the bound score: its object has the fast path
    torch.testing.assert_close(fast, slow)
    expanded = adapted.score(
        users.unsqueeze(1).expand(-1, t.n_items), items.unsqueeze(0).expand(6, -1)
    )
    torch.testing.assert_close(fast.double(), expanded.double(), atol=1e-5, rtol=1e-5)
    # a different support moves the scores (no gradient step: the support is read)
    if name != "popularity":
        other = fitted.adapt(
            EpisodeSet(
                b.support.users, b.support.items.roll(1, 0), b.support.targets, b.support.mask
            )
        )
        assert not torch.allclose(score_catalogue(other, items), fast)
    # save / load: the registered loader rebuilds a shell that the state fills
    shell = build_fitted(name, fitted.config(), t)
    shell.load_state_dict(fitted.state_dict())
    torch.testing.assert_close(score_catalogue(shell.adapt(b.support), items), fast)
    if name != "popularity":
        assert fitted.config()["tuning"]["pool"] == "meta-val"
        assert adapted.score_kind == "rank"


def test_load_state_dict_refuses_another_catalogue(planted):
    t, sc, splits = planted
    fitted = build_method("ease", sc).fit(FitData(t, splits))
    bad = dict(fitted.state_dict())
    bad["weights"] = bad["weights"][:-1]
    shell = build_fitted("ease", fitted.config(), t)
    with pytest.raises(CheckpointError, match="'weights' has shape"):
        shell.load_state_dict(bad)


@pytest.mark.parametrize(
    ("name", "settings", "match"),
    [
        ("ease", {"lambdas": []}, r"learners.ease.lambdas=\[\]: give at least one value"),
        ("ease", {"lambdas": [0.0]}, r"learners.ease.lambdas=\[0.0\]: 0.0 is not > 0"),
        (
            "ease",
            {"max_items": 60000},
            r"max_items=60000: the dense EASE solve needs about .* itemknn",
        ),
        ("itemknn", {"shrinks": [-1.0]}, r"learners.itemknn.shrinks=\[-1.0\]: -1.0 is not >= 0"),
        ("itemknn", {"neighbors": [5]}, r"neighbors"),
        ("mf-foldin", {"factors": 0}, r"learners.mf-foldin.factors=0: must be >= 1"),
        ("popularity", {"by": "median"}, r"learners.popularity.by='median': must be one of"),
    ],
)
def test_settings_errors(name, settings, match):
    with pytest.raises(ConfigError, match=match):
        build_method(name, ranking_scenario(), **settings)


def test_content_knn_refuses_a_table_without_features(planted):
    t, sc, splits = planted
    with pytest.raises(ConfigError, match="content-knn: the table has no item features"):
        build_method("content-knn", sc).fit(FitData(t, splits))


def test_popularity_counts_in_ranking_scenarios_and_keeps_the_mean_for_rating_ones(planted):
    t, sc, splits = planted
    assert build_method("popularity", sc).fit(FitData(t, splits)).by == "count"
    rating = scenario_from_dict({"name": "r"})
    assert build_method("popularity", rating).fit(FitData(t, splits)).by == "mean"
    assert build_method("popularity", rating, by="count").fit(FitData(t, splits)).by == "count"


# ------------------------------------------------------------------------------ references


def test_itemknn_matches_a_numpy_float64_reference(planted):
    """The whole pipeline against a direct numpy computation: shrunk cosine over meta-train,
    each item's top-K neighbours (ties: lower index), score = sum over the support."""
    t, sc, splits = planted
    fitted = build_method("itemknn", sc, neighbours=[7], shrinks=[3.0]).fit(FitData(t, splits))
    rows = splits.pools["meta-train"].rows
    n = t.n_items
    x = np.zeros((t.n_users, n))
    x[t.users[rows], t.items[rows]] = 1.0
    g = x.T @ x
    norms = np.sqrt(np.diag(g))
    sim = g / (np.outer(norms, norms) + 3.0)
    np.fill_diagonal(sim, 0.0)
    w = np.zeros((n, n))  # w[j, i] = sim(i, j) for j in N_7(i)
    for i in range(n):
        order = sorted(range(n), key=lambda j: (-sim[i, j], j))[:7]
        for j in order:
            if sim[i, j] > 0:
                w[j, i] = sim[i, j]
    from metarec.episodes.sampler import TaskSampler

    b = TaskSampler(t, splits.pools["meta-test"], sampler_config(sc.protocol), seed=0).batch(
        np.arange(8)
    )
    got = score_catalogue(fitted.adapt(b.support), torch.arange(n)).double().numpy()
    for k in range(8):
        sup = b.support.items[k][b.support.mask[k]].numpy()
        np.testing.assert_allclose(got[k], w[sup].sum(axis=0), atol=1e-6)


def test_ease_matches_cornac(planted):
    """Peer oracle: cornac 3.0.1's EASE (posB=False) on the same meta-train interactions gives the
    same B (float64, to 1e-9) and the same scores for cold users' supports (float32 storage)."""
    cornac = pytest.importorskip("cornac", reason="the peer oracle needs the dev extra (cornac)")
    from cornac.data import Dataset
    from cornac.models import EASE

    t, sc, splits = planted
    lam = 37.0
    fitted = build_method("ease", sc, lambdas=[lam]).fit(FitData(t, splits))
    kept = fitted.items.numpy()
    rows = splits.pools["meta-train"].rows
    triples = sorted(
        {(f"u{u}", f"i{i}", 1.0) for u, i in zip(t.users[rows], t.items[rows]) if i in set(kept)}
    )
    peer = EASE(lamb=lam, posB=False, verbose=False).fit(Dataset.from_uir(triples, seed=0))
    ds = peer.train_set
    order = np.array([ds.iid_map[f"i{i}"] for i in kept])
    b_peer = peer.B[np.ix_(order, order)]
    x = np.zeros((len(set(u for u, _, _ in triples)), kept.shape[0]))
    for u, i, _ in triples:
        x[ds.uid_map[u], np.searchsorted(kept, int(i[1:]))] = 1.0
    np.testing.assert_allclose(ease_weights(x.T @ x, lam), b_peer, atol=1e-9)
    from metarec.episodes.sampler import TaskSampler

    b = TaskSampler(t, splits.pools["meta-test"], sampler_config(sc.protocol), seed=0).batch(
        np.arange(10)
    )
    got = score_catalogue(fitted.adapt(b.support), torch.from_numpy(kept)).double().numpy()
    for k in range(10):
        sup = np.searchsorted(kept, b.support.items[k][b.support.mask[k]].numpy())
        want = np.zeros(kept.shape[0])
        want[sup] = 1.0
        np.testing.assert_allclose(got[k], want @ b_peer, atol=1e-5, rtol=1e-5)
    assert cornac.__version__ == "3.0.1"
