"""TaNP: FiLM decoder and encoder aggregation against hand loops (float64); beats feature-global."""

from __future__ import annotations

import math

import pytest
import torch

import metarec.methods.learners  # noqa: F401
from metarec._errors import ConfigError
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import random_split
from metarec.methods import FitData, build_method
from metarec.methods.learners import TaNP, TaNPSettings, evaluate_fitted


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


def test_clustering_loss_matches_the_hand_formula(f64) -> None:
    from metarec.methods.learners.tanp import cluster_assignments, clustering_loss

    g = torch.Generator().manual_seed(3)
    o, c = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g)
    a = cluster_assignments(o, c)
    T, K = a.shape
    for t_ in range(T):  # Student-t kernel, one degree of freedom, normalised per task
        q = [1.0 / (1.0 + float(((o[t_] - c[k]) ** 2).sum())) for k in range(K)]
        for k in range(K):
            assert abs(float(a[t_, k]) - q[k] / sum(q)) < 1e-12
    f = [sum(float(a[t_, k]) for t_ in range(T)) for k in range(K)]
    hand = 0.0
    for t_ in range(T):
        w = [float(a[t_, k]) ** 2 / f[k] for k in range(K)]
        p = [x / sum(w) for x in w]
        hand += sum(p[k] * math.log(p[k] / float(a[t_, k])) for k in range(K)) / T
    leaf = a.detach().clone().requires_grad_(True)
    loss = clustering_loss(leaf)
    assert abs(float(loss.detach()) - hand) < 1e-12 and float(loss.detach()) >= 0
    # the target P is held fixed: dL/da_tk = -p_tk / (T a_tk)
    (grad,) = torch.autograd.grad(loss, leaf)
    w = a.square() / a.sum(0, keepdim=True)
    p = w / w.sum(-1, keepdim=True)
    torch.testing.assert_close(grad, -p / (T * a))


def test_meta_loss_adds_the_weighted_clustering_term(f64) -> None:
    from metarec.episodes.batch import EpisodeBatch
    from metarec.methods.learners.tanp import clustering_loss

    t = make_taste_table(n_users=20, n_items=30, per_user=10, seed=0)
    s = TaNPSettings(dim=4, hidden=8, latent=3, task_dim=5, clusters=3, decoder=(6,))
    m = TaNP(t, s)
    z = torch.zeros(3, dtype=torch.int64)
    batch = EpisodeBatch(_support(t, seed=1), _support(t, seed=2), z, z)
    losses = {}
    for w in (0.0, 0.7):
        m.cluster_weight = w
        torch.manual_seed(0)  # the same sampled z
        losses[w] = m.meta_loss(batch)
    _, a = m.task_embedding(m.pairs(batch.support), batch.support.mask)
    torch.testing.assert_close(losses[0.7] - losses[0.0], 0.7 * clustering_loss(a))


def test_cluster_settings_are_checked_with_their_set_key() -> None:
    from metarec.config import load_scenario

    sc = load_scenario("tasks/synthetic-cold-start.toml", ["learners.tanp.cluster_weight=-0.5"])
    with pytest.raises(ConfigError, match=r"learners.tanp.cluster_weight=-0.5: must be a finite"):
        build_method("tanp", sc)
    sc = load_scenario("tasks/synthetic-cold-start.toml", ["learners.tanp.clusters=0"])
    with pytest.raises(ConfigError, match=r"learners.tanp.clusters=0: must be >= 1"):
        build_method("tanp", sc)
    m = build_method(
        "tanp", load_scenario("tasks/synthetic-cold-start.toml", ["learners.tanp.clusters=6"])
    )
    assert m.settings.clusters == 6 and m.settings.cluster_weight == 0.1
