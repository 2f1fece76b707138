"""MAMO: memory read/write and the personalised initialisation against hand computations
(float64); beats feature-global."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import metarec.methods.learners  # noqa: F401
from metarec._errors import ConfigError
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import random_split
from metarec.methods import FitData, build_method
from metarec.methods.learners import MAMO, MAMOSettings, evaluate_fitted
from metarec.methods.learners.mamo import memory_read, memory_write


def test_memory_read_and_write_match_hand_computation(f64) -> None:
    g = torch.Generator().manual_seed(0)
    p, keys, values = (
        torch.randn(4, 5, generator=g),
        torch.randn(3, 5, generator=g),
        torch.randn(3, 2, 6, generator=g),
    )
    a, read = memory_read(p, keys, values)
    for t in range(4):
        cos = torch.stack([(p[t] @ keys[k]) / (p[t].norm() * keys[k].norm()) for k in range(3)])
        w = torch.exp(cos) / torch.exp(cos).sum()
        torch.testing.assert_close(a[t], w)
        torch.testing.assert_close(read[t], sum(w[k] * values[k] for k in range(3)))
    x = torch.randn(4, 2, 6, generator=g)
    new = memory_write(values, a, x, 0.3)
    for k in range(3):
        hand = 0.3 * sum(a[t, k] * x[t] for t in range(4)) / 4 + 0.7 * values[k]
        torch.testing.assert_close(new[k], hand)


def test_personalised_initialisation(f64) -> None:
    t = make_taste_table(n_users=20, n_items=30, per_user=10, seed=0)
    m = MAMO(t, MAMOSettings(dim=4, pref_dim=3, hidden=(5,), memory=2, tau=0.5))
    m.mem_bias.normal_()
    users = torch.tensor([1, 2, 3])
    p, a, theta, pref = m.init_fast(users)
    flat = torch.cat([v.reshape(-1) for v in m.theta.values()])
    for i in range(3):
        cos = F.cosine_similarity(p[i].unsqueeze(0), m.mem_profile, dim=-1)
        w = torch.softmax(cos, 0)
        torch.testing.assert_close(theta[i], flat - 0.5 * (w @ m.mem_bias))
        torch.testing.assert_close(pref[i], torch.einsum("k,kij->ij", w, m.mem_pref))


def test_mamo_needs_user_features() -> None:
    from metarec.data.synthetic_crossdomain import make_two_domain

    t = make_two_domain(n_users=20, seed=0)  # no side features
    with pytest.raises(ConfigError, match="mamo: the table has no user features"):
        MAMO(t, MAMOSettings())
    with pytest.raises(ConfigError, match="alpha=2.0"):
        build_method("mamo", None, alpha=2.0)


@pytest.mark.slow
def test_mamo_beats_feature_global_over_seeds() -> None:
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
        for name in ("mamo", "feature-global"):
            m = build_method(name, None, steps=60, val_every=30, lr=3e-3, dim=4, meta_batch=16)
            m.sampler = scfg
            maes[name] = evaluate_fitted(
                m.fit(FitData(t, sp, seed=seed)), t, sp.pools["meta-test"], scfg
            )["mae"]
        assert maes["mamo"] < maes["feature-global"] - 0.05, maes
