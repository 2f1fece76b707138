"""A resumable benchmark: an interrupted run resumed gives the rows of an uninterrupted one; the
folder's identity is checked; an older folder (only results.jsonl) can be continued."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

import metarec.bench.run as bench_run
from metarec._errors import ConfigError
from metarec.bench import run_bench
from metarec.bench.report import load_per_task
from metarec.cli.main import main
from metarec.config import load_scenario

TINY = [
    "data.synthetic.n_domains=6",
    "data.synthetic.n_users=80",
    "data.synthetic.n_items=120",
    "train.steps=4",
    "train.val_every=4",
    "train.val_tasks=16",
    "algorithm.meta_batch=4",
    "algorithm.inner_steps=1",
    "model.embedding_dim=8",
    "model.hidden=[8]",
]
ALGOS = ["global", "popularity", "maml"]
GRID = {"algorithms": ALGOS, "seeds": 1, "shots": [3], "verbose": False, "plots": False}


def tiny(*extra: str):
    return load_scenario("tasks/synthetic-cold-start.toml", [*TINY, *extra])


def cells(rows) -> dict:
    """(state, algorithm, seed, shots) -> metrics: what must not depend on an interruption."""
    return {(r["state"], r["algorithm"], r["seed"], r["shots"]): r["metrics"] for r in rows}


def read_rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted benchmark every resumed one is compared with."""
    return run_bench(tiny(), out=tmp_path_factory.mktemp("straight"), **GRID)


class Interrupt(Exception):
    pass


def counting(monkeypatch, fail_at: int | None = None) -> list[str]:
    """Patch the per-run function: record each run id; raise on call number ``fail_at``."""
    calls: list[str] = []
    real = bench_run.run_method

    def run(ctx, say):
        calls.append(ctx.run_id)
        if fail_at is not None and len(calls) == fail_at:
            raise Interrupt(ctx.run_id)
        return real(ctx, say)

    monkeypatch.setattr(bench_run, "run_method", run)
    return calls


def test_interrupted_then_resumed_equals_a_straight_run(straight, tmp_path, monkeypatch) -> None:
    out = tmp_path / "b"
    calls = counting(monkeypatch, fail_at=2)  # killed in the second (seed, algorithm) run
    with pytest.raises(Interrupt):
        run_bench(tiny(), out=out, **GRID)
    assert len(read_rows(out)) == 2  # the first run's rows (1 state x 2 shots) are on disk
    calls = counting(monkeypatch)
    res = run_bench(tiny(), out=out, resume=True, **GRID)
    assert calls == ["popularity-s0", "maml-s0"]
    assert cells(res.rows) == cells(straight.rows)
    # the folder reads as an uninterrupted one: row order, per-task values, curves, report
    assert [(r["seed"], r["algorithm"]) for r in read_rows(out)] == [
        (r["seed"], r["algorithm"]) for r in straight.rows
    ]
    assert load_per_task(out) == load_per_task(straight.out)
    curves = [json.loads(x) for x in (out / "curves.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (straight.out / "curves.jsonl").read_text().splitlines()]
    assert sorted((c["kind"], c["algorithm"], c["seed"]) for c in curves) == sorted(
        (c["kind"], c["algorithm"], c["seed"]) for c in ref
    )
    meta = json.loads((out / "bench.json").read_text())
    assert meta["resumed_runs"] == 1 and meta["algorithms"] == ALGOS
    assert "## Summary" in res.report.read_text()


def test_a_cut_last_line_is_dropped_and_that_run_is_run_again(
    straight, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "b"
    shutil.copytree(straight.out, out)
    data = (out / "results.jsonl").read_bytes()
    (out / "results.jsonl").write_bytes(
        data[: len(data) - 40]
    )  # killed while writing maml-s0's rows
    progress = (out / "progress.jsonl").read_text().splitlines()
    (out / "progress.jsonl").write_text("\n".join(progress[:-1]) + "\n")
    calls = counting(monkeypatch)
    res = run_bench(tiny(), out=out, resume=True, **GRID)
    assert calls == ["maml-s0"]
    assert cells(res.rows) == cells(straight.rows)
    assert len(read_rows(out)) == len(straight.rows)


def test_a_folder_with_only_results_jsonl_is_continued(straight, tmp_path, monkeypatch) -> None:
    """The layout of an older metarec still running: results.jsonl rows per run and a gzip stream
    of per-task values cut short; no identity, no progress, no curves yet."""
    out = tmp_path / "old"
    out.mkdir()
    rows = read_rows(straight.out)
    (out / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[:-1])
    )  # maml-s0 half done
    stream = gzip.compress(gzip.decompress((straight.out / "per_task.jsonl.gz").read_bytes()))
    (out / "per_task.jsonl.gz").write_bytes(stream[: len(stream) * 2 // 3])  # a truncated stream
    calls = counting(monkeypatch)
    res = run_bench(tiny(), out=out, resume=True, **GRID)
    assert calls == ["maml-s0"]
    assert cells(res.rows) == cells(straight.rows)
    per_task, ref = load_per_task(out), load_per_task(straight.out)
    assert set(per_task) <= set(ref) and all(per_task[k] == ref[k] for k in per_task)
    assert ("meta-test", "maml", 0, 3) in per_task  # the re-run's values are there


def test_an_older_folder_of_another_benchmark_is_refused(straight, tmp_path) -> None:
    out = tmp_path / "old"
    out.mkdir()
    shutil.copy(straight.out / "results.jsonl", out / "results.jsonl")
    with pytest.raises(
        ConfigError, match=r"holds rows of algorithm 'maml', not in this command's algorithms"
    ):
        run_bench(tiny(), out=out, resume=True, **{**GRID, "algorithms": ["global", "popularity"]})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"algorithms": ["global", "maml"]},
            r"has algorithms=\['global', 'popularity', 'maml'\], this command",
        ),
        ({"seeds": 2}, r"has seeds=1, this command seeds=2 \(--seeds\)"),
        ({"quick": True}, r"has quick=False, this command quick=True \(--quick\)"),
        (
            {"scenario": ("train.steps=5",)},
            r"the scenario differs: train.steps=4 there, 5 here \(--set train.steps=4",
        ),
    ],
)
def test_resume_refuses_a_different_benchmark(straight, tmp_path, change, match) -> None:
    out = tmp_path / "b"
    shutil.copytree(straight.out, out)
    before = (out / "results.jsonl").read_bytes()
    kw = {**GRID, **{k: v for k, v in change.items() if k != "scenario"}}
    with pytest.raises(ConfigError, match=match) as e:
        run_bench(tiny(*change.get("scenario", ())), out=out, resume=True, **kw)
    assert "--overwrite to replace it" in str(e.value)
    assert (out / "results.jsonl").read_bytes() == before


