"""The serving engine: batched kernels equal the library's adapt_many + recommend / predict
(float64 reference), request validation, micro-batching."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metarec._errors import ConfigError, DataError
from metarec.algorithms import AlgorithmConfig
from metarec.config import load_scenario
from metarec.recommend.load import MetaModel, load_run
from metarec.serve import Engine, Job, Limits, MicroBatcher
from metarec.serve.kernels import MeLUKernel, TwoTowerKernel, kernel_for
from metarec.serve.requests import PayloadTooLarge, parse_body, parse_predict, parse_recommend
from metarec.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "train.steps=6",
    "train.val_every=6",
    "train.val_tasks=8",
    "train.progress=false",
    "data.synthetic.n_domains=3",
    "data.synthetic.n_users=80",
    "data.synthetic.n_items=100",
    "data.synthetic.density=0.3",
]
TWO_TOWER = ["model.name='two_tower'", "model.hidden=[16, 8]", "algorithm.inner_lr=0.1"]


def train_small(tmp_path_factory, name: str, extra: list[str]) -> Path:
    """A few steps of the synthetic scenario, trained once per session (shared by the serve tests)."""
    run = tmp_path_factory.getbasetemp() / f"serve-run-{name}"
    if not (run / "manifest.json").is_file():
        sc = load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", overrides=[*SMALL, *extra])
        train(sc, run, evaluate_test=False)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {
        "melu": train_small(tmp_path_factory, "melu", []),
        "two_tower": train_small(tmp_path_factory, "two_tower", TWO_TOWER),
    }


def _f64(meta: MetaModel, algo: AlgorithmConfig | None = None) -> MetaModel:
    """The same run in float64 (and optionally another algorithm config)."""
    model = meta.model.double()
    params = dict(model.named_parameters())
    state = {k: v.double() for k, v in meta.state.items()}
    return MetaModel(
        model,
        params,
        state,
        algo or meta.algo,
        meta.table,
        manifest=meta.manifest,
        run_dir=meta.run_dir,
        steps=meta.steps,
        lr=meta.lr,
        step=meta.step,
    )


def _jobs(meta: MetaModel, seed: int = 0) -> list[Job]:
    """Cold users with 0..7 support rows, a known user, and two /predict jobs."""
    rng = np.random.default_rng(seed)
    n_items = len(meta.item_ids) - 1
    jobs = []
    for b in range(8):
        items = rng.choice(np.arange(1, n_items + 1), b, replace=False)
        jobs.append(
            Job(
                f"cold-{b}",
                0,
                items,
                rng.integers(1, 6, b).astype(float),
                k=int(rng.integers(1, 15)),
            )
        )
    known = meta.user_ids.values[3]
    jobs.append(Job(known, 4, np.array([1, 2, 3]), np.array([5.0, 1.0, 3.0]), k=10))
    probe = np.arange(1, 21)
    for b in range(2):
        jobs.append(
            Job(
                f"pred-{b}",
                0,
                np.array([4 + b, 9]),
                np.array([2.0, 5.0]),
                targets=probe,
                target_ids=meta.item_ids.decode(probe),
                clip=bool(b),
            )
        )
    return jobs


def _same(got: list[dict], want: list[dict], atol: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["user"] == w["user"]
        assert [x["item"] for x in g["items"]] == [x["item"] for x in w["items"]]
        np.testing.assert_allclose(
            [x["score"] for x in g["items"]], [x["score"] for x in w["items"]], rtol=0, atol=atol
        )


@pytest.mark.parametrize("name, kernel", [("melu", MeLUKernel), ("two_tower", TwoTowerKernel)])
def test_kernel_equals_library_in_float64(runs, name, kernel) -> None:
    meta = _f64(load_run(runs[name]))
    fast, lib = Engine(meta, steps=5), Engine(meta, steps=5, batched=False)
    assert isinstance(fast.kernel, kernel) and lib.kernel is None and lib.path == "library"
    jobs = _jobs(meta)
    got, want = fast.run(jobs), lib.run(jobs)
    _same(got, want, atol=1e-9)
    # adaptation changed the answers (the check would pass vacuously with steps=0 otherwise)
    _same(
        Engine(meta, steps=0).run(jobs[:1]),
        Engine(meta, steps=0, batched=False).run(jobs[:1]),
        atol=1e-9,
    )
    moved = (
        Engine(meta, steps=5).run(jobs[7:8])[0]["items"],
        Engine(meta, steps=0).run(jobs[7:8])[0]["items"],
    )
    assert [x["score"] for x in moved[0]] != [x["score"] for x in moved[1]]
    # support items are left out, k is honoured, scores are sorted
    for j, a in zip(jobs, got, strict=True):
        if j.targets is None:
            items = [x["item"] for x in a["items"]]
            assert len(items) == j.k and not set(items) & set(meta.item_ids.decode(j.items))
            assert [x["score"] for x in a["items"]] == sorted(
                (x["score"] for x in a["items"]), reverse=True
            )


@pytest.mark.parametrize("name", ["melu", "two_tower"])
def test_answers_do_not_depend_on_the_batch(runs, name) -> None:
    meta = load_run(runs[name])
    eng = Engine(meta, steps=5)
    jobs = _jobs(meta, seed=1)
    together = eng.run(jobs)
    alone = [eng.run([j])[0] for j in jobs]
    _same(together, alone, atol=1e-5)  # same ranking; scores equal up to float rounding
    five = [
        Job(f"five-{b}", 0, np.arange(1, 6) + b, np.array([5.0, 1, 3, 4, 2]), k=10)
        for b in range(16)
    ]
    _same(eng.run(five), [eng.run([j])[0] for j in five], atol=1e-5)


def test_kernel_applies_only_to_the_default_inner_loop(runs) -> None:
    meta = load_run(runs["melu"])
    assert kernel_for(meta) is not None
    anil = dataclasses.replace(meta.algo, name="anil")  # only the head adapts
    assert kernel_for(_f64(meta, anil)) is None
    # the library path still answers, and the same user twice in one batch gets two adaptations
    eng = Engine(_f64(meta, anil), steps=3)
    assert eng.path == "library"
    a = Job("twice", 0, np.array([1, 2]), np.array([5.0, 5.0]), k=5)
    b = Job("twice", 0, np.array([3, 4]), np.array([1.0, 1.0]), k=5)
    both = eng.run([a, b])
    _same(both, [eng.run([a])[0], eng.run([b])[0]], atol=1e-9)
    assert both[0] != both[1]


def test_engine_rejects_a_bad_budget(runs) -> None:
    meta = load_run(runs["melu"])
    with pytest.raises(ConfigError, match=r"steps=-1: must be an int >= 0"):
        Engine(meta, steps=-1)
    with pytest.raises(ConfigError, match=r"lr=0: must be a finite number > 0"):
        Engine(meta, lr=0)


def test_requests_are_validated(runs) -> None:
    meta = load_run(runs["melu"])
    lim = Limits(max_body_bytes=200, max_support=3, max_items=2)
    item = meta.item_ids.values[0]
    ok = parse_recommend({"user": "u", "k": 2, "support": [{"item": item, "rating": 4}]}, meta, lim)
    assert ok.k == 2 and ok.uidx == 0 and list(ok.ratings) == [4.0] and ok.items[0] == 1
    with pytest.raises(
        PayloadTooLarge, match=r"k=4: over the server's limit of 2 items per answer"
    ):
        parse_recommend({"user": "u", "k": 4}, meta, lim)
    bad = [
        ({"k": 3}, DataError, r"user: missing"),
        ({"user": True}, DataError, r"user=True: expected a non-empty string or an integer id"),
        ({"user": "u", "k": 0}, ConfigError, r"k=0: must be an int >= 1; pass e.g. k=10"),
        ({"user": "u", "kk": 3}, DataError, r"unknown field 'kk' \(did you mean 'k'\?\)"),
        (
            {"user": "u", "support": "/etc/passwd"},
            DataError,
            r"support='/etc/passwd': a string \(a file path\?\) is not accepted; the server never reads files",
        ),
        (
            {"user": "u", "support": [{"item": item}]},
            DataError,
            r"support\[0\]=.*expected an object with 'item' and 'rating'",
        ),
        (
            {"user": "u", "support": [{"item": item, "rating": 9}]},
            DataError,
            r"support ratings: 9 at row 0 is outside the run's rating_scale=\(1, 5\)",
        ),
        (
            {"user": "u", "support": [{"item": item, "rating": "x"}]},
            DataError,
            r"support ratings: 'x' at row 0 is not a finite number",
        ),
        (
            {"user": "u", "support": [{"item": "nope", "rating": 3}]},
            DataError,
            r"support: 1 item id\(s\) not in the run's item catalogue \('nope'\)",
        ),
        ({"user": "u", "domain": 3}, DataError, r"domain=3: expected a domain name"),
        (
            {"user": "u", "support": [{"item": item, "rating": 3}] * 4},
            PayloadTooLarge,
            r"support: 4 rows, over the server's limit of 3",
        ),
    ]
    for body, err, msg in bad:
        with pytest.raises(err, match=msg):
            parse_recommend(body, meta, lim)
    with pytest.raises(PayloadTooLarge, match=r"items: 3 ids, over the server's limit of 2"):
        parse_predict({"user": "u", "items": [item] * 3}, meta, lim)
    with pytest.raises(DataError, match=r"items=\[\]: expected a non-empty list"):
        parse_predict({"user": "u", "items": []}, meta, lim)
    with pytest.raises(
        PayloadTooLarge, match=r"request body: 201 bytes, over the server's limit of 200"
    ):
        parse_body(b" " * 201, lim)
    with pytest.raises(DataError, match=r"request body: not valid JSON"):
        parse_body(b"{nope", lim)
    with pytest.raises(DataError, match=r"request body: expected a JSON object, got list"):
        parse_body(json.dumps([1]).encode(), lim)
    with pytest.raises(ConfigError, match=r"max_support=0: must be an int >= 1"):
        Limits(max_support=0)


def test_micro_batcher_gathers_concurrent_jobs_and_isolates_failures() -> None:
    calls: list[list[int]] = []
    worker: set[str] = set()

    def fn(jobs: list[int]) -> list[int]:
        worker.add(threading.current_thread().name)
        calls.append(list(jobs))
        time.sleep(0.01)
        if -1 in jobs:
            raise RuntimeError("boom")
        return [j * 10 for j in jobs]

    async def main() -> tuple[list[int], list[BaseException]]:
        b = MicroBatcher(fn, max_batch=8, max_wait_ms=50)
        await b.start()
        got = await asyncio.gather(*(b.submit(j) for j in range(20)))
        bad = await asyncio.gather(b.submit(-1), return_exceptions=True)
        await b.close()
        return list(got), bad

    got, bad = asyncio.run(main())
    assert got == [j * 10 for j in range(20)]
    assert [len(c) for c in calls[:3]] == [8, 8, 4]  # bounded batches, in arrival order
    assert isinstance(bad[0], RuntimeError) and str(bad[0]) == "boom"
    assert worker and all(w.startswith("metarec-batch") for w in worker)
    with pytest.raises(ConfigError, match=r"max_batch=0: must be an int >= 1"):
        MicroBatcher(fn, max_batch=0)


def test_kernels_run_in_float32_too(runs) -> None:
    meta = load_run(runs["two_tower"])
    assert meta.dtype == torch.float32
    _same(
        Engine(meta, steps=5).run(_jobs(meta)),
        Engine(meta, steps=5, batched=False).run(_jobs(meta)),
        atol=1e-4,
    )
