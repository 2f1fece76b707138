"""``elae``: the closed-form k-shot moments against exact enumeration, the ridge solve, selection
on meta-val, adaptation, save/load, and ranking on planted tastes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.algorithms.kshot import kshot_moments, solve_ridge
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.splits import random_split
from metarec.methods import FitData, build_fitted, build_method
from metarec.methods.learners.elae import ElaeSettings, catalogue_ndcg, make_elae

pytestmark = pytest.mark.usefixtures("f64")


def _enumerated(X: torch.Tensor, T: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """E[sum_u z z'] and E[sum_u z y'] by listing every k-subset of every user's items."""
    U, m = X.shape
    A = torch.zeros(m + 1, m + 1, dtype=torch.float64)
    C = torch.zeros(m + 1, m, dtype=torch.float64)
    for u in range(U):
        items = torch.nonzero(X[u]).flatten().tolist()
        subsets = list(itertools.combinations(items, min(k, len(items))))
        for S in subsets:
            z = torch.zeros(m + 1, dtype=torch.float64)
            z[list(S)] = 1.0
            z[m] = 1.0
            y = T[u].clone()
            y[list(S)] = 0.0
            A += torch.outer(z, z) / len(subsets)
            C += torch.outer(z, y) / len(subsets)
    return A, C


@pytest.mark.parametrize("k", [1, 2, 3])
def test_moments_equal_the_exact_expectation_over_every_support(k):
    g = torch.Generator().manual_seed(k)
    X = (torch.rand(6, 7, generator=g) < 0.55).double()
    X[0] = 0.0
    X[0, :2] = 1.0  # a user with fewer items than k=3 keeps them all
    T = X * (torch.rand(6, 7, generator=g) < 0.6).double()
    A, C = kshot_moments(X, T, k, chunk=4)  # chunked over users: the same sums
    A_ref, C_ref = _enumerated(X, T, k)
    torch.testing.assert_close(A, A_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(C, C_ref, rtol=1e-12, atol=1e-12)


def test_solve_minimises_the_expected_objective():
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(20, 8, generator=g) < 0.5).double()
    T = X * (torch.rand(20, 8, generator=g) < 0.7).double()
    A, C = kshot_moments(X, T, 2)
    B = solve_ridge(A, C, 0.5)
    # the gradient of E||y - zB||^2 + lam ||B||^2 is 2 (A B - C + lam B): zero at the solution
    grad = A @ B - C + 0.5 * B
    assert float(grad.abs().max()) < 1e-10
    with pytest.raises(ConfigError, match="not positive definite; raise the ridge strength"):
        solve_ridge(-torch.eye(3, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64), 0.5)


def test_catalogue_ndcg_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    exclude = torch.tensor([[True, False, False, False], [False, False, False, False]])
    relevant = torch.tensor([[True, False, True, False], [False, False, False, False]])
    nd = catalogue_ndcg(scores, exclude, relevant, k=2)
    # row 0: item 0 excluded; top-2 = items 1, 2; relevant candidate = item 2 at rank 2
    assert nd[0].item() == pytest.approx((1 / math.log2(3)) / 1.0)
    assert math.isnan(nd[1].item())  # no relevant candidate


def _planted(seed: int, n_users: int = 240, n_items: int = 40) -> InteractionTable:
    """Two taste groups: group-0 users interact with items 0..19, group-1 with 20..39 (and a few
    popular items of the other half); ratings 5 in the own half, 2 elsewhere."""
    rng = np.random.default_rng(seed)
    u, i, r = [], [], []
    for user in range(n_users):
        g = user % 2
        own = np.arange(20) + 20 * g
        other = np.arange(20) + 20 * (1 - g)
        picks = rng.choice(own, size=10, replace=False)
        pops = rng.choice(other[:3], size=2, replace=False)
        for it in picks:
            u.append(user), i.append(int(it)), r.append(5.0)
        for it in pops:
            u.append(user), i.append(int(it)), r.append(2.0)
    import pandas as pd

    df = pd.DataFrame({"user": u, "item": i, "rating": r})
    return InteractionTable.from_frame(
        df, Columns(user="user", item="item", rating="rating"), rating_scale=(1.0, 5.0)
    )


