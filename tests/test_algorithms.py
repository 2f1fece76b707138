"""Algorithms: reference equivalence in float64 (vmap = loop, second order = naive autograd,
first order differs), Reptile and Meta-SGD definitions, masking, chunking, config errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import ConfigError
from metarec.algorithms import (
    LOSSES,
    AlgorithmConfig,
    adapt,
    adapt_batch,
    adapt_patterns,
    init_algorithm_state,
    masked_bce,
    masked_bpr,
    masked_mse,
    masked_softmax,
    meta_loss_and_grads,
    msl_weights,
    predict_batch,
    set_loss,
)
from metarec.data.features import FeatureSpec
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.models import GMF, IdConfig, RecModel, build_model, split_params

pytestmark = pytest.mark.usefixtures("f64")  # float64 throughout (tests/conftest.py)


N_USERS, N_ITEMS = 7, 9


def tiny_melu_table() -> InteractionTable:
    users = pd.DataFrame(
        {"user": range(1, N_USERS), "gender": list("MFMFMF"), "age": [20, 31, 45, 52, 18, 33]}
    )
    items = pd.DataFrame(
        {
            "item": range(1, N_ITEMS),
            "genre": ["a|b", "b", "c|a", "", "a", "c", "b|c", "a"],
            "director": list("xyxzyzxy"),
        }
    )
    frame = pd.DataFrame(
        {"user": [1, 2, 3, 4, 5, 6, 1, 2], "item": [1, 2, 3, 4, 5, 6, 7, 8], "rating": [3.0] * 8}
    )
    table = InteractionTable.from_frame(
        frame,
        user_features=users,
        user_feature_specs=[FeatureSpec("gender"), FeatureSpec("age", "numeric")],
        item_features=items,
        item_feature_specs=[FeatureSpec("genre", "multi"), FeatureSpec("director")],
    )
    assert table.n_users == N_USERS and table.n_items == N_ITEMS
    return table


def tiny_melu() -> RecModel:
    return build_model("melu", tiny_melu_table(), embedding_dim=3, hidden=(4, 3), seed=1)


def tiny_gmf() -> RecModel:
    return GMF(N_USERS, N_ITEMS, IdConfig(embedding_dim=3), adapt=("user.*", "head.*")).set_known(
        users=[]
    )


def make_set(
    g: torch.Generator, T: int, N: int, real: list[int], implicit: bool = False
) -> EpisodeSet:
    users = torch.randint(1, N_USERS, (T, 1), generator=g).expand(T, N).clone()  # one user per task
    items = torch.randint(1, N_ITEMS, (T, N), generator=g)
    if implicit:
        targets = (torch.rand(T, N, generator=g) > 0.5).to(torch.float64)
    else:
        targets = torch.randint(1, 6, (T, N), generator=g).to(torch.float64)
    mask = torch.arange(N).expand(T, N) < torch.tensor(real).unsqueeze(1)
    return EpisodeSet(users, items, torch.where(mask, targets, 0.0), mask)


def make_batch(T: int = 3, seed: int = 0, implicit: bool = False) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    s_real = [4, 3, 2, 4, 1, 3][:T]
    q_real = [3, 2, 3, 1, 3, 2][:T]
    return EpisodeBatch(
        make_set(g, T, 4, s_real, implicit),
        make_set(g, T, 3, q_real, implicit),
        torch.arange(T),
        torch.zeros(T, dtype=torch.int64),
    )


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def state_for(
    cfg: AlgorithmConfig, model: RecModel, params: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    fast, _ = split_params(model, adapt_patterns(cfg, model), params)
    state = init_algorithm_state(cfg, fast)
    g = torch.Generator().manual_seed(3)  # perturb the rates so each entry is distinct
    return {
        k: (v.detach() * (1 + 0.5 * torch.rand(v.shape, generator=g))).requires_grad_()
        for k, v in state.items()
    }


def task(s: EpisodeSet, t: int) -> EpisodeSet:
    return EpisodeSet(s.users[t], s.items[t], s.targets[t], s.mask[t])


def assert_grads_close(a: dict, b: dict, tol: float = 1e-10) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=tol, rtol=tol), k


# ---------------------------------------------------------------------- references
def loop_reference(
    cfg: AlgorithmConfig, model: RecModel, params: dict, batch: EpisodeBatch, state: dict
) -> tuple[torch.Tensor, dict]:
    """Per-task Python loop over the public one-task `adapt`; gradients by torch.autograd."""
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    st = {k: v.detach().clone().requires_grad_() for k, v in state.items()}
    fast, slow = split_params(model, adapt_patterns(cfg, model), p)
    lrs = {k: st[f"lr.{k}"] for k in fast} if cfg.name == "metasgd" else None
    step_lrs = {k: st[f"step_lr.{k}"] for k in fast} if cfg.per_step_lr else None
    weights = batch.query.mask.any(1).to(torch.float64)
    total = torch.zeros(())
    for t in range(batch.n_tasks):
        s, q = task(batch.support, t), task(batch.query, t)
        if cfg.multi_step_loss:
            losses, f = [], fast
            for j in range(cfg.inner_steps):  # the trajectory, one step at a time
                sl = {k: step_lrs[k][j:] for k in fast} if step_lrs else None
                f = adapt(
                    model,
                    f,
                    slow,
                    s,
                    1,
                    cfg.inner_lr,
                    first_order=cfg.is_first_order,
                    lrs=lrs,
                    per_step_lrs=sl,
                )
                losses.append(set_loss(model, f, slow, q))
            loss_t = (msl_weights(cfg.inner_steps) * torch.stack(losses)).sum()
        else:
            f = adapt(
                model,
                fast,
                slow,
                s,
                cfg.inner_steps,
                cfg.inner_lr,
                first_order=cfg.is_first_order,
                lrs=lrs,
                per_step_lrs=step_lrs,
            )
            loss_t = set_loss(model, f, slow, q)
        total = total + weights[t] * loss_t
    total = total / weights.sum()
    keys = [*p, *st]
    grads = torch.autograd.grad(total, [*p.values(), *st.values()], allow_unused=True)
    return total.detach(), {
        k: torch.zeros_like(v) if g is None else g
        for (k, v), g in zip({**p, **st}.items(), grads, strict=True)
        if k in keys
    }


def naive_maml(
    model: RecModel, params: dict, batch: EpisodeBatch, steps: int, lr: float, first_order: bool
) -> dict:
    """MAML with torch.autograd.grad(create_graph=True) on plain tensors, task by task."""
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    fast_names = list(split_params(model, None, p)[0])
    total = torch.zeros(())
    for t in range(batch.n_tasks):
        s, q = task(batch.support, t), task(batch.query, t)
        cur = dict(p)
        for _ in range(steps):
            pred = torch.func.functional_call(model, cur, (s.users, s.items))
            err = (pred - s.targets)[s.mask]
            inner = (err**2).mean()
            gs = torch.autograd.grad(
                inner, [cur[k] for k in fast_names], create_graph=not first_order
            )
            cur = {**cur, **{k: cur[k] - lr * g for k, g in zip(fast_names, gs, strict=True)}}
        pred = torch.func.functional_call(model, cur, (q.users, q.items))
        total = total + ((pred - q.targets)[q.mask] ** 2).mean() / batch.n_tasks
    return dict(zip(p, torch.autograd.grad(total, list(p.values())), strict=True))


# ---------------------------------------------------------------------- equivalences
CONFIGS = {
    "maml": AlgorithmConfig("maml", inner_steps=2, inner_lr=0.1),
    "fomaml": AlgorithmConfig("fomaml", inner_steps=2, inner_lr=0.1),
    "metasgd": AlgorithmConfig("metasgd", inner_steps=2, inner_lr=0.1),
    "anil": AlgorithmConfig("anil", inner_steps=2, inner_lr=0.1),
    "maml++": AlgorithmConfig(
        "maml", inner_steps=3, inner_lr=0.1, per_step_lr=True, multi_step_loss=True
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_vmap_over_tasks_equals_per_task_loop(name: str) -> None:
    cfg, model = CONFIGS[name], tiny_melu()
    params, batch = params_of(model), make_batch(T=3)
    state = state_for(cfg, model, params)
    loss, grads = meta_loss_and_grads(cfg, model, params, batch, state=state)
    ref_loss, ref_grads = loop_reference(cfg, model, params, batch, state)
    assert torch.allclose(loss, ref_loss, atol=1e-12)
    assert_grads_close(grads, ref_grads)
    assert list(grads) == [*params, *state]


def test_second_order_maml_equals_naive_autograd_and_first_order_differs() -> None:
    model, batch = tiny_gmf(), make_batch(T=3, seed=1)
    batch = EpisodeBatch(
        batch.support,
        dataclasses.replace(batch.query, mask=torch.ones(3, 3, dtype=torch.bool)),
        batch.units,
        batch.domains,
    )
    params = params_of(model)
    cfg = AlgorithmConfig("maml", inner_steps=3, inner_lr=0.3)
    _, second = meta_loss_and_grads(cfg, model, params, batch)
    assert_grads_close(second, naive_maml(model, params, batch, 3, 0.3, first_order=False))
    _, first = meta_loss_and_grads(dataclasses.replace(cfg, name="fomaml"), model, params, batch)
    assert_grads_close(first, naive_maml(model, params, batch, 3, 0.3, first_order=True))
    assert not torch.allclose(first["head.weight"], second["head.weight"], atol=1e-6)
    _, flag = meta_loss_and_grads(dataclasses.replace(cfg, first_order=True), model, params, batch)
    assert_grads_close(flag, first, tol=0)  # one flag on the same function


def test_reptile_step_equals_its_definition() -> None:
    model, batch = tiny_melu(), make_batch(T=3, seed=2)
    params = params_of(model)
    cfg = AlgorithmConfig("reptile", inner_steps=3, inner_lr=0.2)
    loss, grads = meta_loss_and_grads(cfg, model, params, batch)
    fast, slow = split_params(model, None, params)
    diffs, slow_grads, losses = [], [], []
    for t in range(batch.n_tasks):  # plain SGD on each task's support, autograd, no graph
        cur = {k: v.clone().requires_grad_() for k, v in fast.items()}
        for _ in range(3):
            g = torch.autograd.grad(
                set_loss(model, cur, slow, task(batch.support, t)), list(cur.values())
            )
            cur = {
                k: (v - 0.2 * gk).detach().requires_grad_()
                for (k, v), gk in zip(cur.items(), g, strict=True)
            }
        diffs.append({k: fast[k] - cur[k].detach() for k in fast})
        sl = {k: v.clone().requires_grad_() for k, v in slow.items()}
        ql = set_loss(model, {k: v.detach() for k, v in cur.items()}, sl, task(batch.query, t))
        slow_grads.append(dict(zip(sl, torch.autograd.grad(ql, list(sl.values())), strict=True)))
        losses.append(ql.detach())
    for k in fast:
        assert torch.allclose(grads[k], sum(d[k] for d in diffs) / 3, atol=1e-12)
    for k in slow:
        assert torch.allclose(grads[k], sum(d[k] for d in slow_grads) / 3, atol=1e-12)
    assert torch.allclose(loss, sum(losses) / 3)
    # with outer SGD at rate eps: theta <- theta + eps * mean_t(theta_t - theta)
    theta = {k: v.clone().requires_grad_() for k, v in params.items()}
    opt = torch.optim.SGD(theta.values(), lr=0.5)
    for k, v in theta.items():
        v.grad = grads[k]
    opt.step()
    k = "head.weight"
    mean_adapted = fast[k] - sum(d[k] for d in diffs) / 3
    assert torch.allclose(theta[k], fast[k] + 0.5 * (mean_adapted - fast[k]))


@pytest.mark.parametrize("name", ["reptile", "global"])
def test_vmap_equals_loop_reptile_and_global(name: str) -> None:
    model, batch = tiny_gmf(), make_batch(T=3, seed=4)
    cfg = AlgorithmConfig(name, inner_steps=2, inner_lr=0.1)
    params = params_of(model)
    loss, grads = meta_loss_and_grads(cfg, model, params, batch)
    parts = [
        meta_loss_and_grads(cfg, model, params, batch.select(slice(t, t + 1))) for t in range(3)
    ]
    assert torch.allclose(loss, sum(p[0] for p in parts) / 3)
    assert_grads_close(grads, {k: sum(p[1][k] for p in parts) / 3 for k in grads})


def test_metasgd_rates_receive_gradients() -> None:
    model, batch = tiny_melu(), make_batch(T=3)
    cfg = AlgorithmConfig("metasgd", inner_steps=2, inner_lr=0.1)
    params = params_of(model)
    state = init_algorithm_state(cfg, split_params(model, None, params)[0])
    assert set(state) == {f"lr.{k}" for k in split_params(model)[0]} and all(
        v.requires_grad for v in state.values()
    )
    _, grads = meta_loss_and_grads(cfg, model, params, batch, state=state)
    for k in state:
        assert grads[k].shape == state[k].shape and grads[k].abs().sum() > 0, k


@pytest.mark.parametrize("loss", ["mse", "bce", "bpr", "softmax"])
@pytest.mark.parametrize("name", ["maml", "reptile", "global"])
def test_padding_changes_nothing(name: str, loss: str) -> None:
    model, batch = tiny_melu(), make_batch(T=3, seed=5, implicit=loss != "mse")
    cfg = AlgorithmConfig(name, inner_steps=2, inner_lr=0.1, loss=loss)
    params = params_of(model)
    g = torch.Generator().manual_seed(9)

    def pad(s: EpisodeSet, extra: int, tasks: int) -> EpisodeSet:
        T, N = s.users.shape
        rand = lambda hi: torch.randint(1, hi, (T + tasks, N + extra), generator=g)  # noqa: E731
        users, items = rand(N_USERS), rand(N_ITEMS)
        targets = torch.full((T + tasks, N + extra), float("nan"))
        mask = torch.zeros(T + tasks, N + extra, dtype=torch.bool)
        for a, b in ((users, s.users), (items, s.items), (targets, s.targets), (mask, s.mask)):
            a[:T, :N] = b
        return EpisodeSet(users, items, targets, mask)

    padded = EpisodeBatch(
        pad(batch.support, 3, 2),
        pad(batch.query, 2, 2),
        torch.arange(5),
        torch.zeros(5, dtype=torch.int64),
    )
    loss0, g0 = meta_loss_and_grads(cfg, model, params, batch)
    loss1, g1 = meta_loss_and_grads(cfg, model, params, padded)
    assert torch.isfinite(loss1) and torch.allclose(loss0, loss1, atol=1e-12)
    assert_grads_close(g0, g1, tol=1e-12)


@pytest.mark.parametrize("name", ["maml", "metasgd", "reptile", "finetune"])
def test_chunked_meta_gradients_equal_unchunked(name: str) -> None:
    model, batch = tiny_melu(), make_batch(T=5, seed=6)
    cfg = AlgorithmConfig(name, inner_steps=2, inner_lr=0.1)
    params = params_of(model)
    state = state_for(cfg, model, params)
    loss, grads = meta_loss_and_grads(cfg, model, params, batch, state=state)
    loss_c, grads_c = meta_loss_and_grads(
        dataclasses.replace(cfg, chunk_size=2), model, params, batch, state=state
    )
    assert torch.allclose(loss, loss_c, atol=1e-12)
    assert_grads_close(grads, grads_c, tol=1e-12)


def test_adapt_batch_and_predict_batch() -> None:
    model, batch = tiny_melu(), make_batch(T=3)
    params = params_of(model)
    cfg = AlgorithmConfig("maml", inner_steps=2, inner_lr=0.1)
    fast_t = adapt_batch(cfg, model, params, batch.support)
    fast, slow = split_params(model, None, params)
    for t in range(3):
        ref = adapt(model, fast, slow, task(batch.support, t), 2, 0.1)
        assert all(torch.allclose(fast_t[k][t], ref[k]) for k in ref)
    with torch.no_grad():
        pred = predict_batch(model, params, fast_t, batch.query.users, batch.query.items)
    assert pred.shape == (3, 3)
    ref = torch.func.functional_call(
        model,
        {**params, **{k: v[1] for k, v in fast_t.items()}},
        (batch.query.users[1], batch.query.items[1]),
    )
    assert torch.allclose(pred[1], ref)
    unadapted = adapt_batch(AlgorithmConfig("global"), model, params, batch.support)
    assert all(torch.equal(v[2], fast[k]) for k, v in unadapted.items())
    tuned = adapt_batch(
        AlgorithmConfig("finetune", inner_steps=2, inner_lr=0.1), model, params, batch.support
    )
    assert_grads_close(tuned, fast_t, tol=1e-12)  # finetune at evaluation = plain adaptation
    with pytest.raises(ConfigError, match=r"lr=0.5: name='metasgd' adapts with its learned rates"):
        adapt_batch(
            AlgorithmConfig("metasgd"),
            model,
            params,
            batch.support,
            lr=0.5,
            state=state_for(AlgorithmConfig("metasgd"), model, params),
        )


# ---------------------------------------------------------------------- losses
def test_losses_hand_computed() -> None:
    pred = torch.tensor([[1.0, 2.0, 0.0, 7.0]])
    target = torch.tensor([[0.0, 1.0, 1.0, float("nan")]])
    mask = torch.tensor([[True, True, True, False]])
    assert torch.allclose(masked_mse(pred, target, mask), torch.tensor([(1 + 1 + 1) / 3]))
    sp = torch.nn.functional.softplus
    bce = (sp(torch.tensor(1.0)) + sp(torch.tensor(2.0)) - 2 + sp(torch.tensor(0.0))) / 3
    assert torch.allclose(masked_bce(pred, target, mask), bce.reshape(1))
    ls = torch.nn.functional.logsigmoid  # positives: 2.0, 0.0; negative: 1.0
    bpr = -(ls(torch.tensor(2.0 - 1.0)) + ls(torch.tensor(0.0 - 1.0))) / 2
    assert torch.allclose(masked_bpr(pred, target, mask), bpr.reshape(1))
    # sampled softmax, positives 2.0 and 0.0 against the negative 1.0, logits corrected by logq
    logq = torch.tensor([[-1.0, -2.0, -0.5, 9.0]])
    o = [1.0 + 1.0, 2.0 + 2.0, 0.0 + 0.5]  # pred - logq
    ref = (math.log(math.exp(o[1]) + math.exp(o[0])) - o[1]) + (
        math.log(math.exp(o[2]) + math.exp(o[0])) - o[2]
    )
    got = masked_softmax(pred, target, mask, logq)
    assert got.dtype == torch.float64 and abs(got.item() - ref / 2) < 1e-12
    plain = (math.log(math.exp(2.0) + math.exp(1.0)) - 2.0) + (
        math.log(math.exp(0.0) + math.exp(1.0)) - 0.0
    )
    assert abs(masked_softmax(pred, target, mask).item() - plain / 2) < 1e-12
    shifted = masked_softmax(pred, target, mask, torch.full_like(pred, -3.7))  # a uniform sampler
    assert abs(shifted.item() - plain / 2) < 1e-12
    only_pos = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert masked_softmax(pred, only_pos, mask).item() == 0.0  # no negative: nothing to rank
    empty = torch.zeros(1, 4, dtype=torch.bool)
    for fn in LOSSES.values():
        assert fn(pred, target, empty).item() == 0.0
        p = pred.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(p, target, mask).sum(), p)
        assert g[0, 3] == 0 and torch.isfinite(g).all()


def test_softmax_is_vmappable_and_padding_safe() -> None:
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(4, 6, generator=g)
    target = (torch.rand(4, 6, generator=g) < 0.4).double()
    mask = torch.rand(4, 6, generator=g) < 0.8
    logq = torch.randn(4, 6, generator=g)
    batched = torch.func.vmap(masked_softmax)(pred, target, mask, logq)
    rows = torch.stack([masked_softmax(pred[t], target[t], mask[t], logq[t]) for t in range(4)])
    torch.testing.assert_close(batched, rows, rtol=0, atol=1e-12)
    junk = pred.clone()
    junk[~mask] = float("nan")  # padded predictions and targets can be anything
    t2 = torch.where(mask, target, torch.full_like(target, float("nan")))
    p = junk.clone().requires_grad_()
    val = masked_softmax(p, t2, mask, torch.where(mask, logq, float("inf")))
    torch.testing.assert_close(val, rows, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(val.sum(), p)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()


def test_softmax_falls_back_to_the_vmap_path_with_the_same_gradients() -> None:
    """MeLU's analytic inner loop covers mse / bce; with softmax (and logq in the sets) auto
    takes the vmap path: the same meta-gradients as engine='vmap', and 'analytic' is refused."""
    model, batch = tiny_melu(), make_batch(T=3, seed=4, implicit=True)
    g = torch.Generator().manual_seed(8)

    def with_logq(s: EpisodeSet) -> EpisodeSet:
        return EpisodeSet(
            s.users, s.items, s.targets, s.mask, None, torch.randn(s.targets.shape, generator=g)
        )

    batch = EpisodeBatch(
        with_logq(batch.support), with_logq(batch.query), batch.units, batch.domains
    )
    params = params_of(model)
    auto = AlgorithmConfig("maml", inner_steps=2, inner_lr=0.1, loss="softmax")
    loss_a, grads_a = meta_loss_and_grads(auto, model, params, batch)
    loss_v, grads_v = meta_loss_and_grads(
        dataclasses.replace(auto, engine="vmap"), model, params, batch
    )
    assert torch.allclose(loss_a, loss_v, atol=1e-12)
    assert_grads_close(grads_a, grads_v, tol=1e-12)
    # the correction matters: without logq the meta-loss differs
    plain = EpisodeBatch(
        EpisodeSet(
            batch.support.users, batch.support.items, batch.support.targets, batch.support.mask
        ),
        EpisodeSet(batch.query.users, batch.query.items, batch.query.targets, batch.query.mask),
        batch.units,
        batch.domains,
    )
    assert not torch.allclose(meta_loss_and_grads(auto, model, params, plain)[0], loss_a)
    with pytest.raises(ConfigError, match=r"engine='analytic'.*loss='softmax'.*pass engine='auto'"):
        meta_loss_and_grads(dataclasses.replace(auto, engine="analytic"), model, params, batch)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"inner_steps": 0},
            r"inner_steps=0: the inner loop needs at least one step; pass inner_steps >= 1",
        ),
        ({"name": "mamll"}, r"name='mamll': unknown algorithm.*did you mean 'maml'"),
        ({"inner_lr": -1.0}, r"inner_lr=-1.0: must be a finite number > 0"),
        ({"meta_batch": 0}, r"meta_batch=0: .*pass meta_batch >= 1"),
        ({"chunk_size": 0}, r"chunk_size=0: .*pass chunk_size >= 1"),
        (
            {"name": "global", "first_order": True},
            r"first_order=True with name='global'.*pass first_order=False",
        ),
        ({"first_order": None}, r"first_order=None: must be True or False"),
        (
            {"name": "metasgd", "per_step_lr": True},
            r"per_step_lr=True with name='metasgd': Meta-SGD already",
        ),
        ({"name": "reptile", "multi_step_loss": True}, r"multi_step_loss=True with name='reptile'"),
        (
            {"adapt": "head.*"},
            r"adapt='head.\*': expected a tuple of patterns; pass adapt=\('head.\*',\)",
        ),
        ({"name": "anil", "adapt": ("head.*",)}, r"name='anil': ANIL adapts the model's head only"),
        ({"loss": "bcr"}, r"loss='bcr': unknown loss.*did you mean"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AlgorithmConfig(**kwargs)


def test_runtime_errors() -> None:
    model, batch = tiny_gmf(), make_batch(T=2)
    params = params_of(model)
    with pytest.raises(
        ConfigError,
        match=r"state: name='metasgd'.*'lr\.user\.weight' is missing.*init_algorithm_state",
    ):
        meta_loss_and_grads(AlgorithmConfig("metasgd"), model, params, batch)
    with pytest.raises(
        ConfigError,
        match=r"adapt pattern 'haed.\*' matches no parameter of GMF.*did you mean 'head.\*'",
    ):
        meta_loss_and_grads(AlgorithmConfig("maml", adapt=("haed.*",)), model, params, batch)
    cfg = AlgorithmConfig("maml", inner_steps=2, multi_step_loss=True)
    with pytest.raises(
        ConfigError, match=r"step_weights: shape \(3,\) does not match inner_steps=2"
    ):
        meta_loss_and_grads(cfg, model, params, batch, step_weights=torch.ones(3))
    with pytest.raises(
        ConfigError,
        match=r"params: missing 'head.bias' \(1 missing, 0 unexpected\).*dict\(model.named_parameters\(\)\)",
    ):
        meta_loss_and_grads(
            AlgorithmConfig("maml"),
            model,
            {k: v for k, v in params.items() if k != "head.bias"},
            batch,
        )
    bad = EpisodeBatch(
        batch.support,
        dataclasses.replace(batch.query, mask=batch.query.mask.long()),
        batch.units,
        batch.domains,
    )
    with pytest.raises(
        ConfigError, match=r"batch.query.mask: dtype torch.int64, expected torch.bool"
    ):
        meta_loss_and_grads(AlgorithmConfig("maml"), model, params, bad)


def test_msl_weights_anneal_to_the_final_step() -> None:
    assert torch.allclose(msl_weights(4, 0.0), torch.full((4,), 0.25))
    late = msl_weights(4, 1.0)
    assert torch.isclose(late.sum(), torch.tensor(1.0)) and late[-1] > 0.9 and (late[:-1] > 0).all()
    assert np.isclose(float(msl_weights(1, 0.5)[0]), 1.0)


@pytest.mark.parametrize("model_name", ["melu", "gmf", "neumf", "two_tower"])
def test_every_model_runs_every_algorithm_under_vmap(model_name: str) -> None:
    table = tiny_melu_table()
    model = build_model(
        model_name, table, embedding_dim=2, hidden=(3,), dropout=0.2
    )  # dropout: randomness='different'
    params, batch = params_of(model), make_batch(T=2, seed=8)
    for name in ("maml", "fomaml", "metasgd", "anil", "reptile", "global", "finetune"):
        cfg = AlgorithmConfig(name, inner_steps=1, inner_lr=0.1, multi_step_loss=name == "maml")
        state = state_for(cfg, model, params)
        loss, grads = meta_loss_and_grads(cfg, model, params, batch, state=state)
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values()), name
    model.eval()
    fast_t = adapt_batch(AlgorithmConfig("maml", inner_steps=1), model, params, batch.support)
    assert predict_batch(model, params, fast_t, batch.query.users, batch.query.items).shape == (
        2,
        3,
    )


# ---------------------------------------------------------------------- encode once, sorted chunks
HOIST_CONFIGS = {
    "maml": AlgorithmConfig("maml", inner_steps=3, inner_lr=0.1),
    "fomaml": AlgorithmConfig("fomaml", inner_steps=3, inner_lr=0.1),
    "reptile": AlgorithmConfig("reptile", inner_steps=3, inner_lr=0.1),
    "metasgd": AlgorithmConfig("metasgd", inner_steps=3, inner_lr=0.1),
    "anil": AlgorithmConfig("anil", inner_steps=3, inner_lr=0.1),
    "maml++": AlgorithmConfig(
        "maml", inner_steps=3, inner_lr=0.1, per_step_lr=True, multi_step_loss=True
    ),
    "maml-bce-chunked": AlgorithmConfig(
        "maml", inner_steps=2, inner_lr=0.1, loss="bce", chunk_size=2
    ),
}


def count_encodes(model: RecModel) -> list[int]:
    calls = [0]
    encode = model.encode

    def counted(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return encode(users, items)

    model.encode = counted  # the instance attribute shadows the method
    return calls


@pytest.mark.parametrize("name", list(HOIST_CONFIGS))
def test_encoding_once_per_task_equals_the_full_forward_pass(name: str) -> None:
    """MeLU's feature encoder holds no inner-loop parameter: it runs once per set, outside the
    inner loop, with the same loss and meta-gradients (embeddings included) as the full model."""
    cfg, model = dataclasses.replace(HOIST_CONFIGS[name], buckets=1), tiny_melu()
    params, batch = params_of(model), make_batch(T=5, seed=11, implicit=cfg.loss == "bce")
    state = state_for(cfg, model, params)
    calls = count_encodes(model)
    loss1, g1 = meta_loss_and_grads(cfg, model, params, batch, state=state)
    chunks = -(-batch.n_tasks // (cfg.chunk_size or batch.n_tasks))
    # support and query, once per chunk: two calls under vmap, one on both sets (analytic path)
    assert calls[0] == (1 if cfg.name in ("maml", "fomaml", "metasgd", "anil") else 2) * chunks
    calls[0] = 0
    loss0, g0 = meta_loss_and_grads(
        dataclasses.replace(cfg, encode_once=False), model, params, batch, state=state
    )
    assert calls[0] > 2 * chunks  # the full forward pass at every inner step
    assert torch.allclose(loss0, loss1, atol=1e-12)
    assert_grads_close(g0, g1, tol=1e-12)
    emb = [k for k in params if k.startswith(("user_features.", "item_features."))]
    assert emb and all(g1[k].abs().sum() > 0 for k in emb)  # meta-gradients reach the encoder
    if cfg.name != "reptile" and cfg.loss == "mse":  # the loop reference: MAML family, mse
        ref_loss, ref = loop_reference(
            dataclasses.replace(cfg, chunk_size=None), model, params, batch, state
        )
        assert torch.allclose(loss1, ref_loss, atol=1e-12)
        assert_grads_close(g1, ref)


def test_encoder_in_the_inner_loop_runs_the_full_model() -> None:
    model = tiny_melu()
    params, batch = params_of(model), make_batch(T=3, seed=12)
    cfg = AlgorithmConfig("maml", inner_steps=2, inner_lr=0.1, adapt=("item_features.*", "head.*"))
    calls = count_encodes(model)
    loss, grads = meta_loss_and_grads(cfg, model, params, batch)
    assert calls[0] > 2  # an adapted embedding: the encoder runs at every step
    ref_loss, ref = loop_reference(cfg, model, params, batch, {})
    assert torch.allclose(loss, ref_loss, atol=1e-12)
    assert_grads_close(grads, ref)


def test_adapt_batch_encoding_once_equals_the_full_model() -> None:
    model, batch = tiny_melu(), make_batch(T=4, seed=13)
    params = params_of(model)
    cfg = AlgorithmConfig("maml", inner_steps=3, inner_lr=0.1)
    a = adapt_batch(cfg, model, params, batch.support)
    b = adapt_batch(dataclasses.replace(cfg, encode_once=False), model, params, batch.support)
    assert_grads_close(a, b, tol=1e-12)


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile", "metasgd", "finetune"])
def test_sorted_chunks_equal_unsorted(name: str) -> None:
    """Tasks ordered by support size before chunking (each chunk cut to its own longest task):
    the same meta-loss and meta-gradients."""
    model = tiny_melu()
    g = torch.Generator().manual_seed(14)
    s_real, q_real = [1, 8, 2, 7, 3, 8, 1], [3, 1, 2, 3, 2, 1, 3]
    batch = EpisodeBatch(
        make_set(g, 7, 8, s_real),
        make_set(g, 7, 3, q_real),
        torch.arange(7),
        torch.zeros(7, dtype=torch.int64),
    )
    cfg = AlgorithmConfig(name, inner_steps=2, inner_lr=0.1)
    params = params_of(model)
    state = state_for(cfg, model, params)
    loss, grads = meta_loss_and_grads(cfg, model, params, batch, state=state)
    for chunk in (2, 3, None):
        c = dataclasses.replace(cfg, chunk_size=chunk, sort_tasks=True)
        loss_s, grads_s = meta_loss_and_grads(c, model, params, batch, state=state)
        assert torch.allclose(loss, loss_s, atol=1e-12)
        assert_grads_close(grads, grads_s, tol=1e-12)
