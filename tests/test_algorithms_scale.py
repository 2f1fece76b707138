"""Scale: the sparse large synthetic generator (the same table encoded directly or through
``InteractionTable.from_frame``), its input checks, and meta-training on it with memory bounded
by the meta-batch (the sampler and the engine hold nothing per interaction)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec._errors import DataError
from metarec.algorithms import AlgorithmConfig, meta_loss_and_grads
from metarec.data.synthetic import make_synthetic_large
from metarec.episodes.pool import build_pool
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.models import build_model


def test_direct_encoding_equals_from_frame() -> None:
    kw = {"n_users": 60, "n_items": 120, "per_user": 30, "seed": 3}
    a = make_synthetic_large(4_000, **kw)
    b = make_synthetic_large(4_000, via_frame=True, **kw)
    assert 3_800 <= len(a) == len(b) <= 4_200
    fa = a.to_frame(raw_ids=True).sort_values(["user", "item"]).reset_index(drop=True)
    fb = b.to_frame(raw_ids=True).sort_values(["user", "item"]).reset_index(drop=True)
    assert fa.equals(fb)
    assert not fa.duplicated(["user", "item"]).any() and fa["rating"].between(1, 5).all()
    for side in ("user_features", "item_features"):
        x, y = getattr(a, side), getattr(b, side)
        assert x.categorical.keys() == y.categorical.keys()
        ids = (a.user_ids if side == "user_features" else a.item_ids).values[:50]
        enc_a = (a.user_ids if side == "user_features" else a.item_ids).encode(ids)
        enc_b = (b.user_ids if side == "user_features" else b.item_ids).encode(ids)
        for k in x.categorical:
            vals_a = x.vocabs[k].decode(x.categorical[k][enc_a, 0])
            vals_b = y.vocabs[k].decode(y.categorical[k][enc_b, 0])
            assert vals_a == vals_b, (side, k)
    assert make_synthetic_large(4_000, **kw).to_frame().equals(a.to_frame())  # same seed, same data


def test_meta_training_on_it_runs_with_a_learning_signal() -> None:
    t = make_synthetic_large(6_000, n_users=50, n_items=200, per_user=40, seed=1)
    pool = build_pool(t, np.arange(len(t)), t.users, "all", "user", min_interactions=20)
    sampler = TaskSampler(t, pool, SamplerConfig(n_support=None, n_query=10), seed=0)
    model = build_model("melu", t, embedding_dim=8, hidden=(16, 16))
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=0.03)
    cfg = AlgorithmConfig("maml", inner_steps=2, inner_lr=0.05, meta_batch=16)
    losses = []
    for _ in range(12):
        loss, grads = meta_loss_and_grads(cfg, model, params, sampler.sample(16))
        for k, p in params.items():
            p.grad = grads[k]
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(
        losses[:3]
    )  # the meta-loss falls from the initial constant


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_interactions": 0}, r"n_interactions=0: must be >= 1"),
        ({"n_interactions": 100, "per_user": 5}, r"per_user=5: must be >= 15"),
        (
            {"n_interactions": 100, "n_items": 40, "per_user": 30},
            r"per_user=30: must be <= n_items // 2 = 20",
        ),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        make_synthetic_large(**kwargs)
