"""``metarec bench --tune N``: the best meta-val trial is chosen, the test states are never seen by a
trial, the choice is recorded in the rows and the report, and finished trials survive a resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import metarec.bench.tuning as tuning
from metarec._errors import ConfigError
from metarec.bench import run_bench
from metarec.bench.context import RunContext
from metarec.bench.tuning import trial_configs, tune_algorithm, val_only_splits
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.methods import base as methods_base

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
CANDIDATES = (1.0, 2.0, 3.0, 4.0, 5.0)


def tiny():
    return load_scenario("tasks/synthetic-cold-start.toml", TINY)


class _Adapted:
    def __init__(self, c: float, n: int) -> None:
        self.c, self.n_tasks = c, n

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.full(users.shape, self.c)


class _Fitted:
    def __init__(self, c: float, log: list) -> None:
        self.c, self.log = c, log

    def adapt(self, support, *, steps=None, lr=None):
        self.log[-1]["users"].update(support.users[support.mask].tolist())
        return _Adapted(self.c, support.n_tasks)

    def config(self):
        return {"method": "toy-const", "c": self.c}

    def state_dict(self):
        return {}

    def load_state_dict(self, state) -> None:
        pass


class _Method:
    """Predicts the constant ``c``; logs what each fit was given and which users it adapted to."""

    def __init__(self, scenario, log: list, c: float = 1.0) -> None:
        self.c, self.log = c, log

    def fit(self, data):
        self.log.append(
            {
                "c": self.c,
                "states": list(data.splits.states),
                "pools": set(data.splits.pools),
                "users": set(),
            }
        )
        return _Fitted(self.c, self.log)


@pytest.fixture
def toy(monkeypatch):
    log: list = []
    monkeypatch.setitem(
        methods_base._REGISTRY,
        "toy-const",
        methods_base.MethodInfo("toy-const", lambda sc, **kw: _Method(sc, log, **kw)),
    )
    monkeypatch.setitem(tuning.SPACES, "toy-const", {"c": CANDIDATES})
    return log


def test_trial_configs_start_with_own_settings_and_are_distinct() -> None:
    space = {"a": (1, 2, 3), "b": (0.1, 0.2)}
    t = trial_configs(space, 5)
    assert t[0] == {} and len(t) == 5
    assert len({tuple(sorted(x.items())) for x in t[1:]}) == 4
    assert all(x["a"] in space["a"] and x["b"] in space["b"] for x in t[1:])
    assert trial_configs(space, 5) == t  # seeded
    assert len(trial_configs(space, 50)) == 1 + 6  # the whole grid when it is smaller
    with pytest.raises(ConfigError, match=r"tune=0: the number of trials must be an integer >= 1"):
        trial_configs(space, 0)


def test_the_best_meta_val_trial_is_chosen_with_a_fake_scorer(tmp_path, toy) -> None:
    sc = tiny()
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    ctx = RunContext("toy-const", 0, sc, table, splits, (3,), torch.device("cpu"), {}, tmp_path)
    seen = []

    def fake(ctx, values, run_dir):  # meta-val MAE: best at c = 4
        seen.append((values, ctx.splits.states))
        return abs(values.get("c", 1.0) - 4.0) + 0.1

    t = tune_algorithm(ctx, 6, score=fake, say=lambda *a: None)
    assert t["values"] == {"c": 4.0} and t["metric"] == "mae"
    assert [x["score"] for x in t["trials"]][t["trial"]] == pytest.approx(0.1)
    assert all(states == [] for _, states in seen)  # no trial sees a test state
    # a second call with the finished trials runs none of them again and chooses the same
    done = [json.loads(x) for x in (tmp_path / "tuning.jsonl").read_text().splitlines()]
    assert len(done) == 6
    again = tune_algorithm(
        ctx, 6, done=done, score=lambda *a: pytest.fail("re-ran a trial"), say=lambda *a: None
    )
    assert again == t


def test_val_only_splits_hold_no_test_state() -> None:
    sc = tiny()
    splits = build_splits(load_table(sc.data), sc.protocol)
    v = val_only_splits(splits)
    assert set(v.pools) == {splits.train, splits.val} and v.states == []
    assert splits.states  # the original is untouched


def test_bench_tune_chooses_on_meta_val_and_never_sees_the_test_pool(tmp_path, toy) -> None:
    out = tmp_path / "b"
    res = run_bench(
        tiny(),
        algorithms=["toy-const", "global"],
        seeds=2,
        shots=[3],
        tune=3,
        out=out,
        verbose=False,
        plots=False,
    )
    trials = [json.loads(x) for x in (out / "tuning.jsonl").read_text().splitlines()]
    assert [(t["algorithm"], t["trial"]) for t in trials] == [
        (a, i) for a in ("toy-const", "global") for i in range(3)
    ]
    for algo in ("toy-const", "global"):
        rows = [r for r in res.rows if r["algorithm"] == algo]
        t = rows[0]["tuned"]
        assert all(r["tuned"] == t for r in rows) and len(t["trials"]) == 3
        scores = [x["score"] for x in t["trials"]]
        assert t["trial"] == int(np.argmin(scores))  # mae: lower is better
    # the toy: 3 trial fits on meta-train/val only, then one fit per seed with the chosen c
    trial_fits, seed_fits = toy[:3], toy[3:]
    assert all(f["states"] == [] and "meta-test" not in f["pools"] for f in trial_fits)
    chosen = res.rows[0]["tuned"]["values"]["c"]
    assert [f["c"] for f in seed_fits] == [chosen, chosen]
    seed0_test = set(
        build_splits(load_table(tiny().data), tiny().protocol).pools["meta-test"].units.tolist()
    )
    assert seed0_test and all(not (f["users"] & seed0_test) for f in trial_fits)
    assert (
        seed_fits[0]["users"] & seed0_test
    )  # the check can fail: the seed runs do score test users
    text = res.report.read_text()
    assert "## Tuning" in text and "meta-val only" in text and "**toy-const**: chosen trial" in text
    # resumed with every run finished: no trial and no run again
    toy.clear()
    run_bench(
        tiny(),
        algorithms=["toy-const", "global"],
        seeds=2,
        shots=[3],
        tune=3,
        out=out,
        verbose=False,
        plots=False,
        resume=True,
    )
    assert toy == []
    with pytest.raises(ConfigError, match=r"has tune=3, this command tune=4 \(--tune\)"):
        run_bench(
            tiny(),
            algorithms=["toy-const", "global"],
            seeds=2,
            shots=[3],
            tune=4,
            out=out,
            verbose=False,
            resume=True,
        )
