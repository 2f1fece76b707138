"""The benchmark suite: rows, report, plots, bad input (tiny synthetic budgets) and one ML-1M run."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from metarec import metrics as M
from metarec._errors import ConfigError
from metarec.bench import evaluation_from_arrays, make_rows, paired_t_test, run_bench, write_report
from metarec.bench.report import load_per_task, protocol_line, task_paired_test
from metarec.bench.stats import student_t_cdf
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
ROW_KEYS = {
    "scenario",
    "state",
    "algorithm",
    "seed",
    "shots",
    "n_support",
    "run_id",
    "metrics",
    "n_tasks",
    "train_seconds",
    "eval_seconds",
    "adapt_ms_per_task",
    "peak_memory_mb",
    "memory",
    "commit",
    "config_hash",
    "device",
    "flags",
}


def tiny(*extra: str):
    return load_scenario("tasks/synthetic-cold-start.toml", [*TINY, *extra])


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One tiny benchmark shared by the tests below (2 seeds so that CIs exist)."""
    out = tmp_path_factory.mktemp("bench")
    res = run_bench(
        tiny(),
        algorithms=["global", "popularity", "maml"],
        seeds=2,
        shots=[3],
        out=out,
        verbose=False,
    )
    return res


def test_rows_cover_the_grid_with_every_key(bench) -> None:
    rows = bench.rows
    # 1 state x 3 algorithms x 2 seeds x (3, default) shots
    assert len(rows) == 1 * 3 * 2 * 2
    assert len(bench.results.read_text().splitlines()) == len(rows)
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert "_per_task" not in r
        assert {"mae", "rmse", "ndcg@10", "hr@10_neg", "ndcg@10_neg", "mrr_neg", "auc_neg"} <= set(
            r["metrics"]
        )
        assert r["train_seconds"] >= 0 and r["peak_memory_mb"] > 0 and r["config_hash"]
    # the small catalogue is ranked in full at the default support only
    assert all(("auc_all" in r["metrics"]) == (r["shots"] == "default") for r in rows)
    # popularity ignores the support: identical rows across shots
    pop = [r["metrics"]["mae"] for r in rows if r["algorithm"] == "popularity" and r["seed"] == 0]
    assert max(pop) == min(pop)
    # the same tasks and query sets for every algorithm (paired tests rely on it)
    per_task = load_per_task(bench.out)
    a, b = per_task[("meta-test", "maml", 0, 3)], per_task[("meta-test", "global", 0, 3)]
    assert a.keys() == b.keys() and len(a) == rows[0]["n_tasks"]
    meta = json.loads((bench.out / "bench.json").read_text())
    assert meta["primary_metric"] == "mae" and meta["shots"] == [3, "default"]


def test_report_has_ci_tables_significance_and_cost(bench) -> None:
    text = bench.report.read_text()
    assert "## Summary (mae, default support)" in text
    assert "| algorithm | mae ↓ | rmse ↓ | ndcg@10 ↑ |" in text
    assert "auc_neg ↑" in text and "auc_all ↑" in text
    assert " ± " in text  # 95% CIs over the two seeds
    assert text.count("**") >= 4  # best of each column bolded
    assert "**Best vs best baseline on mae**" in text and "p, tasks" in text
    assert "meta-val only" in text and "once per seed" in text
    assert "## Cost" in text and "## Training budget" in text


