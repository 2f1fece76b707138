"""``benchmarks/merge_bench.py``: benchmark parts of one scenario merged into one folder and
report, a later part's rows superseding an earlier part's of the same algorithm; parts of
different protocols refused."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from test_bench_ranking import ranking_scenario

from metarec.bench import run_bench

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "merge_bench.py"


def _bench(out: Path, algos: list[str], *extra: str):
    return run_bench(
        ranking_scenario(*extra),
        algorithms=algos,
        seeds=1,
        shots=[3],
        out=out,
        verbose=False,
        plots=False,
    )


def test_parts_merge_into_one_report_and_a_rerun_supersedes(tmp_path):
    a = _bench(tmp_path / "a", ["popularity", "ease"])
    b = _bench(tmp_path / "b", ["itemknn", "ease"])  # ease re-run: these rows win
    out = tmp_path / "merged"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(a.out), str(b.out), "--gzip"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["algorithm"] for r in rows} == {"popularity", "ease", "itemknn"}
    assert len(rows) == 3 * 2  # 3 algorithms x (3 shots, default) in the one test state
    ease_b = [r for r in b.rows if r["algorithm"] == "ease"]
    assert [r for r in rows if r["algorithm"] == "ease"] == ease_b
    assert (
        gzip.decompress((out / "results.jsonl.gz").read_bytes()).decode()
        == (out / "results.jsonl").read_text()
    )
    meta = json.loads((out / "bench.json").read_text())
    assert meta["algorithms"] == ["popularity", "ease", "itemknn"]
    assert [p["algorithms"] for p in meta["merged_from"]] == [["popularity"], ["ease", "itemknn"]]
    report = (out / "report.md").read_text()
    assert "itemknn" in report and "popularity" in report


def test_parts_of_different_protocols_are_refused(tmp_path):
    a = _bench(tmp_path / "a", ["popularity"])
    b = _bench(tmp_path / "b", ["popularity"], "protocol.relevance=5.0")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "m"), str(a.out), str(b.out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0
    assert "'protocol' differs" in res.stderr and "can be merged" in res.stderr
    assert not (tmp_path / "m").exists()
