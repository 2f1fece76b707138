"""R2-D2 with a source history: the joint weighted solve against a hand build (float64); beats
the target-only MF on cold target users."""

from __future__ import annotations

import pytest
import torch

import metarec.methods.learners  # noqa: F401
from metarec._errors import ConfigError
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import cold_domain_users_split
from metarec.methods import FitData, build_method
from metarec.methods.crossdomain import fit_method
from metarec.methods.crossdomain.data import cross_domain_view
from metarec.methods.learners import SourceR2D2, SourceR2D2Settings, evaluate_fitted
from metarec.methods.learners.r2d2 import ridge_head
from metarec.methods.learners.r2d2_source import histories


def _data(seed=0, n_users=120, feedback="explicit"):
    t = make_two_domain(n_users=n_users, seed=seed, feedback=feedback)
    sp = cold_domain_users_split(t, "target", beta=0.3, n_query=10, min_interactions=12, seed=seed)
    return t, sp


def test_weighted_ridge_is_row_repetition(f64) -> None:
    g = torch.Generator().manual_seed(0)
    phi, e = torch.randn(1, 4, 2, generator=g), torch.randn(1, 4, generator=g)
    mask = torch.ones(1, 4, dtype=torch.bool)
    lam = torch.tensor([0.5, 1.5])
    w = ridge_head(phi, e, mask, lam, torch.tensor([[1.0, 2.0, 1.0, 3.0]]))
    rep = [0, 1, 1, 2, 3, 3, 3]  # weight 2 = the row twice, weight 3 = three times
    torch.testing.assert_close(w, ridge_head(phi[:, rep], e[:, rep], mask[:, rep], lam))


def test_histories_hold_meta_train_source_rows_only() -> None:
    t, sp = _data()
    items, targets, mask = histories(FitData(t, sp, seed=0), 8)
    view = cross_domain_view(t, sp)
    rows = view.source_rows
    rating = {
        (int(u), int(i)): float(r) for u, i, r in zip(t.users[rows], t.items[rows], t.ratings[rows])
    }
    n_rows = torch.bincount(torch.as_tensor(t.users[rows]), minlength=t.n_users)
    for u in range(t.n_users):
        assert int(mask[u].sum()) == min(8, int(n_rows[u]))
        for i, r in zip(items[u][mask[u]].tolist(), targets[u][mask[u]].tolist()):
            assert rating[(u, i)] == pytest.approx(r)  # a meta-train source row, its rating
    ti, tt, tm = histories(FitData(*_data(feedback="implicit"), seed=0), 8)
    assert ti.shape[1] == 16  # positives, then as many sampled negatives
    assert bool((tt[:, :8][tm[:, :8]] == 1).all()) and bool((tt[:, 8:][tm[:, 8:]] == 0).all())
    assert int(tm[:, 8:].sum()) > 0.9 * int(tm[:, :8].sum())


def test_solve_is_the_joint_weighted_ridge(f64) -> None:
    t, sp = _data()
    m = SourceR2D2(t, SourceR2D2Settings(dim=3, hidden=(6,), rank=2, history_len=5))
    m.set_history(*histories(FitData(t, sp, seed=0), 5))
    u = int(sp.pools["meta-test"].units[0] // t.n_domains)
    s = EpisodeSet(
        torch.full((1, 3), u),
        torch.tensor([[160, 170, 0]]),
        torch.tensor([[4.0, 2.0, 0.0]]),
        torch.tensor([[True, True, False]]),
    )
    w = m.solve(s)
    assert w.shape == (1, 2 + 2)
    # by hand: the two target rows [P h, 1, 0], the user's history rows [P h, 0, 1] at weight omega
    g_t, p_t = m.parts(s.users[:, :2], s.items[:, :2])
    hi = m.hist_items[u][m.hist_mask[u]].unsqueeze(0)
    g_h, p_h = m.parts(torch.full_like(hi, u), hi)
    z_t, z_h = torch.zeros_like(p_t[..., :1]), torch.zeros_like(p_h[..., :1])
    phi = torch.cat(
        [torch.cat([p_t, z_t], -1), torch.cat([p_h[..., :-1], z_h, p_h[..., -1:]], -1)], 1
    )
    y = torch.cat([s.targets[:, :2], m.hist_targets[u][m.hist_mask[u]].unsqueeze(0)], 1)
    r = y - torch.cat([g_t, g_h], 1)
    om = torch.sigmoid(m.source_logit)
    c = torch.cat([torch.ones(2), om.expand(hi.shape[1])]).diag()
    P = phi[0]
    hand = torch.linalg.solve(P.T @ c @ P + torch.diag(m.log_ridge.exp()), P.T @ c @ r[0])
    torch.testing.assert_close(w[0], hand)
    # scoring a target item uses [P h, 1, 0]
    items = torch.tensor([[161, 171]])
    g_q, p_q = m.parts(torch.full_like(items, u), items)
    want = g_q + torch.cat([p_q, torch.zeros_like(p_q[..., :1])], -1) @ w[0]
    torch.testing.assert_close(m.score(w, torch.full_like(items, u), items), want)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"source_weight=1.0: must be in \(0, 1\)"):
        build_method("r2d2-source", None, source_weight=1.0)
    with pytest.raises(ConfigError, match=r"history_len=0: must be >= 1"):
        build_method("r2d2-source", None, history_len=0)


@pytest.mark.slow
def test_beats_target_only_mf_over_seeds() -> None:
    for seed in range(3):
        t, sp = _data(seed, n_users=300)
        scfg = SamplerConfig(n_support=3, n_query=10)
        base = fit_method("no-transfer", t, sp, seed=seed).evaluate(sp.pools["meta-test"], scfg)
        m = build_method(
            "r2d2-source", None, steps=300, val_every=50, lr=1e-2, dim=8, id_dropout=0.0
        )
        m.sampler = scfg
        got = evaluate_fitted(m.fit(FitData(t, sp, seed=seed)), t, sp.pools["meta-test"], scfg)
        assert got["mae"] < base["mae"] - 0.1, (seed, got["mae"], base["mae"])


def test_row_parts_and_pretraining(f64) -> None:
    from metarec.methods.learners.r2d2 import pretrain_body

    t, sp = _data()
    m = SourceR2D2(t, SourceR2D2Settings(dim=3, hidden=(6,), rank=2, pretrain_epochs=2))
    users, items = torch.tensor([1, 1]), torch.tensor([150, 5])
    g, phi = m.row_parts(users, items, torch.tensor([False, True]))
    g0, p0 = m.parts(users, items)
    torch.testing.assert_close(g, g0)
    torch.testing.assert_close(phi[0], torch.cat([p0[0], torch.zeros(1)]))  # target: [P h, 1, 0]
    torch.testing.assert_close(phi[1], torch.cat([p0[1, :-1], torch.tensor([0.0, 1.0])]))
    rows = sp.pools["meta-train"].rows
    src = torch.zeros(rows.shape[0], dtype=torch.bool).numpy()

    def mse() -> float:
        with torch.no_grad():
            gg, _ = m.row_parts(
                torch.as_tensor(t.users[rows]), torch.as_tensor(t.items[rows]), torch.as_tensor(src)
            )
            return float((gg - torch.as_tensor(t.ratings[rows])).square().mean())

    before = mse()
    settings = SourceR2D2Settings(dim=3, hidden=(6,), rank=2, pretrain_epochs=2)
    log = pretrain_body(m, FitData(t, sp, seed=0), rows, src, settings)
    assert log["pretrain_loss"] < before
    assert mse() < before  # the prior alone fits the rows better after pre-training
