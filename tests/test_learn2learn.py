"""learn2learn's MAML on metarec tasks, as installed by benchmarks/install_learn2learn.sh (the
pure-Python part; `make learn2learn`): the example runs its learn2learn part, and learn2learn's
inner loop gives metarec's inner loop's adapted predictions (float64)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import metarec as mr
from metarec.interop import l2l_maml, maml_step

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("learn2learn") is None,
        reason="learn2learn not installed: run `make learn2learn` (benchmarks/install_learn2learn.sh)",
    ),
]

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_runs_its_learn2learn_part(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "learn2learn_interop.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mean query loss over 4 tasks" in proc.stdout and "skipped" not in proc.stdout


def test_learn2learn_inner_loop_equals_metarecs(f64):
    table = mr.load_table(mr.load_scenario(data={"synthetic": {"n_domains": 2, "n_users": 40,
                                                               "n_items": 60, "density": 0.3}}).data)  # fmt: skip
    splits = mr.build_splits(
        table, mr.load_scenario(protocol={"max_interactions": "none"}).protocol
    )
    batch = mr.TaskSampler(
        table, splits.pools["meta-train"], mr.SamplerConfig(5, 10), seed=0
    ).sample(3)
    model = mr.build_model("melu", table, embedding_dim=4, hidden=(8,))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    cfg = mr.AlgorithmConfig("maml", inner_steps=2, inner_lr=0.05)
    fast = mr.adapt_batch(cfg, model, params, batch.support)
    with torch.no_grad():
        ours = mr.predict_batch(model, params, fast, batch.query.users, batch.query.items)  # (T, N)
    maml = l2l_maml(model, lr=0.05)
    for t in range(batch.n_tasks):
        learner = maml.clone()
        maml_step(learner, batch, t, steps=2)
        q = batch.query.select(slice(t, t + 1))
        theirs = learner(q.users, q.items).detach()  # (1, N)
        mask = q.mask[0]
        torch.testing.assert_close(theirs[0][mask], ours[t][mask], rtol=1e-10, atol=1e-10)