def test_existing_benchmark_needs_resume_or_overwrite(straight, tmp_path, monkeypatch) -> None:
    out = tmp_path / "b"
    shutil.copytree(straight.out, out)
    with pytest.raises(ConfigError, match="already holds a benchmark.*pass --resume.*--overwrite"):
        run_bench(tiny(), out=out, **GRID)
    with pytest.raises(ConfigError, match="--resume and --overwrite: choose one"):
        run_bench(tiny(), out=out, resume=True, overwrite=True, **GRID)
    calls = counting(monkeypatch)
    res = run_bench(
        tiny(), out=out, overwrite=True, **{**GRID, "algorithms": ["popularity"], "seeds": 1}
    )
    assert calls == ["popularity-s0"]
    assert {r["algorithm"] for r in read_rows(out)} == {"popularity"} and len(res.rows) == 2
    assert not (out / "runs").exists()  # the replaced benchmark's training runs went with it


def test_resume_on_a_missing_folder_starts_fresh_from_the_cli(tmp_path, capsys) -> None:
    out = tmp_path / "new"
    args = [
        "bench",
        "tasks/synthetic-cold-start.toml",
        "--out",
        str(out),
        "--algorithms",
        "popularity",
    ]
    args += ["--seeds", "1", "--shots", "3", "--no-plots", *sum((["--set", s] for s in TINY), [])]
    assert main([*args, "--resume"]) == 0
    assert "holds no benchmark yet; starting afresh" in capsys.readouterr().err
    first = read_rows(out)
    assert main([*args, "--resume"]) == 0  # everything finished: nothing is run again
    assert cells(read_rows(out)) == cells(first)
    assert "1 finished run(s) kept, 0 run" in capsys.readouterr().out


def test_a_start_that_failed_before_any_run_does_not_hold_the_folder(tmp_path, monkeypatch) -> None:
    out = tmp_path / "b"

    def unreadable(cfg):
        raise ConfigError("data.path: unreadable")

    monkeypatch.setattr(bench_run, "load_table", unreadable)  # fails while loading the data
    with pytest.raises(ConfigError, match="unreadable"):
        run_bench(tiny(), out=out, **{**GRID, "algorithms": ["popularity"]})
    assert (out / "bench_identity.json").exists() and not (out / "results.jsonl").exists()
    monkeypatch.undo()
    res = run_bench(tiny(), out=out, **{**GRID, "algorithms": ["popularity"]})
    assert len(res.rows) == 2
