"""The public API: `import metarec as mr`, the task dataset, plain nn.Modules through the engine,
and the learn2learn interop helpers (the metarec side; learn2learn itself is optional)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import metarec as mr
from metarec._errors import ConfigError
from metarec.data.synthetic import make_synthetic
from metarec.episodes.splits import random_split
from metarec.interop import fast_parameters, l2l_maml, maml_step


@pytest.fixture(scope="module")
def data():
    table = make_synthetic(n_domains=3, n_users=40, n_items=60, density=0.25, seed=0)
    return table, random_split(table, min_interactions=20, seed=0)


class Plain(nn.Module):
    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.user = nn.Embedding(n_users, 4)
        self.item = nn.Embedding(n_items, 4)

    def forward(self, users, items):
        return (self.user(users) * self.item(items)).sum(-1)


def test_short_import_names_resolve() -> None:
    for name in mr.__all__:
        assert getattr(mr, name) is not None, name
    assert mr.AlgorithmConfig.__module__ == "metarec.config.algorithm"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mr.nope  # noqa: B018


def test_task_dataset_with_a_dataloader(data) -> None:
    table, splits = data
    pool = splits.pools["meta-train"]
    ds = mr.TaskDataset(table, pool, mr.SamplerConfig(3, 5), meta_batch=4, steps=3, seed=1)
    batches = list(DataLoader(ds, batch_size=None))
    assert len(batches) == len(ds) == 3 and all(
        isinstance(b, mr.EpisodeBatch) and b.n_tasks == 4 for b in batches
    )
    again = list(DataLoader(ds, batch_size=None))
    assert all(
        torch.equal(a.support.items, b.support.items) for a, b in zip(batches, again, strict=True)
    )  # seeded
    once = list(
        mr.TaskDataset(table, pool, mr.SamplerConfig(3, 5), meta_batch=7)
    )  # ordered pass over the pool
    units = np.concatenate([b.units.numpy() for b in once])
    assert sorted(units.tolist()) == sorted(pool.units.tolist())
    with pytest.raises(ConfigError, match=r"meta_batch=0: must be an int >= 1"):
        mr.TaskDataset(table, pool, mr.SamplerConfig(3, 5), meta_batch=0)


def test_plain_module_adapts_every_parameter(data) -> None:
    table, splits = data
    model = Plain(table.n_users, table.n_items)
    params = dict(model.named_parameters())
    cfg = mr.AlgorithmConfig("maml", inner_steps=1, inner_lr=0.5)
    assert mr.adapt_patterns(cfg, model) == ("*",)
    batch = mr.TaskSampler(
        table, splits.pools["meta-train"], mr.SamplerConfig(3, 5), seed=0
    ).sample(4)
    loss, grads = mr.meta_loss_and_grads(cfg, model, params, batch)
    assert torch.isfinite(loss) and set(grads) == set(params)
    fast = mr.adapt_batch(cfg, model, params, batch.support)
    assert set(fast) == set(params) and fast["user.weight"].shape == (
        4,
        *params["user.weight"].shape,
    )
    assert not torch.allclose(fast["user.weight"][0], params["user.weight"])
    with pytest.raises(
        ConfigError,
        match=r"name='anil': .*declares no head_patterns; set a class attribute head_patterns",
    ):
        mr.adapt_patterns(mr.AlgorithmConfig("anil"), model)


class _FakeLearner:
    """What maml_step needs of a learn2learn clone: adapt(loss) and a forward pass."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        self.model, self.lr, self.calls = model, lr, 0

    def adapt(self, loss: torch.Tensor) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= self.lr * g
        self.calls += 1

    def __call__(self, users, items):
        return self.model(users, items)


def test_learn2learn_side_fast_slow_split_and_task_step(data) -> None:
    table, splits = data
    model = mr.build_model("melu", table, embedding_dim=4, hidden=(8,))
    fast = fast_parameters(model)
    assert set(fast) == {"decision.0.weight", "decision.0.bias", "head.weight", "head.bias"}
    assert all(p.requires_grad == (n in fast) for n, p in model.named_parameters())
    batch = mr.TaskSampler(
        table, splits.pools["meta-train"], mr.SamplerConfig(3, 5), seed=0
    ).sample(2)
    learner = _FakeLearner(model, lr=0.1)
    before = model.head.bias.detach().clone()
    s0, _ = maml_step(_FakeLearner(model, 0.0), batch, 0, steps=1)
    s1, q = maml_step(learner, batch, 0, steps=3)
    assert (
        learner.calls == 3
        and not torch.equal(model.head.bias, before)
        and float(s1.detach()) < float(s0.detach())
    )
    assert torch.isfinite(q)
    with pytest.raises(ConfigError, match=r"task=5: the batch has 2 tasks"):
        maml_step(learner, batch, 5)


def _l2l_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("learn2learn") is not None  # without running its __init__


@pytest.mark.skipif(_l2l_importable(), reason="learn2learn is importable here")
def test_l2l_maml_without_learn2learn_names_the_package(data) -> None:
    table, _ = data
    with pytest.raises(
        ImportError, match=r"not installed; install it with benchmarks/install_learn2learn.sh"
    ):
        l2l_maml(mr.build_model("melu", table, embedding_dim=4, hidden=(8,)), lr=0.1)


def test_mr_train_is_the_stage_and_the_outer_loop_whatever_was_imported_first() -> None:
    import subprocess
    import sys

    code = (
        "import metarec.train.loop, metarec as mr\n"
        "from metarec.train.loop import train\n"
        "assert callable(mr.train) and mr.train.__name__ == 'metarec.train'\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
