"""TaNP: FiLM decoder and encoder aggregation against hand loops (float64); beats feature-global."""

from __future__ import annotations

import pytest
import torch

import metarec.learners  # noqa: F401
from metarec._errors import ConfigError
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import random_split
from metarec.learners import TaNP, TaNPSettings, evaluate_fitted
from metarec.learners.synthetic import make_taste_table
from metarec.methods import FitData, build_method


def _support(t, T=3, N=6, seed=0) -> EpisodeSet:
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(1, t.n_users, (T, 1), generator=g).expand(T, N).clone()
    items = torch.randint(1, t.n_items, (T, N), generator=g)
    y = torch.randint(1, 6, (T, N), generator=g).double()
    mask = torch.ones(T, N, dtype=torch.bool)
    mask[0, 4:] = False
    return EpisodeSet(users, items, y, mask)


def test_decode_and_aggregation_match_hand_loops(f64) -> None:
    t = make_taste_table(n_users=20, n_items=30, per_user=10, seed=0)
    m = TaNP(t, TaNPSettings(dim=4, hidden=8, latent=3, task_dim=5, clusters=2, decoder=(6, 4)))
    with torch.no_grad():
        for f in m.film:  # non-trivial modulation
            f.weight.normal_()
            f.bias.normal_()
        m.memory.normal_()
    s = _support(t)
    r, z, o = m.adapt(s)
    sj = m.pairs(s)
    for ti in range(s.n_tasks):
        real = [n for n in range(s.users.shape[1]) if s.mask[ti, n]]
        r_hand = sum(m.det(sj[ti, n]) for n in real) / len(real)
        torch.testing.assert_close(r[ti], r_hand)
        o_raw = sum(m.task(sj[ti, n]) for n in real) / len(real)
        q = torch.stack([1.0 / (1.0 + ((o_raw - c) ** 2).sum()) for c in m.centroids])
        torch.testing.assert_close(o[ti], o_raw + (q / q.sum()) @ m.memory)
    items = torch.randint(1, t.n_items, (3, 5))
    users = s.users[:, :5]
    out = m.score((r, z, o), users, items)
    x = m.features(users, items)
    for ti in range(3):
        for n in range(5):
            h = torch.cat([x[ti, n], r[ti], z[ti]])
            for layer, film in zip(m.dec, m.film):
                gb = film.weight @ o[ti] + film.bias
                gamma, beta = gb[: layer.out_features], gb[layer.out_features :]
                h = torch.relu((1 + gamma) * (layer.weight @ h + layer.bias) + beta)
            torch.testing.assert_close(out[ti, n], (m.head.weight @ h + m.head.bias)[0])


def test_padding_changes_nothing(f64) -> None:
    t = make_taste_table(n_users=20, n_items=30, per_user=10, seed=0)
    m = TaNP(t, TaNPSettings(dim=4, hidden=8, latent=3, task_dim=5, clusters=2, decoder=(6,)))
    s = _support(t)
    junk = EpisodeSet(
        s.users, torch.where(s.mask, s.items, 7), torch.where(s.mask, s.targets, 99.0), s.mask
    )
    for a, b in zip(m.adapt(s), m.adapt(junk)):
        torch.testing.assert_close(a, b)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="kl_weight=-1"):
        build_method("tanp", None, kl_weight=-1.0)
    with pytest.raises(ConfigError, match="unknown key 'tanp.hiden'.*did you mean 'hidden'"):
        build_method("tanp", None, hiden=3)


@pytest.mark.slow
def test_tanp_beats_feature_global_over_seeds() -> None:
    wins = []
    for seed in range(3):
        t = make_taste_table(n_users=100, n_items=80, per_user=25, seed=seed)
        sp = random_split(
            t,
            "user",
            (0.6, 0.2, 0.2),
            n_query=10,
            min_interactions=15,
            max_interactions=None,
            seed=seed,
        )
        scfg = SamplerConfig(n_support=10, n_query=10)
        maes = {}
        for name in ("tanp", "feature-global"):
            m = build_method(name, None, steps=60, val_every=30, lr=3e-3, dim=4, meta_batch=16)
            m.sampler = scfg
            f = m.fit(FitData(t, sp, seed=seed))
            maes[name] = evaluate_fitted(f, t, sp.pools["meta-test"], scfg)["mae"]
        wins.append(maes["tanp"] < maes["feature-global"] - 0.05)
    assert all(wins)
