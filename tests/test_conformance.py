"""Every registered method through the one interface, alike: trained by ``train_method`` on a tiny
scenario of its kind (chosen by its registration tags), its training log present, streamed to a
logger and read back from the run folder, its progress bar advancing; the run loaded back
recommends what the in-memory method recommends, and so does its saved adaptation (``metarec
adapt``'s directory). A method that cannot pass is a bug to fix, not a skip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import COLD_START, two_domain_scenario

import metarec.methods.engine.method as engine_mod
import metarec.methods.run_dir as run_dir_mod
import metarec.train.outer as outer_mod
from metarec.config import load_scenario
from metarec.config.warmup import WarmupConfig
from metarec.data.load import load_table
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.build import build_splits, sampler_config
from metarec.episodes.sampler import TaskSampler
from metarec.episodes.splits import random_split
from metarec.episodes.warmup import click_table, item_warmup_split
from metarec.methods import FitData, build_method, method_info, method_names, train_method
from metarec.recommend.load import load_adapted, load_run
from metarec.recommend.run_model import RunModel
from metarec.train.log import TrainingLog

TINY = [
    "train.steps=3",
    "train.val_every=2",
    "train.val_tasks=8",
    "train.checkpoint_every=3",
    "train.progress=true",
    "algorithm.meta_batch=4",
    "algorithm.inner_steps=2",
    "model.embedding_dim=4",
    "model.hidden=[8]",
]
SYNTHETIC = ["data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80"]
CROSSDOMAIN = [
    "crossdomain.mf_epochs=1",
    "crossdomain.epochs=2",
    "crossdomain.mapping_epochs=2",
    "crossdomain.batch_size=512",
    "crossdomain.embedding_dim=4",
    "crossdomain.hidden=8",
    "crossdomain.adapt_steps=1",
    "crossdomain.adapt_lrs=[0.1]",
    "crossdomain.val_tasks=8",
    "crossdomain.history_len=4",
]
SIZES = {  # the learners' own sizes, small (their [learners.NAME] tables)
    "tanp": ["hidden=8", "latent=4", "task_dim=4", "decoder=[8]"],
    "mamo": ["pref_dim=4", "hidden=[8]"],
    "feature-global": ["hidden=[8]"],
    "r2d2": ["hidden=[8]", "rank=3"],
    "r2d2-source": ["hidden=[8]", "rank=3", "history_len=4"],
    "lwa": ["item_dim=4"],
    "nlba": ["item_dim=4", "hidden=[8]"],
    "warmup-base": ["hidden=[8]", "meta_hidden=4", "pretrain_epochs=1", "warm_lrs=[1.0]"],
    "metaemb": ["hidden=[8]", "meta_hidden=4", "pretrain_epochs=1", "warm_lrs=[1.0]"],
    "mwuf": ["hidden=[8]", "meta_hidden=4", "pretrain_epochs=1", "warm_lrs=[1.0]"],
    "metabridge": ["mf_epochs=1", "hidden=8", "history_len=4"],
    "maml-source-init": ["mf_epochs=1", "hidden=8", "history_len=4"],
    "reptile-source-init": ["mf_epochs=1", "hidden=8", "history_len=4"],
}


class _Logger:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.closed = False

    def log(self, row: Any) -> None:
        self.rows.append(dict(row))

    def close(self) -> None:
        self.closed = True


class _Bar:
    """Stands in for tqdm in the outer loop: counts the steps shown."""

    shown = 0

    def __init__(self, *args: Any, disable: bool = False, **kwargs: Any) -> None:
        self.disable = disable

    def update(self, n: int = 1) -> None:
        if not self.disable:
            _Bar.shown += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def cd_toml(tmp_path_factory) -> Path:
    return two_domain_scenario(
        tmp_path_factory.mktemp("cd"), n_users=60, n_source_items=30, n_target_items=25, n_source=10
    )


def _setup(name: str, cd_toml: Path) -> tuple[Any, Any, Any]:
    """``(scenario, table, splits)`` of the kind ``name``'s tags ask for."""
    tags = method_info(name).tags
    sets = [*TINY, f"algorithm.name={name}", *(f"learners.{name}.{s}" for s in SIZES.get(name, []))]
    if tags.source_history:
        sc = load_scenario(cd_toml, [*sets, *CROSSDOMAIN, "model.name=gmf"])
        table = load_table(sc.data)
        return sc, table, build_splits(table, sc.protocol)
    metrics = 'metrics.names=["auc", "ndcg@10"]'
    if "item" in tags.units:  # cold items: the warm-up protocol on clicks
        sc = load_scenario(
            COLD_START, [*sets, "protocol.n_support=4", "protocol.n_query=4", metrics]
        )
        table = click_table(make_taste_table(n_users=60, n_items=30, per_user=12, seed=0))
        return sc, table, item_warmup_split(table, WarmupConfig(k=4, min_test=4, new_fraction=0.4))
    if "explicit" not in tags.feedback:  # clicks
        sc = load_scenario(
            COLD_START, [*sets, "protocol.n_support=4", "protocol.n_query=4", metrics]
        )
        table = make_taste_table(n_users=40, n_items=30, per_user=12, feedback="implicit", seed=0)
        splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=4, min_interactions=8)
        return sc, table, splits
    sc = load_scenario(COLD_START, [*sets, *SYNTHETIC])
    table = load_table(sc.data)
    return sc, table, build_splits(table, sc.protocol)


