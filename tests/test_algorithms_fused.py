"""The analytic inner loop's written-out reverse pass (:mod:`metarec.algorithms.mlp_fused`):
float64 equality with autograd through the closed-form loop, with the engine's previous path,
which configurations take it, autocast, and the distinct-row encoding."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from test_algorithms import assert_grads_close, params_of, state_for, tiny_melu
from test_algorithms_engine import CONFIGS, ragged_batch

from metarec.algorithms import AlgorithmConfig, meta_grads, meta_loss_and_grads
from metarec.algorithms.meta_grads import _encode_rows
from metarec.algorithms.mlp import MLPSpec, mlp_query_losses, mlp_spec
from metarec.algorithms.mlp_fused import fused_applies, fused_query_losses
from metarec.algorithms.state import state_lrs
from metarec.models import split_params


def _mlp(hidden: tuple[int, ...], width: int, seed: int) -> tuple[MLPSpec, dict]:
    g = torch.Generator().manual_seed(seed)
    layers = tuple((f"decision.{i}.weight", f"decision.{i}.bias") for i in range(len(hidden)))
    spec = MLPSpec(layers, ("head.weight", "head.bias"))
    sizes = [width, *hidden, 1]
    fast = {}
    for (wn, bn), i, o in zip((*layers, spec.head), sizes[:-1], sizes[1:], strict=True):
        fast[wn] = (0.7 * torch.randn(o, i, generator=g)).requires_grad_()
        fast[bn] = (0.3 * torch.randn(o, generator=g)).requires_grad_()
    return spec, fast


@pytest.mark.usefixtures("f64")
@pytest.mark.parametrize(
    ("hidden", "loss", "first_order", "every_step"),
    [
        *itertools.product([(4,), (4, 3)], ["mse", "bce"], [False, True], [False, True]),
        ((5, 4, 3), "mse", False, True),
        ((5, 4, 3), "bce", False, False),
    ],
)
def test_fused_equals_autograd_through_the_closed_form(
    hidden: tuple[int, ...], loss: str, first_order: bool, every_step: bool
) -> None:
    """Values and gradients (weights and encodings, weighted per step and task) equal
    mlp_query_losses differentiated by autograd: second order exactly, first order as well."""
    T, ns, nq, width, steps = 4, 6, 3, 5, 3
    spec, fast = _mlp(hidden, width, seed=len(hidden))
    g = torch.Generator().manual_seed(7)
    rows = torch.randn(T, ns + nq, width, generator=g).requires_grad_()
    ms, mq = torch.rand(T, ns, generator=g) < 0.7, torch.rand(T, nq, generator=g) < 0.8
    ms[0], mq[1, 0] = False, True  # a task with no support row; every task has a query row
    if loss == "mse":
        ys, yq = torch.randn(T, ns, generator=g), torch.randn(T, nq, generator=g)
    else:
        ys, yq = (torch.rand(T, n, generator=g).round() for n in (ns, nq))
    ys[~ms] = float("nan")  # padding targets are never read
    weights = torch.randn(steps if every_step else 1, T, generator=g)
    kw = {"first_order": first_order, "loss": loss, "every_step": every_step}
    ref = mlp_query_losses(
        spec, fast, {}, (rows[:, :ns], ys, ms), (rows[:, ns:], yq, mq), steps, 0.3, **kw
    )
    got = fused_query_losses(spec, fast, rows, (ys, ms), (yq, mq), steps, 0.3, **kw)
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-13)
    leaves = [*fast.values(), rows]

    def grads(losses: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        total = sum((w * x).sum() for w, x in zip(weights, losses, strict=True))
        assert isinstance(total, torch.Tensor)
        return torch.autograd.grad(total, leaves)

    for a, b in zip(grads(got), grads(ref), strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.usefixtures("f64")
@pytest.mark.parametrize("name", ["maml", "fomaml", "maml-bce", "maml-msl"])
def test_meta_gradients_equal_the_previous_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """meta_loss_and_grads with the written-out reverse pass equals it with autograd through
    the closed-form loop (the engine before it), chunked and bucketed alike."""
    configs = {
        **CONFIGS,
        "maml-msl": AlgorithmConfig("maml", inner_steps=3, inner_lr=0.1, multi_step_loss=True),
    }
    cfg, model = configs[name], tiny_melu()
    params, batch = params_of(model), ragged_batch(seed=5, implicit=cfg.loss == "bce")
    for buckets, chunk in ((1, None), (3, None), (2, 2)):
        c = dataclasses.replace(cfg, engine="analytic", buckets=buckets, chunk_size=chunk)
        loss_f, g_f = meta_loss_and_grads(c, model, params, batch)
        monkeypatch.setattr(meta_grads, "_FAST", False)
        loss_a, g_a = meta_loss_and_grads(c, model, params, batch)
        monkeypatch.setattr(meta_grads, "_FAST", True)
        assert torch.allclose(loss_f, loss_a, atol=1e-13)
        assert_grads_close(g_f, g_a, tol=1e-11)


@pytest.mark.parametrize(
    ("name", "fused"),
    [
        ("maml", True),
        ("fomaml", True),
        ("maml-bce", True),
        ("metasgd", False),  # learned per-entry rates
        ("maml++", False),  # learned per-step rates
        ("anil", False),  # the head alone adapts
        ("upper-layers", False),
    ],
)
def test_which_configurations_take_the_fused_path(name: str, fused: bool) -> None:
    cfg, model = CONFIGS[name], tiny_melu()
    params = params_of(model)
    fast, _ = split_params(
        model, cfg.adapt or (("head.*",) if cfg.name == "anil" else None), params
    )
    spec = mlp_spec(model, fast, cfg.loss)
    assert spec is not None
    lrs, step_lrs = state_lrs(cfg, state_for(cfg, model, params), fast)
    assert fused_applies(spec, fast, lrs, step_lrs) is fused


def test_autocast_backward_outside_the_autocast_region() -> None:
    """Under bf16 autocast the reverse pass runs with the forward's autocast state even when
    autograd runs it outside the region (as CUDA's backward thread does): no dtype clash, and
    gradients close to float32."""
    spec, fast32 = _mlp((6, 5), 7, seed=3)
    fast32 = {k: v.detach().float().requires_grad_() for k, v in fast32.items()}
    g = torch.Generator().manual_seed(2)
    rows = torch.randn(3, 11, 7, generator=g).requires_grad_()
    sup = (torch.randn(3, 8, generator=g), torch.ones(3, 8, dtype=torch.bool))
    qry = (torch.randn(3, 3, generator=g), torch.ones(3, 3, dtype=torch.bool))
    leaves = [rows, *fast32.values()]
    ref = torch.autograd.grad(
        fused_query_losses(spec, fast32, rows, sup, qry, 3, 0.1)[-1].sum(), leaves
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused_query_losses(spec, fast32, rows, sup, qry, 3, 0.1)[-1].sum()
    got = torch.autograd.grad(loss, leaves)  # outside the autocast region
    a = torch.cat([x.flatten() for x in ref])
    b = torch.cat([x.float().flatten() for x in got])
    assert all(x.dtype == torch.float32 for x in got)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


@pytest.mark.usefixtures("f64")
def test_encode_rows_gathers_the_encoding() -> None:
    """MeLU: each distinct (user, item) pair is encoded once and gathered back exactly."""
    model = tiny_melu()
    batch = ragged_batch(seed=9)
    users = torch.cat([batch.support.users, batch.query.users], 1)
    items = torch.cat([batch.support.items, batch.query.items], 1)
    slow = {k: v for k, v in params_of(model).items() if "features" in k}
    x, pos = _encode_rows(model, slow, users, items)
    assert x.shape[0] < users.numel() and pos.shape == users.shape
    assert torch.equal(x[pos], model.encode(users, items))