def _fit(table: InteractionTable, seed: int, **settings):
    splits = random_split(
        table, fractions=(0.6, 0.2, 0.2), n_query=5, min_interactions=5, seed=seed
    )
    method = make_elae(None, shots=(1, 3), val_tasks=40, **settings)
    return method.fit(FitData(table, splits, seed=seed)), splits


def _support(table: InteractionTable, user_ids: list[int], item_ids: list[list[int]]) -> EpisodeSet:
    n = max(len(x) for x in item_ids)
    users = torch.zeros(len(user_ids), n, dtype=torch.long)
    items = torch.zeros(len(user_ids), n, dtype=torch.long)
    mask = torch.zeros(len(user_ids), n, dtype=torch.bool)
    for t, its in enumerate(item_ids):
        items[t, : len(its)] = torch.as_tensor(table.item_ids.encode([str(x) for x in its]))
        mask[t, : len(its)] = True
    return EpisodeSet(users, items, torch.full(items.shape, 5.0), mask)


def test_opposite_supports_get_personal_top10_lists():
    table = _planted(0)
    fitted, _ = _fit(table, 0)
    sup = _support(table, [0, 1], [[5, 6, 7], [25, 26, 27]])
    scores = fitted.adapt(sup).score_catalogue(torch.arange(table.n_items))
    scores[0, sup.items[0]] = -math.inf
    scores[1, sup.items[1]] = -math.inf
    top = torch.topk(scores, 10, dim=1).indices
    overlap = len(set(top[0].tolist()) & set(top[1].tolist()))
    assert overlap <= 3, overlap
    ids = table.item_ids.decode(top[0].numpy())
    assert sum(int(x) < 20 for x in ids) >= 8  # group 0's own half


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beats_popularity_on_meta_test_over_seeds(seed):
    table = _planted(seed)
    fitted, splits = _fit(table, seed)
    pool = splits.pools[splits.states[0]]
    relevant_rows = table.ratings >= 4
    ours, pops = [], []
    counts = torch.from_numpy(
        np.bincount(table.items[splits.pools[splits.train].rows], minlength=table.n_items)
    ).double()
    rng = np.random.default_rng(seed)
    for j in range(len(pool)):
        rows = pool.unit_rows(j)
        order = rng.permutation(len(rows))
        sup, qry = rows[order[:3]], rows[order[3:]]
        s = EpisodeSet(
            torch.zeros(1, 3, dtype=torch.long),
            torch.from_numpy(table.items[sup])[None],
            torch.from_numpy(table.ratings[sup])[None],
            torch.ones(1, 3, dtype=torch.bool),
        )
        sc = fitted.adapt(s).score_catalogue(torch.arange(table.n_items)).double()
        ex = torch.zeros(1, table.n_items, dtype=torch.bool)
        ex[0, table.items[sup]] = True
        ex[0, 0] = True  # the unknown-item slot
        rel = torch.zeros(1, table.n_items, dtype=torch.bool)
        rel[0, table.items[qry][relevant_rows[qry]]] = True
        ours.append(catalogue_ndcg(sc, ex, rel)[0].item())
        pops.append(catalogue_ndcg(counts[None], ex, rel)[0].item())
    assert np.nanmean(ours) > np.nanmean(pops) + 0.2


def test_save_load_and_shape_errors():
    table = _planted(0)
    fitted, _ = _fit(table, 0)
    shell = build_fitted("elae", fitted.config(), table)
    shell.load_state_dict(fitted.state_dict())
    sup = _support(table, [0], [[0, 5, 7]])
    torch.testing.assert_close(
        shell.adapt(sup).score_catalogue(torch.arange(table.n_items)),
        fitted.adapt(sup).score_catalogue(torch.arange(table.n_items)),
    )
    bad = dict(fitted.state_dict())
    bad["B.3"] = bad["B.3"][:, :-1]
    with pytest.raises(CheckpointError, match="'B.3' has shape .* belong to another run"):
        shell.load_state_dict(bad)


