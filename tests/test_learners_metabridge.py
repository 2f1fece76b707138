"""Meta-bridge and source-initialised MAML/Reptile: inner steps against hand autograd (float64);
beat the target-only MF."""

from __future__ import annotations

import pytest
import torch

import metarec.methods.learners  # noqa: F401
from metarec._errors import ConfigError
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import cold_domain_users_split, random_split
from metarec.methods import FitData, build_method
from metarec.methods.crossdomain import fit_method
from metarec.methods.learners import BridgeSettings, SourceInit, TMCDRBridge, evaluate_fitted
from metarec.methods.learners.metabridge import _mapping, mapping_inner_step, target_episodes


def _data(seed=0, n_users=120):
    t = make_two_domain(n_users=n_users, seed=seed)
    sp = cold_domain_users_split(t, "target", beta=0.3, n_query=10, min_interactions=12, seed=seed)
    return t, sp


def test_mapping_inner_step_matches_hand_autograd(f64) -> None:
    t, sp = _data()
    m = TMCDRBridge(FitData(t, sp), BridgeSettings(dim=3, hidden=4))
    phi = {k: v.detach().clone().normal_() for k, v in m.phi.items()}
    v = torch.randn(4)
    s = EpisodeSet(
        torch.ones(5, dtype=torch.int64),
        torch.tensor([150, 160, 170, 180, 0]),
        torch.tensor([4.0, 2.0, 3.0, 5.0, 0.0]),
        torch.tensor([True, True, True, True, False]),
    )
    new = mapping_inner_step(m.tgt.score, phi, v, s, 0.1, "mse")
    leaf = {k: p.clone().requires_grad_(True) for k, p in phi.items()}
    u = v + torch.tanh(leaf["w1"] @ v + leaf["b1"]) @ leaf["w2"].T + leaf["b2"]
    pred = torch.stack([m.tgt.score(u.unsqueeze(0), s.items[n].view(1, 1))[0, 0] for n in range(4)])
    loss = ((pred - s.targets[:4]) ** 2).mean()
    grads = torch.autograd.grad(loss, list(leaf.values()))
    for (k, p), g in zip(phi.items(), grads):
        torch.testing.assert_close(new[k], p - 0.1 * g)
    torch.testing.assert_close(
        _mapping(phi, v), v + torch.tanh(phi["w1"] @ v + phi["b1"]) @ phi["w2"].T + phi["b2"]
    )


def test_source_init_inner_loop_and_target_episodes(f64) -> None:
    t, sp = _data()
    m = SourceInit(FitData(t, sp), BridgeSettings(dim=3, hidden=4), reptile=False)
    u0 = torch.randn(2, 4)
    s = EpisodeSet(
        torch.ones(2, 3, dtype=torch.int64),
        torch.tensor([[150, 160, 170], [151, 161, 0]]),
        torch.tensor([[4.0, 2.0, 3.0], [1.0, 5.0, 0.0]]),
        torch.tensor([[True, True, True], [True, True, False]]),
    )
    u = m.inner(u0, s, 1, 0.2, False)
    for i in range(2):
        leaf = u0[i].clone().requires_grad_(True)
        n = int(s.mask[i].sum())
        pred = m.tgt.score(leaf.unsqueeze(0), s.items[i, :n].unsqueeze(0))[0]
        (g,) = torch.autograd.grad(((pred - s.targets[i, :n]) ** 2).mean(), leaf)
        torch.testing.assert_close(u[i], u0[i] - 0.2 * g)
    only = target_episodes(FitData(t, sp)).splits.pools["meta-train"]
    assert ((only.units % t.n_domains) == int(t.domain_ids.encode(["target"])[0])).all()


def test_single_domain_splits_are_refused() -> None:
    t = make_two_domain(n_users=40, seed=0)
    sp = random_split(t, "user", n_query=5, min_interactions=20, max_interactions=None)
    with pytest.raises(ConfigError, match="the cross-domain methods need"):
        build_method("metabridge", None).fit(FitData(t, sp))
    with pytest.raises(ConfigError, match="inner_lr=0"):
        build_method("maml-source-init", None, inner_lr=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["metabridge", "maml-source-init", "reptile-source-init"])
def test_beats_target_only_mf_over_seeds(name: str) -> None:
    for seed in range(3):
        t, sp = _data(seed, n_users=300)
        scfg = SamplerConfig(n_support=3, n_query=10)
        base = fit_method("no-transfer", t, sp, seed=seed).evaluate(sp.pools["meta-test"], scfg)[
            "mae"
        ]
        m = build_method(name, None, steps=100, val_every=50, lr=3e-3, mf_epochs=20, batch_size=256)
        m.sampler = scfg
        mae = evaluate_fitted(m.fit(FitData(t, sp, seed=seed)), t, sp.pools["meta-test"], scfg)[
            "mae"
        ]
        assert mae < base - 0.1, (mae, base)