def _support(sc, table, splits) -> tuple[list[tuple[Any, Any, float]], list[Any]]:
    """Two test tasks' support rows, by raw id, and their users."""
    pool = splits.pools[splits.states[0]]
    b = TaskSampler(table, pool, sampler_config(sc.protocol), seed=0).batch(np.arange(2))
    s = b.support
    m = s.mask.numpy()
    users = table.user_ids.decode(s.users.numpy()[m])
    items = table.item_ids.decode(s.items.numpy()[m])
    rows = [(u, i, float(r)) for u, i, r in zip(users, items, s.targets.numpy()[m], strict=True)]
    return rows, list(dict.fromkeys(users))


def _same(a, b, user: Any) -> None:
    top_a, top_b = a.recommend(user, k=5), b.recommend(user, k=5)
    assert [i for i, _ in top_a] == [i for i, _ in top_b]
    np.testing.assert_allclose([s for _, s in top_a], [s for _, s in top_b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", method_names())
def test_every_method_trains_logs_saves_loads_adapts_alike(
    name, cd_toml, tmp_path, monkeypatch
) -> None:
    if name == "melu-ref":  # the reference keeps its own 1,700-step schedule; a tiny one here
        monkeypatch.setattr(
            engine_mod, "MELU_REF", {**engine_mod.MELU_REF, "train": {"steps": 3, "patience": None}}
        )
    monkeypatch.setattr(outer_mod, "tqdm", _Bar)
    _Bar.shown = 0
    saved: dict[str, Any] = {}
    real_save = run_dir_mod.save_fitted

    def spy(fitted, out, scenario=None):
        saved["fitted"] = fitted
        return real_save(fitted, out, scenario)

    monkeypatch.setattr(run_dir_mod, "save_fitted", spy)
    sc, table, splits = _setup(name, cd_toml)
    run, logger = tmp_path / "run", _Logger()
    res = train_method(sc, run, table=table, splits=splits, evaluate_test=False, loggers=[logger])

    # the training log: present, streamed to the logger, on the progress bar, read back
    log = res.training_log
    assert isinstance(log, TrainingLog) and log.steps == res.steps
    assert logger.closed and [r["step"] for r in logger.rows] == [r["step"] for r in log.rows]
    if log.rows:  # a method that trains by steps (or epochs)
        assert log.steps > 0 and 0 <= log.best_step <= log.steps and log.curve
        assert _Bar.shown >= log.steps
    back = load_run(run)
    assert back.fitted.training_log.steps == log.steps
    curve = back.fitted.training_log.curve
    assert [s for s, _ in curve] == [s for s, _ in log.curve]
    np.testing.assert_allclose([v for _, v in curve], [v for _, v in log.curve], rtol=1e-9)

    # the run loaded back recommends what the in-memory method recommends
    fitted = saved.get("fitted")
    if fitted is None:  # a family that writes its own run: the same fit, in memory
        fitted = build_method(name, sc).fit(FitData(table, splits, seed=sc.train.seed))
    rows, users = _support(sc, table, splits)
    # the fitted method and what it adapts agree on the kind of score (ratings or a ranking
    # score, which the bench and the server must never clip to the rating scale)
    pool = splits.pools[splits.states[0]]
    one = TaskSampler(table, pool, sampler_config(sc.protocol), seed=0).batch(np.arange(2))
    kind = getattr(fitted.adapt(one.support), "score_kind", "rating")
    assert RunModel(fitted).ranks == (kind == "rank"), kind
    mine = RunModel(fitted).adapt_many(rows)
    served = back.adapt_many(rows)
    assert served.n_tasks == mine.n_tasks == len(users)
    for u in [*users, "a-stranger"]:
        _same(mine, served, u)
    # and so does its saved adaptation (metarec adapt's directory)
    again = load_adapted(served.save(tmp_path / "adapted"))
    assert again.n_tasks == served.n_tasks
    for u in [*users, "a-stranger"]:
        _same(served, again, u)
    item = table.item_ids.values[:3]
    torch.testing.assert_close(
        torch.as_tensor(again.predict(users[0], item)),
        torch.as_tensor(served.predict(users[0], item)),
    )
