"""The ranking baselines from training to a served recommendation: `metarec train` writes a run,
`metarec recommend --run RUN --user U --support S --json` serves a cold user (through the shared
catalogue fast path), and the run loads back to the scores of the fitted model that was saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import metarec.methods.run_dir as runs
from metarec.cli.main import main
from metarec.recommend.load import MethodModel, read_support

ROOT = Path(__file__).resolve().parent.parent
SETS = [
    "data.synthetic.n_domains=2",
    "data.synthetic.n_users=80",
    "data.synthetic.n_items=60",
    "data.synthetic.density=0.35",
    "protocol.ranking=true",
    "protocol.support_pool=10",
    "protocol.n_support=3",
    "protocol.n_query=5",
    "protocol.min_interactions=11",
    "protocol.max_interactions=none",
    "train.val_tasks=16",
    "train.progress=false",
    "learners.ease.lambdas=[10.0]",
    "learners.itemknn.neighbours=[20]",
    "learners.itemknn.shrinks=[10.0]",
    "learners.mf-foldin.factors=4",
    "learners.mf-foldin.iterations=2",
    "learners.mf-foldin.alphas=[1.0]",
    "learners.mf-foldin.regs=[10.0]",
]


@pytest.mark.parametrize("name", ["ease", "itemknn", "mf-foldin", "popularity"])
def test_train_then_recommend_a_cold_user_then_reload(name, tmp_path, capsys):
    run = tmp_path / "run"
    saved = {}
    orig = runs.save_fitted

    def spy(fitted, out, scenario=None):
        saved["fitted"] = fitted
        return orig(fitted, out, scenario)

    runs.save_fitted = spy  # type: ignore[assignment]
    try:
        argv = ["train", str(ROOT / "tasks" / "synthetic-cold-start.toml"), "--out", str(run)]
        assert (
            main([*argv, *sum((["--set", s] for s in [*SETS, f"algorithm.name={name}"]), [])]) == 0
        )
    finally:
        runs.save_fitted = orig  # type: ignore[assignment]
    fitted = saved["fitted"]
    meta = MethodModel(fitted)
    items = [str(i) for i in meta.item_ids.values]
    csv = tmp_path / "support.csv"
    csv.write_text("user,item,rating\n" + "".join(f"new-user,{i},5\n" for i in items[:3]))
    capsys.readouterr()
    cmd = [
        "recommend",
        "--run",
        str(run),
        "--user",
        "new-user",
        "--support",
        str(csv),
        "--json",
        "--k",
        "5",
    ]
    assert main(cmd) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    got = [(str(x["item"]), x["score"]) for x in out["items"]]
    assert len(got) == 5 and not set(items[:3]) & {i for i, _ in got}  # the support is excluded
    mine = meta.adapt(read_support(csv), user="new-user").recommend("new-user", k=5)
    assert [str(i) for i, _ in mine] == [i for i, _ in got]
    np.testing.assert_allclose([s for _, s in mine], [s for _, s in got], rtol=1e-5, atol=1e-5)
