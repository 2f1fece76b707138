"""Smoke test of benchmarks/adapt_latency.py: tiny settings, output structure only (no timing asserts)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location(
        "adapt_latency", ROOT / "benchmarks" / "adapt_latency.py"
    )
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_adapt_latency_smoke(tmp_path) -> None:
    bench = _module()
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Results\n\n## Other section\n\nkept as it is\n")
    out = tmp_path / "adapt_latency.json"
    argv = [
        "--data",
        "synthetic",
        "--items",
        "200",
        "--train-steps",
        "1",
        "--repeat",
        "3",
        "--warmup",
        "1",
        "--users",
        "8",
        "--batch-repeat",
        "1",
        "--loop-repeat",
        "1",
        "--shots",
        "4",
        "--out",
        str(out),
        "--results-md",
        str(results_md),
    ]
    bench.main(argv)
    res = json.loads(out.read_text())
    assert (
        res["benchmark"] == "adapt_latency"
        and res["device"] == "cpu"
        and res["workload"]["items"] == 200
    )
    for part in ("total", "adapt", "recommend"):
        assert (
            set(res["single"][part]) >= {"median_ms", "p90_ms", "min_ms", "n"}
            and res["single"][part]["n"] == 3
        )
    b = res["batched"]
    assert (
        b["users"] == 8
        and b["batched_s"] > 0
        and b["loop_s"] > 0
        and b["speedup_loop_over_batched"] > 0
    )
    assert b["max_abs_diff_batched_vs_loop"] < 1e-4
    assert {"commit", "machine", "settings", "config_hash"} <= set(res)
    assert (tmp_path / "adapt_latency.md").read_text().startswith("# Fast-adapt latency")
    text = results_md.read_text()
    assert (
        "## Other section\n\nkept as it is\n" in text and text.count("## Fast-adapt latency") == 1
    )
    bench.main(argv)  # a second run replaces its own section only
    again = results_md.read_text()
    assert (
        again.count("## Fast-adapt latency") == 1
        and "kept as it is" in again
        and again.startswith("# Results\n")
    )
