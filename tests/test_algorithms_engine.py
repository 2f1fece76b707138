"""The analytic inner loop and support-size buckets: float64 equality with the general
``torch.func`` path, the per-task loop and naive second-order autograd; bucket optimality; errors;
bf16 autocast against float32."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from test_algorithms import (
    assert_grads_close,
    loop_reference,
    make_batch,
    make_set,
    naive_maml,
    params_of,
    state_for,
    tiny_gmf,
    tiny_melu,
)

from metarec._errors import ConfigError
from metarec.algorithms import AlgorithmConfig, adapt_batch, meta_loss_and_grads, predict_batch
from metarec.algorithms.buckets import bucket_tasks, padded_cells
from metarec.algorithms.mlp import mlp_spec
from metarec.episodes.batch import EpisodeBatch
from metarec.models import build_model, split_params


def ragged_batch(T: int = 7, seed: int = 21, implicit: bool = False) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    s_real = [1, 8, 2, 7, 3, 8, 5, 4, 6][:T]
    q_real = [3, 1, 2, 3, 2, 1, 3, 2, 2][:T]
    return EpisodeBatch(
        make_set(g, T, 8, s_real, implicit),
        make_set(g, T, 3, q_real, implicit),
        torch.arange(T),
        torch.zeros(T, dtype=torch.int64),
    )


CONFIGS = {
    "maml": AlgorithmConfig("maml", inner_steps=3, inner_lr=0.1),
    "fomaml": AlgorithmConfig("fomaml", inner_steps=3, inner_lr=0.1),
    "metasgd": AlgorithmConfig("metasgd", inner_steps=2, inner_lr=0.1),
    "anil": AlgorithmConfig("anil", inner_steps=3, inner_lr=0.1),
    "maml++": AlgorithmConfig(
        "maml", inner_steps=3, inner_lr=0.1, per_step_lr=True, multi_step_loss=True
    ),
    "fomaml-per-step": AlgorithmConfig("fomaml", inner_steps=2, inner_lr=0.1, per_step_lr=True),
    "maml-bce": AlgorithmConfig("maml", inner_steps=2, inner_lr=0.2, loss="bce"),
    "first-layer-only": AlgorithmConfig(
        "maml", inner_steps=2, inner_lr=0.2, adapt=("decision.0.weight",)
    ),
    "upper-layers": AlgorithmConfig(
        "maml", inner_steps=2, inner_lr=0.2, adapt=("decision.1.*", "head.weight")
    ),
}


@pytest.mark.usefixtures("f64")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_analytic_engine_equals_vmap_and_the_loop(name: str) -> None:
    cfg, model = CONFIGS[name], tiny_melu()
    params, batch = params_of(model), ragged_batch(implicit=cfg.loss == "bce")
    state = state_for(cfg, model, params)
    fast, _ = split_params(
        model, cfg.adapt or (("head.*",) if cfg.name == "anil" else None), params
    )
    assert mlp_spec(model, fast, cfg.loss) is not None
    loss_v, g_v = meta_loss_and_grads(
        dataclasses.replace(cfg, engine="vmap", buckets=1), model, params, batch, state=state
    )
    for buckets, chunk in ((1, None), (3, None), (2, 2)):
        c = dataclasses.replace(cfg, engine="analytic", buckets=buckets, chunk_size=chunk)
        loss_a, g_a = meta_loss_and_grads(c, model, params, batch, state=state)
        assert torch.allclose(loss_a, loss_v, atol=1e-12), (buckets, chunk)
        assert_grads_close(g_a, g_v, tol=1e-10)
    if cfg.loss == "mse":
        ref_loss, ref = loop_reference(cfg, model, params, batch, state)
        assert torch.allclose(loss_a, ref_loss, atol=1e-12)
        assert_grads_close(g_a, ref)


@pytest.mark.usefixtures("f64")
def test_analytic_second_order_equals_naive_autograd_and_first_order_differs() -> None:
    """Second order through the hand-written inner gradients = autograd.grad(create_graph=True)."""
    model, batch = tiny_melu(), make_batch(T=3, seed=1)
    batch = EpisodeBatch(
        batch.support,
        dataclasses.replace(batch.query, mask=torch.ones(3, 3, dtype=torch.bool)),
        batch.units,
        batch.domains,
    )
    params = params_of(model)
    cfg = AlgorithmConfig("maml", inner_steps=3, inner_lr=0.3, engine="analytic")
    _, second = meta_loss_and_grads(cfg, model, params, batch)
    assert_grads_close(second, naive_maml(model, params, batch, 3, 0.3, first_order=False))
    _, first = meta_loss_and_grads(dataclasses.replace(cfg, first_order=True), model, params, batch)
    assert_grads_close(first, naive_maml(model, params, batch, 3, 0.3, first_order=True))
    for k in ("decision.0.weight", "head.weight", "item_features.embeddings.genre.weight"):
        assert not torch.allclose(first[k], second[k], atol=1e-8), k


@pytest.mark.usefixtures("f64")
@pytest.mark.parametrize("name", ["maml", "metasgd", "maml++"])
def test_analytic_adapt_and_predict_equal_vmap(name: str) -> None:
    cfg, model = CONFIGS[name], tiny_melu()
    params, batch = params_of(model), ragged_batch(seed=22)
    state = state_for(cfg, model, params)
    a = adapt_batch(
        dataclasses.replace(cfg, engine="analytic"), model, params, batch.support, state=state
    )
    v = adapt_batch(
        dataclasses.replace(cfg, engine="vmap"), model, params, batch.support, state=state
    )
    assert_grads_close(a, v, tol=1e-12)
    model.eval()
    with torch.no_grad():
        p_a = predict_batch(model, params, a, batch.query.users, batch.query.items)
        ref = torch.stack(
            [
                torch.func.functional_call(
                    model,
                    {**params, **{k: x[t] for k, x in a.items()}},
                    (batch.query.users[t], batch.query.items[t]),
                )
                for t in range(batch.n_tasks)
            ]
        )
    assert torch.allclose(p_a, ref, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_buckets_minimise_padded_area(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, 30, (7,), generator=g)
    srt = sorted(lens.tolist())
    for k in (1, 2, 3, 7, 9):
        groups = bucket_tasks(lens, k)
        assert len(groups) <= k
        assert sorted(torch.cat(groups).tolist()) == list(range(7))  # every task exactly once
        best = min(  # brute force over every cut of the sorted lengths into at most k groups
            sum((b - a) * srt[b - 1] for a, b in zip((0, *cuts), (*cuts, 7), strict=True))
            for m in range(min(k, 7))
            for cuts in itertools.combinations(range(1, 7), m)
        )
        assert padded_cells(lens, groups) == best
    assert padded_cells(lens, bucket_tasks(lens, 7)) == int(
        lens.sum()
    )  # one width per distinct length


def test_engine_errors() -> None:
    with pytest.raises(
        ConfigError,
        match=r"engine='fast': unknown engine; choose one of \('auto', 'analytic', 'vmap'\)",
    ):
        AlgorithmConfig(engine="fast")
    with pytest.raises(ConfigError, match=r"buckets=0: .*pass buckets >= 1"):
        AlgorithmConfig(buckets=0)
    model, batch = tiny_gmf(), make_batch(T=2)
    with pytest.raises(
        ConfigError,
        match=r"engine='analytic': GMF .*has no analytic inner loop.*pass engine='auto'",
    ):
        meta_loss_and_grads(
            AlgorithmConfig("maml", engine="analytic"), model, params_of(model), batch
        )
    melu = build_model(
        "melu",
        __import__("test_algorithms").tiny_melu_table(),
        embedding_dim=3,
        hidden=(4,),
        dropout=0.1,
    )
    with pytest.raises(ConfigError, match=r"engine='analytic': MeLU .*needs MeLU without dropout"):
        meta_loss_and_grads(
            AlgorithmConfig("maml", engine="analytic"), melu, params_of(melu), batch
        )
    # auto falls back to the general path for the same model
    loss, _ = meta_loss_and_grads(AlgorithmConfig("maml"), melu, params_of(melu), batch)
    assert torch.isfinite(loss)


def test_bf16_autocast_matches_float32() -> None:
    """bf16 autocast (CPU): meta-loss within 2% and meta-gradients within cosine 0.99 of float32."""
    model, batch = tiny_melu(), ragged_batch(seed=23)
    batch = batch.to("cpu", torch.float32)
    params = {k: v.detach().float() for k, v in model.float().named_parameters()}
    for engine in ("analytic", "vmap"):
        cfg = AlgorithmConfig("maml", inner_steps=3, inner_lr=0.1, engine=engine)
        loss32, g32 = meta_loss_and_grads(cfg, model, params, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss16, g16 = meta_loss_and_grads(cfg, model, params, batch)
        assert abs(float(loss16) - float(loss32)) <= 0.02 * abs(float(loss32)), engine
        a = torch.cat([g32[k].flatten() for k in g32])
        b = torch.cat([g16[k].float().flatten() for k in g32])
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99, engine
