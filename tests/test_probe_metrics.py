"""``metrics.names`` decides what is computed and reported: train's metrics.jsonl, its printed
evaluation, test_metrics.json, and the benchmark's rows; the primary metric is always kept."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from metarec._errors import ConfigError
from metarec.bench import run_bench
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.metrics.evaluate import metric_selection, per_task_metrics

SMALL = [
    "data.synthetic.n_domains=4",
    "data.synthetic.n_users=60",
    "data.synthetic.n_items=80",
    "train.steps=4",
    "train.val_every=2",
    "train.val_tasks=16",
    "train.checkpoint_every=2",
    "train.progress=false",
    "algorithm.meta_batch=4",
]


def test_selection_expands_cut_offs_and_keeps_the_primary_first() -> None:
    assert metric_selection([], "explicit", 10) == ("mae", "rmse", "ndcg@10")
    assert metric_selection(None, "implicit", 5) == ("auc", "ndcg@5", "hr@5", "mrr")
    assert metric_selection(["ndcg@3", "mae"], "explicit", 10) == ("mae", "ndcg@3")
    with pytest.warns(UserWarning, match=r"omits 'auc'.*computed and reported as well"):
        assert metric_selection(["hr", "mrr"], "implicit", 7) == ("auc", "hr@7", "mrr")
    with pytest.raises(
        ConfigError, match=r"metrics.names: 'auc' is not defined .* explicit.*binary"
    ):
        metric_selection(["mae", "auc"], "explicit", 10)
    with pytest.raises(
        ConfigError, match=r"'rmse' is not defined .* implicit.*--set 'metrics.names="
    ):
        metric_selection(["auc", "rmse"], "implicit", 10)


def test_per_task_metrics_computes_only_the_named_ones_and_logloss_by_hand() -> None:
    s = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    m = torch.tensor([[True, True, False]])
    out = per_task_metrics(s, y, m, "implicit", 10, ["auc", "logloss"])
    assert list(out) == ["auc", "logloss"]
    expect = (
        math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))
    ) / 2  # -log sigmoid(s), y = 1 / 0
    assert float(out["logloss"][0]) == pytest.approx(float(expect), rel=1e-12)
    assert float(out["auc"][0]) == 1.0


def test_train_reports_only_the_named_metrics(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "tasks/synthetic-cold-start.toml", "--out", str(out)]
    sets = [*SMALL, 'metrics.names=["mae", "ndcg@5"]']
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val"] for r in rows if "val" in r]
    assert vals and all(
        {k for k, v in v.items() if k not in ("n_tasks", "adapt_ms_per_task")} == {"mae", "ndcg@5"}
        for v in vals
    )
    test = json.loads((out / "test_metrics.json").read_text())["states"]
    assert test and all(
        "rmse" not in ev and "ndcg@10" not in ev and "ndcg@5" in ev for ev in test.values()
    )
    assert "ndcg@5=" in printed and "rmse=" not in printed


def test_a_list_without_the_primary_warns_and_keeps_it(tmp_path) -> None:
    sc = load_scenario("tasks/synthetic-cold-start.toml", [*SMALL, 'metrics.names=["rmse"]'])
    from metarec.train.loop import train

    with pytest.warns(UserWarning, match=r"omits 'mae'"):
        res = train(sc, tmp_path / "run", evaluate_test=False)
    assert set(res.best_val) == {"mae", "rmse", "n_tasks", "adapt_ms_per_task"}


@pytest.mark.slow
def test_bench_rows_hold_the_named_within_query_metrics(tmp_path) -> None:
    sc = load_scenario(
        "tasks/synthetic-cold-start.toml", [*SMALL, 'metrics.names=["mae", "ndcg@3"]']
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = run_bench(
            sc,
            algorithms=["popularity", "maml"],
            seeds=1,
            shots=[],
            out=tmp_path / "b",
            verbose=False,
            plots=False,
            quick=True,
        )
    for r in res.rows:
        within = {m for m in r["metrics"] if not m.endswith(("_neg", "_all"))}
        assert within == {"mae", "ndcg@3"}, (r["algorithm"], r["metrics"])
    text = res.report.read_text()
    assert "ndcg@3 ↑" in text and "rmse ↓" not in text