def test_report_states_the_resolved_protocol(bench, tmp_path: Path) -> None:
    """The report names the protocol the rows were produced under (not the scenario's prose), and
    falls back to configs.json for results whose bench.json predates the record."""
    meta = json.loads((bench.out / "bench.json").read_text())
    assert meta["protocol"]["split"] == "random" and meta["protocol"]["n_support"] == 10
    (line,) = protocol_line(meta["protocol"])
    assert line.startswith(
        "- protocol: split=random, unit=user, fractions=0.7,0.1,0.2, n_support=10, n_query="
    )
    assert line in bench.report.read_text()
    old = tmp_path / "old"
    old.mkdir()
    for f in ("results.jsonl", "per_task.jsonl.gz", "configs.json"):
        (old / f).write_bytes((bench.out / f).read_bytes())
    (old / "bench.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "protocol"}))
    assert line in write_report(old).read_text()


def test_protocol_line_shows_the_split_settings() -> None:
    cold = {
        "split": "cold_domain_users",
        "unit": "user",
        "beta": 0.8,
        "target_domain": "cloth",
        "n_support": 3,
        "n_query": 10,
        "order": "random",
        "min_interactions": 5,
        "max_interactions": None,
        "negatives": 4,
        "existing_user_fraction": 0.8,
        "seed": 7,
    }
    (line,) = protocol_line(cold)
    assert "target_domain=cloth, beta=0.8" in line and "max_interactions=none" in line
    assert (
        "existing_user_fraction" not in line and "seed" not in line
    )  # other splits' settings; per-seed
    assert "existing_user_fraction=0.8" in protocol_line({**cold, "split": "melu"})[0]
    assert protocol_line(None) == []


def test_plots_written_when_matplotlib_is_present(bench) -> None:
    pytest.importorskip("matplotlib")
    names = sorted(p.name for p in bench.plots)
    assert names == ["adaptation_steps.png", "learning_curves.png", "metric_vs_shots.png"]
    for p in bench.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{p.name}" in bench.report.read_text()


def _evaluation(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict:
    per_task = {
        "mae": M.mae(pred, targets, mask).numpy(),
        "ndcg@3": M.ndcg_at_k(pred, targets, mask, 3).numpy(),
    }
    return evaluation_from_arrays(
        per_task, units=np.arange(len(pred)), flags=M.degenerate_flags(pred, targets, mask, k=3)
    )


def test_constant_predictions_are_flagged_in_the_report(tmp_path: Path) -> None:
    """Rows built by make_rows (the path other methods use) from a constant and a varying model."""
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(1, 6, (12, 4), generator=g).double()
    mask = torch.ones(12, 4, dtype=torch.bool)
    env = {"commit": "abc", "device": "cpu"}
    rows, per = [], []
    for seed in (0, 1):
        noisy = targets + 0.3 * torch.randn(12, 4, generator=g, dtype=torch.float64)
        for algo, pred in (
            ("global", torch.full((12, 4), 3.0, dtype=torch.float64)),
            ("maml", noisy),
        ):
            ev = _evaluation(pred, targets, mask)
            new = make_rows(
                [("meta-test", "default", None, ev)],
                scenario="toy",
                algorithm=algo,
                seed=seed,
                run_id=f"{algo}-s{seed}",
                config_hash="h",
                env=env,
                train_seconds=1.0,
                eval_seconds=0.1,
                peak_memory_mb=1.0,
                memory="none",
            )
            for r in new:
                p = r.pop("_per_task")
                per.append(
                    {
                        "state": r["state"],
                        "algorithm": algo,
                        "seed": seed,
                        "shots": "default",
                        "metric": "mae",
                        **p,
                        "values": p["values"]["mae"],
                    }
                )
            rows += new
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(tmp_path / "per_task.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in per))
    meta = {
        "scenario": "toy",
        "quick": True,
        "algorithms": ["global", "maml"],
        "seeds": [0, 1],
        "shots": ["default"],
        "default_support": 4,
        "metrics": ["mae", "ndcg@3"],
        "states": ["meta-test"],
        "primary_metric": "mae",
        "train_steps": 1,
        "val_every": 1,
        "val_tasks": 1,
        "patience": None,
        "seconds": 1.0,
        "load_seconds": 0.0,
        "commit": "abc",
        "device": "cpu",
        "threads": 1,
        "torch": "x",
        "python": "y",
    }
    (tmp_path / "bench.json").write_text(json.dumps(meta))
    text = write_report(tmp_path).read_text()
    assert "meta-test / global (shots default; seeds 0, 1): constant predictions" in text
    assert "meta-test / maml" not in text.split("## Degenerate-result flags")[1].split("## Cost")[0]
    assert "| default | maml | global |" in text and "yes (p < 0.05)" in text
    t = task_paired_test(load_per_task(tmp_path), "meta-test", "maml", "global", "default", [0, 1])
    assert t["n"] == 24 and t["mean_diff"] < 0 and t["p"] < 0.05


def test_query_smaller_than_k_is_flagged() -> None:
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    flags = M.degenerate_flags(
        pred, torch.tensor([[1.0, 0.0, 1.0]]), torch.ones(1, 3, dtype=torch.bool), k=10
    )
    assert any(f.startswith("query smaller than k") for f in flags)
    assert any(f.startswith("metric at 1.0 by construction: HR@10") for f in flags)


def test_paired_t_test_and_t_cdf_match_hand_values() -> None:
    assert student_t_cdf(2.7764451, 4) == pytest.approx(0.975, abs=1e-6)
    t = paired_t_test([1.0, 2.0, 3.0], [0.5, 1.0, 2.5])  # d = 0.5, 1.0, 0.5
    assert t["mean_diff"] == pytest.approx(2 / 3)
    assert t["t"] == pytest.approx((2 / 3) / (math.sqrt(1 / 12) / math.sqrt(3)))
    assert t["p"] == pytest.approx(2 * (1 - student_t_cdf(t["t"], 2)))
    assert math.isnan(paired_t_test([1.0], [2.0])["p"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algorithms": ["mamll"]}, r"unknown benchmark algorithm \(did you mean 'maml'\?\)"),
        ({"algorithms": []}, "nothing to benchmark"),
        ({"algorithms": ["maml", "maml"]}, "listed twice"),
        ({"shots": [0, 5]}, r"0 is not a support size >= 1"),
        ({"shots": 5}, "expected a list of support sizes"),
        ({"seeds": 0}, r"seeds=0: the number of seeds must be an integer >= 1"),
    ],
)
def test_bad_input_is_rejected_by_message(kwargs, match, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        run_bench(tiny(), out=tmp_path / "b", verbose=False, **{"algorithms": ["global"], **kwargs})
    assert not (tmp_path / "b" / "results.jsonl").exists()


def test_cli_reports_bad_shots_and_seeds(tmp_path: Path, capsys) -> None:
    base = [
        "bench",
        "tasks/synthetic-cold-start.toml",
        "--out",
        str(tmp_path / "b"),
        "--algorithms",
        "global",
    ]
    assert main([*base, "--shots", "1,x"]) == 2
    assert "--shots '1,x': expected comma-separated integers" in capsys.readouterr().err
    assert main([*base, "--seeds", "-1"]) == 2
    assert "seeds=-1" in capsys.readouterr().err
    assert main([*base, "--algorithms", "reptil"]) == 2
    assert "did you mean 'reptile'" in capsys.readouterr().err


def test_existing_results_are_not_overwritten(bench) -> None:
    with pytest.raises(ConfigError, match="already holds a benchmark"):
        run_bench(tiny(), algorithms=["global"], seeds=1, out=bench.out, verbose=False)


def test_runs_dir_with_runs_of_an_earlier_bench_says_what_to_do(bench, tmp_path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"already holds run 'global-s0' of an earlier benchmark; choose another --runs-dir",
    ):
        run_bench(
            tiny(),
            algorithms=["global"],
            seeds=1,
            out=tmp_path / "again",
            runs_dir=bench.out / "runs",
            verbose=False,
        )
    assert (
        bench.out / "runs" / "global-s0" / "manifest.json"
    ).is_file()  # the earlier run is left as it was


@pytest.mark.slow
@pytest.mark.data
def test_ml1m_melu_bench_rows_per_state(shared_data: Path, tmp_path: Path) -> None:
    sc = load_scenario(
        "tasks/ml1m-melu.toml",
        ["bench.quick_steps=4", "algorithm.meta_batch=4"],
        data_root=shared_data,
    )
    res = run_bench(
        sc,
        algorithms=["global", "popularity", "maml", "melu-ref"],
        seeds=1,
        shots=[5],
        quick=True,
        out=tmp_path / "b",
        verbose=False,
        plots=False,
    )
    states = {r["state"] for r in res.rows}
    assert states == {"warm", "user-cold", "item-cold", "user-item-cold"}
    assert len(res.rows) == 4 * 4 * 2
    assert all(0.0 < r["metrics"]["mae"] < 4.0 for r in res.rows)
    assert all(
        ("hr@10_neg" in r["metrics"]) == (r["shots"] == "default") for r in res.rows
    )  # quick: ranking at default
    text = res.report.read_text()
    assert "published" in text and "0.7854" in text


def test_learner_rows_record_the_steps_they_trained(tmp_path: Path) -> None:
    res = run_bench(
        tiny("learners.r2d2.hidden=[8]", "learners.r2d2.rank=2"),
        algorithms=["r2d2", "popularity"],
        seeds=1,
        shots=[3],
        out=tmp_path / "b",
        verbose=False,
    )
    rows = [json.loads(x) for x in (res.out / "results.jsonl").read_text().splitlines()]
    r2d2 = [r for r in rows if r["algorithm"] == "r2d2"]
    assert r2d2 and all(r["steps"] == 4 and r["best_step"] in (0, 4) for r in r2d2)
    assert all(r["stopped_early"] is False for r in r2d2)
    pop = [r for r in rows if r["algorithm"] == "popularity"]
    assert all(r["best_step"] is None and r["steps"] == 0 for r in pop)  # nothing trained