def test_settings_errors():
    with pytest.raises(ConfigError, match=r"shots=\[0\]: each support size must be >= 1"):
        ElaeSettings(shots=(0,))
    with pytest.raises(ConfigError, match="give at least one finite ridge strength > 0"):
        ElaeSettings(lambdas=(0.0,))
    assert build_method("elae", None).name == "elae"


def _enumerated_with_history(X, T, H, k):
    U, m = X.shape
    h = H.shape[1]
    d = h + m + 1
    A = torch.zeros(d, d, dtype=torch.float64)
    C = torch.zeros(d, m, dtype=torch.float64)
    for u in range(U):
        items = torch.nonzero(X[u]).flatten().tolist()
        subsets = list(itertools.combinations(items, min(k, len(items))))
        for S in subsets:
            z = torch.zeros(d, dtype=torch.float64)
            z[:h] = H[u]
            z[[h + i for i in S]] = 1.0
            z[-1] = 1.0
            y = T[u].clone()
            y[list(S)] = 0.0
            A += torch.outer(z, z) / len(subsets)
            C += torch.outer(z, y) / len(subsets)
    return A, C


@pytest.mark.parametrize("k", [1, 2])
def test_moments_with_a_history_block_equal_exact_enumeration(k):
    g = torch.Generator().manual_seed(10 + k)
    X = (torch.rand(5, 6, generator=g) < 0.6).double()
    T = X * (torch.rand(5, 6, generator=g) < 0.6).double()
    H = (torch.rand(5, 4, generator=g) < 0.5).double()
    A, C = kshot_moments(X, T, k, H, chunk=2)
    A_ref, C_ref = _enumerated_with_history(X, T, H, k)
    torch.testing.assert_close(A, A_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(C, C_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match=r"H \(4, 4\): expected one history row per user"):
        kshot_moments(X, T, k, H[:4])


@pytest.mark.parametrize("sparse", [False, True])
def test_projected_moments_equal_the_projection_of_the_dense_ones(sparse):
    from metarec.algorithms.kshot import kshot_moments_projected

    g = torch.Generator().manual_seed(3)
    X = (torch.rand(9, 7, generator=g) < 0.5).double()
    T = X * (torch.rand(9, 7, generator=g) < 0.6).double()
    H = (torch.rand(9, 5, generator=g) < 0.4).double()
    P = torch.randn(7, 3, generator=g, dtype=torch.float64)
    Ph = torch.randn(5, 2, generator=g, dtype=torch.float64)
    A, C = kshot_moments(X, T, 2, H)
    D = torch.block_diag(Ph, P, torch.ones(1, 1, dtype=torch.float64))  # (h + m + 1, r_h + r + 1)
    Xs, Ts, Hs = (x.to_sparse() if sparse else x for x in (X, T, H))
    Ar, Cr = kshot_moments_projected(Xs, Ts, 2, P, Hs, Ph)
    torch.testing.assert_close(Ar, D.T @ A @ D, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Cr, D.T @ C, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="pass both"):
        kshot_moments_projected(Xs, Ts, 2, P, Hs, None)


def test_low_rank_model_ranks_planted_tastes_and_round_trips():
    table = _planted(1)
    fitted, _ = _fit(table, 1, rank=4)
    assert fitted.config()["rank"] == 4 and fitted.P is not None
    sup = _support(table, [0, 1], [[5, 6, 7], [25, 26, 27]])
    scores = fitted.adapt(sup).score_catalogue(torch.arange(table.n_items))
    scores[0, sup.items[0]] = -math.inf
    scores[1, sup.items[1]] = -math.inf
    top = torch.topk(scores, 10, dim=1).indices
    assert len(set(top[0].tolist()) & set(top[1].tolist())) <= 3
    shell = build_fitted("elae", fitted.config(), table)
    shell.load_state_dict(fitted.state_dict())
    torch.testing.assert_close(
        shell.adapt(sup).score_catalogue(torch.arange(table.n_items)),
        fitted.adapt(sup).score_catalogue(torch.arange(table.n_items)),
    )
