"""Data-parallel meta-training: 2 CPU processes (gloo on 127.0.0.1) end with the weights of one
process on the same global meta-batch; a dead rank fails the run with a clear message; torchrun
runs ``metarec train`` and resumes exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from metarec._errors import ConfigError
from metarec.train.distributed import DistContext, init, world_from_env

ROOT = Path(__file__).resolve().parent.parent

# One data-parallel (or single-process) training loop in float64, as metarec.train.loop runs it:
# global draw, shard, local meta-gradient, all-reduce, Adam. argv: out.pt steps [die_at_step]
WORKER = textwrap.dedent("""
    import os, sys, torch
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    import numpy as np
    from metarec.algorithms import AlgorithmConfig, meta_loss_and_grads
    from metarec.data.synthetic import make_synthetic
    from metarec.train.distributed import init
    from metarec.episodes.pool import build_pool
    from metarec.episodes.sampler import SamplerConfig, TaskSampler
    from metarec.models import build_model

    out, steps = sys.argv[1], int(sys.argv[2])
    die_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
    ctx = init(torch.device("cpu"))
    t = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
    pool = build_pool(t, np.arange(len(t)), t.users, "all", "user", min_interactions=15)
    sampler = TaskSampler(t, pool, SamplerConfig(n_support=None, n_query=5), seed=3, dtype=torch.float64)
    model = build_model("melu", t, embedding_dim=4, hidden=(8, 6), seed=1).double()
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=0.01)
    cfg = AlgorithmConfig("maml", inner_steps=2, inner_lr=0.1, meta_batch=7)
    for step in range(1, steps + 1):
        if die_at is not None and ctx.rank == 1 and step == die_at:
            os._exit(3)  # a rank that dies mid-run
        batch = ctx.shard(sampler.sample(cfg.meta_batch))
        loss, grads = meta_loss_and_grads(cfg, model, params, batch)
        loss, grads = ctx.all_reduce(cfg, loss, grads, batch)
        for k, p in params.items():
            p.grad = grads[k]
        opt.step()
        opt.zero_grad(set_to_none=True)
    if ctx.is_main:
        torch.save({k: v.detach() for k, v in params.items()}, out)
    ctx.close()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    script: Path, args: list[str], world: int, timeout: float = 120, extra_env: dict | None = None
) -> list[subprocess.CompletedProcess]:
    """``world`` processes of ``script`` with torchrun's environment (static rendezvous on 127.0.0.1)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(world),
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    out = []
    for p in procs:
        try:
            so, se = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"a rank did not finish within {timeout} s (hang)") from None
        out.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    return out


def test_two_ranks_equal_one_process_on_the_global_meta_batch(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    res = launch(script, [str(tmp_path / "dp.pt"), "4"], world=2)
    assert all(r.returncode == 0 for r in res), [r.stderr[-2000:] for r in res]
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one.pt"), "4"],
        capture_output=True,
        text=True,
        env={
            k: v
            for k, v in {**os.environ, "PYTHONPATH": str(ROOT)}.items()
            if k not in ("WORLD_SIZE", "RANK")
        },
        timeout=120,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    dp, one = torch.load(tmp_path / "dp.pt"), torch.load(tmp_path / "one.pt")
    init_w = dict(
        __import__("metarec.models", fromlist=["build_model"])
        .build_model(
            "melu",
            __import__("metarec.data.synthetic", fromlist=["make_synthetic"]).make_synthetic(
                n_domains=2, n_users=30, n_items=40, seed=0
            ),
            embedding_dim=4,
            hidden=(8, 6),
            seed=1,
        )
        .double()
        .named_parameters()
    )
    assert dp.keys() == one.keys()
    for k in one:
        assert dp[k].dtype == torch.float64
        assert torch.allclose(dp[k], one[k], rtol=1e-9, atol=1e-11), k
    assert any(
        not torch.allclose(one[k], init_w[k].detach()) for k in one
    )  # training moved the weights


@pytest.mark.slow  # three process starts (about a minute on a busy 2-core machine)
def test_a_dead_rank_fails_the_run_with_a_clear_message(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    res = launch(
        script,
        [str(tmp_path / "dp.pt"), "5", "3"],
        world=2,
        timeout=150,
        extra_env={"METAREC_DIST_TIMEOUT": "30"},
    )
    assert res[1].returncode == 3
    assert res[0].returncode != 0
    assert (
        "DistributedError: rank 0 of 2: the all-reduce of the meta-gradients at step 3 failed"
        in res[0].stderr
    )
    assert "--resume" in res[0].stderr
    assert not (tmp_path / "dp.pt").exists()


def _torchrun(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "METAREC_DATA"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "metarec",
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


SMALL = [
    "--set",
    "data.synthetic.n_domains=3",
    "--set",
    "train.val_every=3",
    "--set",
    "train.checkpoint_every=3",
    "--set",
    "train.val_tasks=16",
    "--set",
    "algorithm.meta_batch=8",
    "--set",
    "train.progress=false",
]


@pytest.mark.slow  # two torchrun launches of 2 ranks and one in-process run (over a minute on 2 cores)
def test_torchrun_train_equals_one_process_and_resumes_exactly(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m metarec train synthetic-cold-start``: 3 steps, then
    ``--resume`` to 6; the weights equal one process trained 6 steps on the same global meta-batch."""
    from metarec.config import load_scenario
    from metarec.runs.checkpoint import load_tensors
    from metarec.train.loop import train

    run = tmp_path / "dp"
    first = _torchrun(
        ["train", "synthetic-cold-start", "--out", str(run), *SMALL, "--set", "train.steps=3"]
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert (run / "checkpoints" / "last.pt").exists() and (run / "test_metrics.json").exists()
    assert not list(run.glob("*rank*"))  # only rank 0 writes the run directory
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # one log, not one per rank
    again = _torchrun(
        [
            "train",
            "synthetic-cold-start",
            "--out",
            str(run),
            *SMALL,
            "--set",
            "train.steps=6",
            "--resume",
        ]
    )
    assert again.returncode == 0, again.stderr[-3000:]

    sets = dict(s.split("=", 1) for s in SMALL[1::2])
    sc = load_scenario(
        ROOT / "tasks" / "synthetic-cold-start.toml",
        [*(f"{k}={v}" for k, v in sets.items()), "train.steps=6"],
    )
    train(sc, tmp_path / "one", evaluate_test=False)
    dp = load_tensors(run / "checkpoints" / "last.pt")
    one = load_tensors(tmp_path / "one" / "checkpoints" / "last.pt")
    assert int(dp["step"]) == int(one["step"]) == 6
    for k, v in one["params"].items():
        assert torch.allclose(dp["params"][k], v, rtol=1e-4, atol=1e-6), k


def test_context_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match=r"RANK=2, WORLD_SIZE=2: need 0 <= RANK < WORLD_SIZE"):
        world_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match=r"RANK='x': must be an integer"):
        world_from_env()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    ctx = init(torch.device("cpu"))
    assert ctx.world == 1 and ctx.is_main and not ctx.owns_group
    from test_algorithms import make_batch

    batch = make_batch(T=3)
    assert ctx.shard(batch) is batch
    four = DistContext(rank=1, world=4)
    with pytest.raises(
        ConfigError,
        match=r"algorithm.meta_batch=3: a data-parallel run on 4 ranks needs at least one task",
    ):
        four.shard(batch)
    parts = [DistContext(rank=r, world=2).shard(batch).units.tolist() for r in range(2)]
    assert parts == [[0], [1, 2]]  # disjoint, covering the global meta-batch
