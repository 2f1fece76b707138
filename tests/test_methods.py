"""Every benchmark method through the one interface: `metarec train --set algorithm.name=M`, then
`metarec recommend --run RUN --user U --support S --json`; save/load round trips; the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import two_domain_scenario

import metarec.methods.engine.method as engine_mod
from metarec._errors import CheckpointError, ConfigError
from metarec.bench.variants import BENCH_ALGORITHMS, CROSSDOMAIN
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.methods import (
    CROSSDOMAIN_NAMES,
    ENGINE_METHODS,
    FitData,
    build_method,
    load_fitted,
    method_names,
    register_method,
)
from metarec.recommend.load import MethodModel, load_run

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "data.synthetic.n_domains=3",
    "data.synthetic.n_users=60",
    "data.synthetic.n_items=80",
    "train.steps=3",
    "train.val_every=3",
    "train.val_tasks=16",
    "train.checkpoint_every=3",
    "train.progress=false",
    "algorithm.meta_batch=4",
    "model.embedding_dim=8",
    "model.hidden=[8]",
]
CD_BUDGET = [
    "crossdomain.mf_epochs=1",
    "crossdomain.epochs=1",
    "crossdomain.mapping_epochs=2",
    "crossdomain.batch_size=512",
    "crossdomain.embedding_dim=4",
    "crossdomain.hidden=8",
    "crossdomain.adapt_steps=2",
    "crossdomain.adapt_lrs=[0.1]",
    "crossdomain.val_tasks=16",
    "crossdomain.history_len=5",
]


def _cli_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cd_scenario(tmp_path_factory) -> Path:
    """A cold-domain-users scenario over a two-domain synthetic CSV (source -> target)."""
    return two_domain_scenario(
        tmp_path_factory.mktemp("cd"),
        n_users=80,
        n_source_items=40,
        n_target_items=30,
        n_source=10,
        model='name = "gmf"\nembedding_dim = 8\n',
    )


def test_every_bench_method_is_registered() -> None:
    names = set(method_names())
    assert set(BENCH_ALGORITHMS) <= names and set(CROSSDOMAIN) <= names
    assert set(ENGINE_METHODS) | {"popularity"} | set(CROSSDOMAIN_NAMES) <= names


@pytest.mark.parametrize("name", [*ENGINE_METHODS, "popularity"])
def test_train_then_recommend_single_domain(name, tmp_path, capsys, monkeypatch) -> None:
    if name == "melu-ref":  # the reference keeps its own 1,700-step schedule; a tiny one here
        monkeypatch.setattr(
            engine_mod, "MELU_REF", {**engine_mod.MELU_REF, "train": {"steps": 3, "patience": None}}
        )
    run = tmp_path / "run"
    scen = str(ROOT / "tasks" / "synthetic-cold-start.toml")
    args = ["train", scen, "--out", str(run), *sum((["--set", s] for s in SMALL), [])]
    assert main([*args, "--set", f"algorithm.name={name}"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"]["name"] == name
    meta = load_run(run)
    item = meta.item_ids.values[0]
    (tmp_path / "s.csv").write_text(
        f"user,item,rating\nnew-user,{item},5\nnew-user,{meta.item_ids.values[1]},1\n"
    )
    out = _cli_json(
        capsys,
        [
            "recommend",
            "--run",
            str(run),
            "--user",
            "new-user",
            "--support",
            str(tmp_path / "s.csv"),
            "--json",
            "--k",
            "5",
        ],
    )
    assert out["user"] == "new-user" and len(out["items"]) == 5
    scores = [x["score"] for x in out["items"]]
    assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    assert item not in {x["item"] for x in out["items"]}  # the support items are excluded


_CD_DEFAULT = {
    "no-transfer+adapt",
    "emcdr",
    "ptupcdr+adapt",
    "finetune-transfer",
    "joint+adapt",
    "da-mmd",
}
"""One of each architecture in the default suite; the rest behind the ``slow`` marker (same test)."""


@pytest.mark.parametrize(
    "name",
    [n if n in _CD_DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in CROSSDOMAIN_NAMES],
)
def test_train_then_recommend_crossdomain(name, cd_scenario, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    sets = sum((["--set", s] for s in ["train.progress=false", *CD_BUDGET]), [])
    assert (
        main(
            ["train", str(cd_scenario), "--out", str(run), "--set", f"algorithm.name={name}", *sets]
        )
        == 0
    )
    meta = load_run(run)
    assert isinstance(meta, MethodModel) and meta.name == name
    assert set(json.loads((run / "test_metrics.json").read_text())["states"])
    targets = [i for i in meta.item_ids.values if str(i).startswith("t")]
    user = meta.user_ids.values[0]
    (tmp_path / "s.csv").write_text(
        f"user,item,rating\n{user},{targets[0]},5\n{user},{targets[1]},2\n"
    )
    base = ["recommend", "--run", str(run), "--user", str(user), "--json", "--k", "4"]
    out = _cli_json(capsys, [*base, "--support", str(tmp_path / "s.csv"), "--domain", "target"])
    items = [x["item"] for x in out["items"]]
    assert (
        len(items) == 4 and all(str(i).startswith("t") for i in items) and targets[0] not in items
    )
    # zero-shot (no support): the user's transferred vector; still target items only with --domain
    zero = _cli_json(capsys, [*base, "--domain", "target"])
    assert len(zero["items"]) == 4 and all(str(x["item"]).startswith("t") for x in zero["items"])


def test_crossdomain_round_trip_scores_equal(cd_scenario, tmp_path) -> None:
    sc = load_scenario(cd_scenario, ["algorithm.name=ptupcdr+adapt", *CD_BUDGET])
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    fitted = build_method("ptupcdr+adapt", sc).fit(FitData(table, splits, seed=0))
    from metarec.methods import save_fitted

    save_fitted(fitted, tmp_path / "run", sc)
    back = load_fitted(tmp_path / "run")
    from metarec.episodes.build import sampler_config
    from metarec.episodes.sampler import TaskSampler

    batch = TaskSampler(
        table, splits.pools[splits.states[0]], sampler_config(sc.protocol), seed=0
    ).batch(np.arange(4))
    a = fitted.adapt(batch.support).score(batch.query.users, batch.query.items)
    b = back.adapt(batch.support).score(batch.query.users, batch.query.items)
    torch.testing.assert_close(a, b)
    assert a.shape == batch.query.items.shape


def test_crossdomain_settings_are_checked_before_data(cd_scenario) -> None:
    sc = load_scenario(cd_scenario, ["algorithm.name=emcdr", "crossdomain.mapping_epoch=3"])
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'crossdomain.mapping_epoch' \(did you mean 'mapping_epochs'\?\)",
    ):
        build_method("emcdr", sc)
    with pytest.raises(
        ConfigError, match=r"algorithm.name='emcdrr': unknown method; .*did you mean 'emcdr'"
    ):
        build_method("emcdrr", sc)


def test_registered_method_without_loader_cannot_be_served(monkeypatch) -> None:
    import metarec.methods.base as base
    from metarec.bench.variants import extra_methods
    from metarec.methods import build_fitted

    monkeypatch.setattr(
        base, "_REGISTRY", dict(base._REGISTRY)
    )  # the registration ends with the test
    register_method("test-null", lambda sc: None)
    assert extra_methods() == ("test-null",)  # metarec bench would run it by default
    with pytest.raises(ConfigError, match=r"method 'test-null' was registered without a loader"):
        build_fitted("test-null", {}, None)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"method 'maml' is already registered; pass replace=True"
    ):
        register_method("maml", lambda sc: None)


def test_damaged_method_state_is_a_checkpoint_error(cd_scenario, tmp_path) -> None:
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(cd_scenario),
                "--out",
                str(run),
                "--set",
                "algorithm.name=emcdr",
                *sum((["--set", s] for s in ["train.progress=false", *CD_BUDGET]), []),
            ]
        )
        == 0
    )
    from metarec.runs.checkpoint import load_tensors, save_tensors

    ck = load_tensors(run / "checkpoints" / "best.pt")
    k = next(iter(ck["state_dict"]))
    ck["state_dict"][k] = ck["state_dict"][k][:1]
    save_tensors(run / "checkpoints" / "best.pt", ck)
    with pytest.raises(
        CheckpointError, match=rf"tensor {k!r} has shape .* the weights belong to another run"
    ):
        load_run(run)


class _MeanAdapted:
    def __init__(self, means: torch.Tensor) -> None:
        self.means = means  # (T,)

    @property
    def n_tasks(self) -> int:
        return int(self.means.shape[0])

    def score(self, users, items):
        return self.means[:, None].expand(items.shape).clone()


class _MeanFitted:
    """Scores every item with the mean of the task's support ratings (an amortised 'learner')."""

    name = "test-support-mean"

    def __init__(self, table) -> None:
        self.table = table

    def adapt(self, support, *, steps=None, lr=None):
        m = support.mask.to(support.targets.dtype)
        return _MeanAdapted((support.targets * m).sum(1) / m.sum(1).clamp_min(1.0))

    def config(self):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state) -> None:
        pass


