"""Every learner through the method interface: registry, state_dict round trip, clear errors."""

from __future__ import annotations

import pytest
import torch

import metarec.methods.learners  # noqa: F401
from metarec._errors import CheckpointError, ConfigError
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import random_split
from metarec.methods import Adapted, FitData, Fitted, build_method, method_names


def test_every_learner_is_registered() -> None:
    names = set(method_names())
    assert {
        "tanp",
        "mamo",
        "lwa",
        "nlba",
        "metaemb",
        "mwuf",
        "warmup-base",
        "metabridge",
        "maml-source-init",
        "reptile-source-init",
        "feature-global",
        "r2d2",
        "r2d2-source",
    } <= names


@pytest.mark.parametrize("name", ["tanp", "mamo", "r2d2"])
def test_state_dict_round_trip_and_errors(name: str) -> None:
    t = make_taste_table(n_users=40, n_items=30, per_user=20, seed=0)
    sp = random_split(
        t, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10, max_interactions=None
    )
    scfg = SamplerConfig(n_support=5, n_query=5)
    m = build_method(name, None, steps=3, val_every=3, dim=4, meta_batch=4)
    m.sampler = scfg
    fitted = m.fit(FitData(t, sp, seed=0))
    assert isinstance(fitted, Fitted)
    state = fitted.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert fitted.config()["method"] == name
    other = build_method(name, None, steps=0, val_every=1, dim=4)
    other.sampler = scfg
    fresh = other.fit(FitData(t, sp, seed=1))
    fresh.load_state_dict(state)
    b = TaskSampler(t, sp.pools["meta-test"], scfg).batch(torch.arange(3).numpy())
    a1, a2 = fitted.adapt(b.support), fresh.adapt(b.support)
    assert isinstance(a1, Adapted) and a1.n_tasks == 3
    torch.testing.assert_close(
        a1.score(b.query.users, b.query.items), a2.score(b.query.users, b.query.items)
    )
    bad = dict(state)
    key = next(iter(bad))
    bad[key] = torch.zeros(1, 1, 1)
    with pytest.raises(CheckpointError, match="has shape"):
        fresh.load_state_dict(bad)
    with pytest.raises(ConfigError, match=r"T=3 \(one row per adapted task\)"):
        a1.score(b.query.users[:2], b.query.items[:2])


def test_a_validate_hook_selects_and_keeps_the_initial_state_when_training_hurts() -> None:
    from metarec.methods.learners._loop import LearnerMethod, fit_learner, train_settings

    t = make_taste_table(n_users=40, n_items=30, per_user=20, seed=0)
    sp = random_split(
        t, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10, max_interactions=None
    )
    scfg = SamplerConfig(n_support=5, n_query=5)
    m = build_method("feature-global", None, steps=4, val_every=2, dim=4, meta_batch=4)
    assert isinstance(m, LearnerMethod)
    torch.manual_seed(0)
    learner = m._build(FitData(t, sp, seed=0), m.settings)
    start = {k: v.clone() for k, v in learner.state_dict().items()}
    calls = []

    def worse_each_time(fitted) -> float:
        calls.append(fitted.k)
        return -float(len(calls))  # higher is better: the first (untrained) check wins

    log = fit_learner(
        learner, FitData(t, sp, seed=0), train_settings(m.settings), scfg, worse_each_time
    )
    assert calls == [5, 5, 5] and log["best_step"] == 0 and log["best_val"] == -1.0
    for k, v in learner.state_dict().items():
        torch.testing.assert_close(v, start[k])
