"""benchmarks/paired_rows.py and summarize_rows.py on a small hand-made benchmark folder."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _folder(tmp_path: Path) -> Path:
    rows, per = [], []
    for seed in range(3):
        for algo, shift in (("a", 0.0), ("b", 0.1)):
            vals = [1.0 + 0.01 * u + shift + 0.001 * seed for u in range(8)]
            rows.append(
                {
                    "scenario": "s",
                    "state": "meta-test",
                    "algorithm": algo,
                    "seed": seed,
                    "shots": "default",
                    "metrics": {"mae": sum(vals) / len(vals)},
                    "train_seconds": 1.0,
                    "eval_seconds": 1.0,
                }
            )
            per.append(
                {
                    "state": "meta-test",
                    "algorithm": algo,
                    "seed": seed,
                    "shots": "default",
                    "metric": "mae",
                    "units": list(range(8)),
                    "values": vals,
                }
            )
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(tmp_path / "per_task.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in per)
    return tmp_path


def test_paired_rows_reports_the_difference_over_tasks_and_seeds(tmp_path: Path) -> None:
    out = _folder(tmp_path)
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "paired_rows.py"), str(out), "a", "b"],
        capture_output=True,
        text=True,
        check=True,
    )
    line = run.stdout.strip().splitlines()[-1].split("\t")
    assert line[:2] == ["meta-test", "default"]
    assert float(line[2]) == pytest.approx(-0.1)  # a is 0.1 below b on every task
    assert int(line[3]) == 24  # 8 tasks x 3 seeds, paired
    assert float(line[4]) < 1e-6 and float(line[5]) < 1e-6  # the same difference everywhere


def test_summarize_rows_names_the_best(tmp_path: Path) -> None:
    out = _folder(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "summarize_rows.py"),
            str(out / "results.jsonl"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| a | **1.0360**" in run.stdout.replace(" (0.0010)", "")


def test_summarize_rows_reads_a_gzipped_file(tmp_path: Path) -> None:
    out = _folder(tmp_path)
    gz = out / "results.jsonl.gz"
    gz.write_bytes(gzip.compress((out / "results.jsonl").read_bytes()))
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "summarize_rows.py"), str(gz)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| a | **1.0360**" in run.stdout.replace(" (0.0010)", "")
