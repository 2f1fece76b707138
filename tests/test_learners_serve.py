"""Every cold-start learner from training to a served recommendation: `metarec train` (or
`train_method`) writes a run, `metarec recommend --run RUN --user U --support S --json` serves it,
and the run loads back to the same scores as the fitted model that was saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import two_domain_scenario

import metarec.methods.run_dir as runs
from metarec._errors import CheckpointError, ConfigError
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.config.warmup import WarmupConfig
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.build import sampler_config
from metarec.episodes.sampler import TaskSampler
from metarec.episodes.splits import random_split
from metarec.episodes.warmup import click_table, item_warmup_split
from metarec.methods import build_method, load_fitted, train_method
from metarec.methods.learners import LEARNER_METHODS
from metarec.recommend.load import MethodModel, read_support
from metarec.runs.checkpoint import load_item_domains

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "tasks" / "synthetic-cold-start.toml"
BUDGET = [
    "train.steps=3",
    "train.val_every=3",
    "train.val_tasks=8",
    "train.progress=false",
    "algorithm.meta_batch=4",
    "algorithm.inner_steps=2",
    "model.embedding_dim=4",
]
SMALL_SYNTHETIC = ["data.synthetic.n_domains=3", "data.synthetic.n_users=60"]
SMALL_SYNTHETIC += ["data.synthetic.n_items=80"]
KIND = {
    "feature-global": "explicit",
    "tanp": "explicit",
    "mamo": "explicit",
    "lwa": "implicit",
    "nlba": "implicit",
    "warmup-base": "warmup",
    "metaemb": "warmup",
    "mwuf": "warmup",
    "metabridge": "cross-domain",
    "maml-source-init": "cross-domain",
    "reptile-source-init": "cross-domain",
    "content-bias": "explicit",
    "r2d2": "explicit",
    "r2d2-source": "cross-domain",
    "elae": "explicit",
    "metatower": "explicit",
}
SIZES = {  # small modules: the learners' own sizes, through the scenario's [learners.NAME] tables
    "tanp": ["hidden=8", "latent=4", "task_dim=4", "decoder=[8]"],
    "mamo": ["pref_dim=4", "hidden=[8]"],
    "feature-global": ["hidden=[8]"],
    "r2d2": ["hidden=[8]", "rank=3"],
    "r2d2-source": ["hidden=[8]", "rank=3", "history_len=5"],
    "lwa": ["item_dim=4"],
    "nlba": ["item_dim=4", "hidden=[8]"],
    "warmup-base": ["hidden=[8]", "meta_hidden=4", "pretrain_epochs=1", "warm_lrs=[1.0]"],
    "metabridge": ["mf_epochs=1", "hidden=8", "history_len=5"],
    "elae": ["shots=[1, 3]", "lambdas=[1.0, 10.0]"],
    "metatower": ["dim=4", "hidden=8", "feature_dim=4", "steps=3", "val_every=3", "val_tasks=8"],
}
for _n in ("metaemb", "mwuf"):
    SIZES[_n] = SIZES["warmup-base"]
for _n in ("maml-source-init", "reptile-source-init"):
    SIZES[_n] = SIZES["metabridge"]


def _sets(name: str) -> list[str]:
    return [
        *BUDGET,
        f"algorithm.name={name}",
        *(f"learners.{name}.{s}" for s in SIZES.get(name, [])),
    ]


def _argv(sets: list[str]) -> list[str]:
    return sum((["--set", s] for s in sets), [])


@pytest.fixture(scope="module")
def cd_scenario(tmp_path_factory) -> Path:
    """Users cold in the target domain of a two-domain synthetic CSV, with a source history."""
    return two_domain_scenario(
        tmp_path_factory.mktemp("cd"), n_users=60, n_source_items=30, n_target_items=25, n_source=8
    )


def _train(name: str, run: Path, cd_scenario: Path) -> tuple[Any, Any, Any]:
    """Train ``name`` into ``run`` through the CLI entry; ``(fitted that was saved, table, splits)``
    (``table`` / ``splits`` only for the runs built from an in-memory table)."""
    kind, saved = KIND[name], {}
    orig = runs.save_fitted

    def spy(fitted, out, scenario=None):
        saved["fitted"] = fitted
        return orig(fitted, out, scenario)

    runs.save_fitted = spy  # type: ignore[assignment]
    try:
        if kind in ("explicit", "cross-domain"):
            scen = SYNTHETIC if kind == "explicit" else cd_scenario
            extra = SMALL_SYNTHETIC if kind == "explicit" else []
            argv = ["train", str(scen), "--out", str(run), *_argv([*extra, *_sets(name)])]
            assert main(argv) == 0
            return saved["fitted"], None, None
        metrics = ['metrics.names=["auc", "ndcg@10"]']  # both tables below are implicit
        sc = load_scenario(
            SYNTHETIC, [*_sets(name), "protocol.n_support=4", "protocol.n_query=4", *metrics]
        )
        if kind == "implicit":
            t = make_taste_table(n_users=50, n_items=40, per_user=15, feedback="implicit", seed=0)
            sp = random_split(
                t, "user", (0.6, 0.2, 0.2), n_query=4, min_interactions=8, max_interactions=None
            )
        else:
            t = click_table(make_taste_table(n_users=80, n_items=30, per_user=15, seed=0))
            sp = item_warmup_split(t, WarmupConfig(k=4, min_test=4, new_fraction=0.4, seed=0))
        train_method(sc, run, table=t, splits=sp)
        return saved["fitted"], t, sp
    finally:
        runs.save_fitted = orig  # type: ignore[assignment]


def _support_rows(name: str, run: Path, fitted: Any) -> tuple[str, list[tuple[str, Any, float]]]:
    """A user and their support rows, as a user of the CLI would write them."""
    meta = MethodModel(fitted)
    items = [str(i) for i in meta.item_ids.values]
    users = [str(u) for u in meta.user_ids.values]
    kind = KIND[name]
    if kind == "explicit":
        return "new-user", [("new-user", items[0], 5.0), ("new-user", items[1], 1.0)]
    if kind == "implicit":
        return "new-user", [("new-user", items[0], 1.0), ("new-user", items[1], 0.0)]
    if kind == "warmup":  # a known user's clicks, on a new item and an old one
        old = fitted.learner.base.old.numpy()
        new = [i for i in range(1, len(old)) if not old[i]]
        user = users[0]
        return user, [
            (user, items[new[0] - 1], 1.0),
            (user, items[int(np.flatnonzero(old)[0]) - 1], 0.0),
        ]
    target = [i for i in items if i.startswith("t")]  # a cold target user with a source history
    cold = [u for u in users if u in _cold_users(fitted)]
    return cold[0], [(cold[0], target[0], 5.0), (cold[0], target[1], 2.0)]


def _cold_users(fitted: Any) -> set[str]:
    hist = fitted.learner.hist_mask.any(1).numpy()
    return {str(fitted.table.user_ids.values[i - 1]) for i in np.flatnonzero(hist) if i > 0}


def _recommend_json(capsys, run: Path, user: str, csv: Path, extra: list[str]) -> dict:
    capsys.readouterr()
    argv = ["recommend", "--run", str(run), "--user", user, "--support", str(csv), "--json"]
    assert main([*argv, "--k", "5", *extra]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _slow(name: str) -> Any:
    return pytest.param(name, marks=pytest.mark.slow) if name in _SLOW else name


_SLOW = {"feature-global", "nlba", "warmup-base", "reptile-source-init"}
"""Each of these shares its module family with a default-suite case (same loader path)."""


@pytest.mark.parametrize("name", [_slow(n) for n in LEARNER_METHODS])
def test_train_then_recommend_then_reload(name, tmp_path, capsys, cd_scenario) -> None:
    run = tmp_path / "run"
    fitted, table, splits = _train(name, run, cd_scenario)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"]["name"] == name and manifest["method"]["config"]
    user, rows = _support_rows(name, run, fitted)
    csv = tmp_path / "support.csv"
    csv.write_text("user,item,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
    domain = ["--domain", "target"] if KIND[name] == "cross-domain" else []
    out = _recommend_json(capsys, run, user, csv, domain)
    got = [(str(x["item"]), x["score"]) for x in out["items"]]
    assert len(got) == 5 and all(np.isfinite([s for _, s in got]))
    assert len({round(s, 6) for _, s in got}) >= 2  # the scores tell items apart
    assert not {i for _, i, _ in rows} & {i for i, _ in got}  # support items are excluded
    if domain:
        assert all(i.startswith("t") for i, _ in got)  # only the target domain's items
    # the served (reloaded) model gives the in-memory fitted model's scores on the same support
    here = MethodModel(fitted, item_domains=load_item_domains(run)).adapt(
        read_support(csv), user=user
    )
    mine = here.recommend(user, k=5, domain="target" if domain else None)
    assert [str(i) for i, _ in mine] == [i for i, _ in got]
    np.testing.assert_allclose([s for _, s in mine], [s for _, s in got], rtol=1e-5, atol=1e-5)
    # and on sampled tasks of a test pool (items as tasks for the warm-up methods)
    back = load_fitted(run)
    if table is None:
        sc = load_scenario(run / "config.json")
        from metarec.data.load import load_table
        from metarec.episodes.build import build_splits

        table = load_table(sc.data)
        splits = build_splits(table, sc.protocol)
    state = splits.states[0]
    scfg = sampler_config(load_scenario(run / "config.json").protocol)
    b = TaskSampler(table, splits.pools[state], scfg, seed=0).batch(np.arange(3))
    a1 = fitted.adapt(b.support).score(b.query.users, b.query.items)
    a2 = back.adapt(b.support).score(b.query.users, b.query.items)
    assert torch.isfinite(a1).all()
    torch.testing.assert_close(a1, a2)
    for k, v in fitted.state_dict().items():  # every tensor restored exactly
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)


def test_learner_settings_from_the_scenario_name_their_set_key() -> None:
    sc = load_scenario(SYNTHETIC, ["learners.tanp.hiden=8"])
    with pytest.raises(
        ConfigError, match=r"unknown key 'learners.tanp.hiden' \(did you mean 'hidden'"
    ):
        build_method("tanp", sc)
    sc = load_scenario(SYNTHETIC, ["learners.mamo.memory=0"])
    with pytest.raises(ConfigError, match=r"learners.mamo.memory=0: must be >= 1"):
        build_method("mamo", sc)
    sc = load_scenario(SYNTHETIC, ["learners.tanp=3"])
    with pytest.raises(ConfigError, match=r"learners.tanp=3: expected a table"):
        build_method("tanp", sc)
    m = build_method("tanp", load_scenario(SYNTHETIC, ["learners.tanp.latent=7"]))
    assert m.settings.latent == 7


def test_damaged_learner_manifest_is_a_checkpoint_error(tmp_path, cd_scenario) -> None:
    run = tmp_path / "run"
    _train("tanp", run, cd_scenario)
    mf = json.loads((run / "manifest.json").read_text())
    mf["method"]["config"]["settings"]["decoder"] = "wide"
    (run / "manifest.json").write_text(json.dumps(mf))
    with pytest.raises(CheckpointError, match=r"saved settings of 'tanp' do not rebuild"):
        load_fitted(run)
