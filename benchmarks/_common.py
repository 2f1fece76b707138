"""Helpers shared by the benchmark scripts: provenance, data, JSONL rows, markdown tables.

Not part of the library. Every result row carries where it came from (commit, whether the
library's tree was dirty, seed, a hash of the configuration, the machine and versions), so a
number in RESULTS.md can be traced to the run that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from metarec.config import config_hash  # noqa: F401  (re-exported: benchmarks hash their settings like scenarios)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------- provenance
def git_commit() -> dict[str, Any]:
    """``{"commit": HEAD or "uncommitted", "dirty": bool}``; dirty = metarec/ differs from HEAD."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "metarec"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {"commit": head, "dirty": bool(status.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "uncommitted", "dirty": True}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, torch threads, versions, and the GPU name when ``device`` is CUDA."""
    import numpy as np
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count()
    info: dict[str, Any] = {
        "device": device,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def positive_int(value: str) -> int:
    """argparse type: a whole number >= 1, with a message that says so."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an integer; pass a whole number >= 1"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is < 1; pass a whole number >= 1")
    return n


def int_list(value: str) -> list[int]:
    """argparse type: comma-separated whole numbers >= 1 (``"4,8,32"``)."""
    return [positive_int(v) for v in value.split(",") if v.strip()] or [positive_int(value)]


# ---------------------------------------------------------------------- data
def data_root() -> Path | None:
    """``$METAREC_DATA`` when it names an existing folder, else ``None``."""
    root = os.environ.get("METAREC_DATA")
    return Path(root) if root and Path(root).is_dir() else None


def load_melu_movielens(root: Path):
    """MovieLens-1M with MeLU's item features, and MeLU's split (``(table, splits)``)."""
    from metarec.data.readers import read_movielens_1m
    from metarec.episodes.splits import melu_split

    table = read_movielens_1m(root / "movielens-1m", melu_extra=True)
    return table, melu_split(table, seed=0)


def load_synthetic_melu_like(seed: int = 0, n_users: int = 300, n_items: int = 500):
    """Synthetic stand-in for MeLU on MovieLens: 4 user + 4 item categorical features plus the
    multi-valued ``tags`` (9 embedded features, the same input width as MeLU's 4 + 5), users
    with 13..100 interactions, a user-level pool (``(table, pool)``). ``n_users`` and
    ``n_items`` are per domain (8 domains); smaller values make a quicker table for smoke runs."""
    import numpy as np

    from metarec.data.synthetic import make_synthetic
    from metarec.episodes.pool import build_pool

    table = make_synthetic(
        n_domains=8,
        n_users=n_users,
        n_items=n_items,
        density=0.08,
        n_user_features=4,
        n_item_features=4,
        n_values=12,
        seed=seed,
    )
    pool = build_pool(
        table,
        np.arange(len(table)),
        table.users,
        "meta-train",
        "user",
        min_interactions=13,
        max_interactions=100,
    )
    return table, pool


# ---------------------------------------------------------------------- output
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]], append: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])