class _MeanMethod:
    name = "test-support-mean"

    def fit(self, data: FitData) -> _MeanFitted:
        return _MeanFitted(data.table)


def test_bench_runs_a_registered_method_through_the_interface(tmp_path, monkeypatch) -> None:
    import metarec.methods.base as base
    from metarec.bench import run_bench

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_method(
        "test-support-mean", lambda sc: _MeanMethod(), loader=lambda n, c, t: _MeanFitted(t)
    )
    sc = load_scenario(
        ROOT / "tasks" / "synthetic-cold-start.toml", [*SMALL, "bench.algorithms=[popularity]"]
    )
    res = run_bench(sc, seeds=1, shots=[3], out=tmp_path / "b", plots=False, verbose=False)
    algos = {r["algorithm"] for r in res.rows}
    assert (
        "test-support-mean" in algos and "popularity" in algos
    )  # registered methods run by default
    mean_rows = [r for r in res.rows if r["algorithm"] == "test-support-mean"]
    assert all(np.isfinite(r["metrics"]["mae"]) for r in mean_rows) and {
        r["shots"] for r in mean_rows
    } == {3, "default"}


def test_every_shipped_method_is_tagged() -> None:
    from metarec.bench.variants import extra_methods
    from metarec.methods import MethodTags, method_info

    for name in method_names():
        if name in extra_methods():  # a method another test registered
            continue
        info = method_info(name)
        assert info.name == name and info.tags.family in (
            "engine",
            "learner",
            "crossdomain",
            "baseline",
        )
        assert set(info.tags.feedback) <= {"explicit", "implicit"} and info.tags.units
    assert method_info("r2d2-source").tags.source_history
    assert method_info("metaemb").tags.units == ("item",)
    assert method_info("lwa").tags.feedback == ("implicit",)
    assert method_info("maml").trainer is not None and method_info("r2d2").trainer is None
    with pytest.raises(ConfigError, match=r"tags.feedback=\('ratings',\): each entry is one of"):
        MethodTags(feedback=("ratings",))  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"algorithm.name='r2d3': unknown method.*did you mean 'r2d2'"
    ):
        method_info("r2d3")
