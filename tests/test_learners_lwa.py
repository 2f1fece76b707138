"""LWA / NLBA: class-conditioned aggregation and the generated weights / biases against hand loops (float64)."""

from __future__ import annotations

import pytest
import torch

import metarec.methods.learners  # noqa: F401
from metarec._errors import ConfigError
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import random_split
from metarec.methods import FitData, build_method
from metarec.methods.learners import LWA, NLBA, LWASettings, evaluate_fitted
from metarec.methods.learners.lwa import class_representations


def _support(t) -> EpisodeSet:
    g = torch.Generator().manual_seed(1)
    items = torch.randint(1, t.n_items, (3, 6), generator=g)
    y = torch.tensor([[1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]]).double()
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 3:] = False
    mask[1, 4:] = False  # task 1: no negative left
    return EpisodeSet(torch.ones_like(items), items, y, mask)


def test_class_representations_match_a_loop(f64) -> None:
    x = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(0))
    s = _support(make_taste_table(n_users=10, n_items=20, per_user=5, feedback="implicit", seed=0))
    r0, r1 = class_representations(x, s.targets, s.mask)
    for t in range(3):
        for c, r in ((0, r0), (1, r1)):
            sel = [x[t, n] for n in range(6) if s.mask[t, n] and int(s.targets[t, n]) == c]
            torch.testing.assert_close(r[t], torch.stack(sel).mean(0) if sel else torch.zeros(4))


def test_lwa_weights_and_nlba_biases(f64) -> None:
    t = make_taste_table(n_users=10, n_items=20, per_user=5, feedback="implicit", seed=0)
    s = _support(t)
    lwa = LWA(t, LWASettings(dim=3, item_dim=4))
    w = lwa.adapt(s)
    q = torch.randint(1, t.n_items, (3, 2))
    out = lwa.score(w, q, q)
    for ti in range(3):
        r0, r1 = class_representations(lwa.items(s.items), s.targets, s.mask)
        wt = lwa.w0.weight @ r0[ti] + lwa.w1.weight @ r1[ti]
        for n in range(2):
            torch.testing.assert_close(out[ti, n], lwa.items(q[ti, n]) @ wt + lwa.bias)
    nlba = NLBA(t, LWASettings(dim=3, item_dim=4, hidden=(5,)))
    b = nlba.adapt(s)
    g0, g1 = class_representations(nlba.embed_g(nlba.item_enc(s.items)), s.targets, s.mask)
    torch.testing.assert_close(
        b[0], g0 @ nlba.v0[0].weight.T + nlba.v0[0].bias + g1 @ nlba.v1[0].weight.T
    )


def test_explicit_feedback_is_refused() -> None:
    t = make_taste_table(n_users=10, n_items=20, per_user=5, seed=0)
    with pytest.raises(ConfigError, match="lwa: needs implicit feedback"):
        LWA(t, LWASettings())


@pytest.mark.slow
@pytest.mark.parametrize("name,lr", [("lwa", 1e-2), ("nlba", 3e-3)])
def test_beats_feature_global_over_seeds(name: str, lr: float) -> None:
    for seed in range(3):
        t = make_taste_table(
            n_users=150, n_items=100, per_user=30, taste=1.5, feedback="implicit", seed=seed
        )
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
        auc = {}
        for method in (name, "feature-global"):
            m = build_method(method, None, steps=200, val_every=50, lr=lr, dim=8)
            m.sampler = scfg
            auc[method] = evaluate_fitted(
                m.fit(FitData(t, sp, seed=seed)), t, sp.pools["meta-test"], scfg
            )["auc"]
        assert auc[name] > auc["feature-global"] + 0.03, auc
