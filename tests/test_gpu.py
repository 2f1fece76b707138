"""CUDA: engine equivalence (analytic and vmap, against CPU float64), bf16 autocast against
float32, training, exact resume and fast adaptation with ``train.device="cuda"``.

Every test is marked ``gpu`` and skips without CUDA (``pytest -m gpu`` runs them)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from _helpers import SMALL_TRAIN
from test_algorithms import assert_grads_close, make_batch, params_of, state_for, tiny_melu

from metarec.algorithms import AlgorithmConfig, adapt_batch, meta_loss_and_grads
from metarec.config import load_scenario
from metarec.runs.checkpoint import load_tensors
from metarec.train.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
]

SMALL = [*SMALL_TRAIN, "train.device=cuda"]


@pytest.mark.usefixtures("f64")
@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil", "reptile", "global"])
@pytest.mark.parametrize("engine", ["analytic", "vmap"])
def test_cuda_meta_gradients_equal_cpu_float64(name: str, engine: str) -> None:
    if engine == "analytic" and name in ("reptile", "global"):
        engine = "auto"  # the analytic path covers the MAML family; others take the general path
    cfg = AlgorithmConfig(name, inner_steps=2, inner_lr=0.1, engine=engine, buckets=2)
    model = tiny_melu()
    params, batch = params_of(model), make_batch(T=5, seed=3)
    state = state_for(cfg, model, params)
    loss_c, g_c = meta_loss_and_grads(cfg, model, params, batch, state=state)
    dev = torch.device("cuda")
    model_g = model.to(dev)
    loss_g, g_g = meta_loss_and_grads(
        cfg,
        model_g,
        {k: v.to(dev) for k, v in params.items()},
        batch.to(dev),
        state={k: v.detach().to(dev) for k, v in state.items()},
    )
    assert g_g and all(v.device.type == "cuda" for v in g_g.values())
    assert torch.allclose(loss_g.cpu(), loss_c, atol=1e-10)
    assert_grads_close({k: v.cpu() for k, v in g_g.items()}, g_c, tol=1e-9)
    a = adapt_batch(
        cfg,
        model_g,
        {k: v.to(dev) for k, v in params.items()},
        batch.support.to(dev),
        state={k: v.detach().to(dev) for k, v in state.items()},
    )
    b = adapt_batch(cfg, model.cpu(), params, batch.support, state=state)
    assert_grads_close({k: v.cpu() for k, v in a.items()}, b, tol=1e-9)


@pytest.mark.parametrize("engine", ["analytic", "vmap"])
def test_cuda_bf16_autocast_matches_float32(engine: str) -> None:
    """bf16 autocast on CUDA: meta-loss within 2% and meta-gradients within cosine 0.99 of float32."""
    dev = torch.device("cuda")
    model = tiny_melu().float().to(dev)
    params = {k: v.detach() for k, v in model.named_parameters()}
    batch = make_batch(T=5, seed=4).to(dev, torch.float32)
    cfg = AlgorithmConfig("maml", inner_steps=3, inner_lr=0.1, engine=engine)
    loss32, g32 = meta_loss_and_grads(cfg, model, params, batch)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss16, g16 = meta_loss_and_grads(cfg, model, params, batch)
    assert abs(float(loss16) - float(loss32)) <= 0.02 * abs(float(loss32))
    a = torch.cat([g32[k].flatten() for k in g32])
    b = torch.cat([g16[k].float().flatten() for k in g32])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


def test_cuda_train_resume_and_adapt(tmp_path) -> None:
    """``train.device="cuda"``: a run trains, a killed run resumes to the same weights, and the
    trained run fast-adapts cold users on the GPU."""
    from metarec.recommend.load import load_run

    sc = load_scenario("tasks/synthetic-cold-start.toml", [*SMALL, "train.steps=20"])
    res = train(sc, tmp_path / "full")
    assert res.steps == 20 and (tmp_path / "full" / "test_metrics.json").exists()
    train(sc, tmp_path / "cut", stop_after=10, evaluate_test=False)
    train(sc, tmp_path / "cut", resume=True, evaluate_test=False)
    a = load_tensors(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_tensors(tmp_path / "cut" / "checkpoints" / "last.pt")
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    bf = load_scenario(
        "tasks/synthetic-cold-start.toml", [*SMALL, "train.steps=10", "train.bf16=true"]
    )
    assert train(bf, tmp_path / "bf16", evaluate_test=False).steps == 10

    meta = load_run(tmp_path / "full", device="cuda")
    assert meta.device.type == "cuda"
    items = meta.item_ids.decode([1, 2, 3, 4, 5])  # raw ids of known items
    support = pd.DataFrame(
        {
            "user": ["cold-1"] * 3 + ["cold-2"] * 2,
            "item": items,
            "rating": [5.0, 3.0, 4.0, 1.0, 2.0],
        }
    )
    rec = meta.adapt_many(support)
    assert rec.n_tasks == 2


def test_cuda_engine_throughput_quick(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "engine.jsonl"
    res = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "engine_throughput.py"),
            "--quick",
            "--device",
            "cuda",
            "--data",
            "synthetic",
            "--out",
            str(out),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "cuda" in out.with_suffix(".md").read_text()


def test_cuda_analytic_path_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default engine picks the analytic inner loop on CUDA too (no torch.func call)."""
    import metarec.algorithms.meta as meta

    def boom(*a, **k):
        raise AssertionError("the general torch.func path ran")

    monkeypatch.setattr(meta, "_maml_losses", boom)
    dev = torch.device("cuda")
    model = tiny_melu().to(dev)
    params = {k: v.detach() for k, v in model.named_parameters()}
    cfg = dataclasses.replace(AlgorithmConfig("maml", inner_steps=2), engine="auto")
    loss, _ = meta_loss_and_grads(cfg, model, params, make_batch(T=3).to(dev, torch.float32))
    assert torch.isfinite(loss)
