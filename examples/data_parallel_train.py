"""Data-parallel meta-training: the same run on 2 processes equals 1 process on the global batch.

`torchrun --nproc-per-node 2 -m metarec train SCENARIO --out RUN` splits every global
meta-batch over the ranks (gloo on CPU, NCCL on GPU) and all-reduces the meta-gradients; only
rank 0 writes RUN. This script launches that command on a small synthetic scenario (2 CPU
processes on 127.0.0.1, 4 steps), trains the same scenario in this process, and prints the
largest weight difference (float32 summation order only).

Run: python examples/data_parallel_train.py
"""

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from metarec.config import load_scenario
from metarec.runs.checkpoint import load_tensors
from metarec.train.loop import train

root = Path(__file__).resolve().parent.parent
small = [
    "data.synthetic.n_domains=3",
    "train.steps=4",
    "train.val_every=4",
    "train.checkpoint_every=4",
    "train.val_tasks=16",
    "algorithm.meta_batch=8",
    "train.progress=false",
]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
with tempfile.TemporaryDirectory() as tmp:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        "-m",
        "metarec",
        "train",
        "synthetic-cold-start",
        "--out",
        f"{tmp}/dp",
        *[a for kv in small for a in ("--set", kv)],
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"torchrun failed:\n{done.stderr[-2000:]}")
    print(done.stdout.strip().splitlines()[0])
    train(
        load_scenario(root / "tasks" / "synthetic-cold-start.toml", small),
        f"{tmp}/one",
        evaluate_test=False,
    )
    dp = load_tensors(f"{tmp}/dp/checkpoints/last.pt")["params"]
    one = load_tensors(f"{tmp}/one/checkpoints/last.pt")["params"]
    diff = max(float((dp[k] - one[k]).abs().max()) for k in one)
    print(f"2 ranks vs 1 process after 4 steps: max |weight difference| = {diff:.2e}")
