"""Pieces of the serving kernels: the stable top-k, the two-tower kernel's written-out gradient
(float64 against autograd, mse and bce), and the finite-row check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_serve_engine import TWO_TOWER, _f64, runs, train_small  # noqa: F401

from metarec.metrics.topk import top_k
from metarec.recommend.load import load_run
from metarec.serve.kernels import Kernel, TwoTowerKernel, _finite_rows


def test_top_k_equals_a_stable_descending_sort() -> None:
    g = torch.Generator().manual_seed(0)
    for t in range(400):
        c = int(torch.randint(1, 40, (1,), generator=g)) + (3000 if t % 2 else 0)
        k = int(torch.randint(1, 45, (1,), generator=g))
        # few distinct values: ties everywhere, across the cut too
        x = torch.randint(0, 5, (6, c), generator=g).double()
        x[torch.rand(6, c, generator=g) < 0.2] = -torch.inf
        x[1, torch.rand(c, generator=g) < 0.2] = torch.inf
        if t % 3 == 0:
            x[2, torch.rand(c, generator=g) < 0.3] = torch.nan
        vals, cols = top_k(x, k)
        want_vals, want_cols = torch.sort(x, dim=1, descending=True, stable=True)
        assert torch.equal(cols, want_cols[:, :k])
        torch.testing.assert_close(vals, want_vals[:, :k], equal_nan=True, rtol=0, atol=0)


def test_top_k_refuses_a_vector() -> None:
    with pytest.raises(ValueError, match=r"expected a \(B, C\) tensor"):
        top_k(torch.ones(5), 2)


def test_finite_rows_is_exact_when_a_finite_row_overflows_its_sum() -> None:
    big = torch.finfo(torch.float32).max
    x = torch.tensor(
        [[big, big, 0.0], [1.0, torch.nan, 2.0], [1.0, 2.0, 3.0], [-torch.inf, 0.0, 0.0]]
    )
    assert torch.isinf(x[0].sum())  # the fast test alone would call row 0 non-finite
    assert _finite_rows(x).tolist() == [True, False, True, False]


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_two_tower_gradient_equals_autograd_in_float64(runs, loss) -> None:  # noqa: F811
    meta = load_run(runs["two_tower"])
    meta = _f64(meta, dataclasses.replace(meta.algo, loss=loss))
    kern = TwoTowerKernel(meta)
    rng = np.random.default_rng(0)
    n_items = len(meta.item_ids) - 1
    sizes = [0, 1, 3, 5, 8]
    items = [rng.choice(np.arange(1, n_items + 1), s, replace=False) for s in sizes]
    ratings = [
        (rng.integers(0, 2, s) if loss == "bce" else rng.integers(1, 6, s)).astype(float)
        for s in sizes
    ]
    uidx = np.array([0, 0, 3, 0, 5])  # cold and known users (a known user keeps its embedding)
    got = kern.adapt(uidx, items, ratings, 4, 0.2)
    want = Kernel.adapt(kern, uidx, items, ratings, 4, 0.2)  # the generic autograd loop
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)
    moved = got["user_tower.0.weight"] - meta.params["user_tower.0.weight"]
    assert moved[0].abs().max() == 0 and moved[1].abs().max() > 0  # no support: no step
