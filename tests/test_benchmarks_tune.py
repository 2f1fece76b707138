"""benchmarks/learners_tune.py: a meta-val-only search reads each learner's own selection score,
including the ranking learners' per-support-size ``ndcg@10_all``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_elae_meta_val_per_support_size(tmp_path: Path) -> None:
    out = tmp_path / "tune.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "learners_tune.py"),
            "--scenario",
            str(ROOT / "tasks" / "synthetic-cold-start.toml"),
            "--method",
            "elae",
            "--seeds",
            "1",
            "--grid",
            '[{"shots": [1, 3]}, {"shots": [1, 3], "lambdas": [1000.0]}]',
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        val = row["meta_val"]
        assert set(val) == {"ndcg@10_all@k=1", "ndcg@10_all@k=3"}, val
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in val.values()), val
    # one strength instead of a grid: never better on meta-val than choosing among ten
    grid, one = (sum(r["meta_val"].values()) for r in rows)
    assert grid >= one - 1e-12
    assert "elae on synthetic-cold-start: meta-val" in proc.stdout
