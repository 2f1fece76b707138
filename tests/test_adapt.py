"""The fast-adapt API: load a run, adapt to cold users, predict / recommend, save / load, CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import CheckpointError, ConfigError, DataError
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.data.table import Columns
from metarec.episodes.build import build_splits
from metarec.recommend.load import (
    Recommender,
    RunModel,
    load_adapted,
    load_run,
    read_support,
)
from metarec.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = [
    "train.steps=12",
    "train.val_every=6",
    "train.val_tasks=32",
    "train.progress=false",
    "data.synthetic.n_domains=4",
]
FEATURE_ONLY = (
    8  # items whose interactions are dropped before training: scored by their features only
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run per module, on a table where a few items have features but no interaction."""
    sc = load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", overrides=OVERRIDES)
    full = load_table(sc.data)
    dropped = np.arange(1, FEATURE_ONLY + 1)  # item indices
    table = full.subset(~np.isin(full.items, dropped))
    splits = build_splits(table, sc.protocol)
    run = tmp_path_factory.mktemp("adapt") / "run"
    train(sc, run, table=table, splits=splits, evaluate_test=False)
    test = splits.pools[splits.states[0]]
    frame = table.to_frame(raw_ids=True)
    cold = [
        int(u) for u in table.user_ids.decode(test.units[:40])
    ]  # meta-test users: never in meta-training
    feature_only = [int(i) for i in full.item_ids.decode(dropped)]
    return {
        "run": run,
        "frame": frame,
        "cold": cold,
        "feature_only": feature_only,
        "meta": load_run(run),
    }


def _support(trained, users, n=10) -> pd.DataFrame:
    f = trained["frame"]
    rows = f[f["user"].isin(users)].groupby("user", sort=False).head(n)
    return rows[["user", "item", "rating"]].reset_index(drop=True)


def test_load_run_rebuilds_the_model(trained) -> None:
    meta = trained["meta"]
    assert isinstance(meta, RunModel)
    assert meta.feedback == "explicit" and meta.rating_scale == (1.0, 5.0)
    assert not meta.model.training
    assert "melu" in repr(meta)
    with pytest.raises(ConfigError, match=r"which='worst': choose one of \('best', 'last'\)"):
        load_run(trained["run"], which="worst")
    assert load_run(trained["run"], which="last").step >= meta.step


def test_cold_user_gets_k_sorted_finite_recommendations(trained) -> None:
    meta, user = trained["meta"], trained["cold"][0]
    support = _support(trained, [user])
    rec = meta.adapt(support)
    top = rec.recommend(user, k=10)
    assert len(top) == 10
    items, scores = [i for i, _ in top], np.array([s for _, s in top])
    assert len(set(items)) == 10 and all(i in meta.item_ids for i in items)
    assert np.isfinite(scores).all() and (np.diff(scores) <= 0).all()
    # ranking scores are the raw predictions (unclipped); predict() clips ratings to the scale
    np.testing.assert_allclose(scores, rec.predict(user, items, clip=False), rtol=1e-5, atol=1e-5)
    assert (rec.predict(user, items) >= 1.0).all() and (rec.predict(user, items) <= 5.0).all()
    # adaptation moved the predictions away from the initialisation
    probe = list(support["item"])
    assert not np.allclose(
        rec.predict(user, probe, clip=False), meta.initial().predict(user, probe, clip=False)
    )
    # a brand-new id (unknown to the encoder: index 0) is served too
    new = meta.adapt(
        [("brand-new", i, r) for i, r in zip(support["item"], support["rating"], strict=True)]
    )
    assert len(new.recommend("brand-new", k=10)) == 10


def test_exclude_seen(trained) -> None:
    meta, user = trained["meta"], trained["cold"][1]
    support = _support(trained, [user])
    seen = set(support["item"])
    rec = meta.adapt(support)
    everything = rec.recommend(user, k=10_000)
    assert not seen & {i for i, _ in everything}
    assert len(everything) == len(meta.item_ids) - 1 - len(seen)
    kept = rec.recommend(user, k=10_000, exclude_seen=False)
    assert seen <= {i for i, _ in kept} and len(kept) == len(meta.item_ids) - 1
    only = rec.recommend(user, k=3, exclude_seen=False, candidates=list(seen))
    assert len(only) == 3 and {i for i, _ in only} <= seen
    with pytest.raises(ConfigError, match=r"k=0: must be an int >= 1"):
        rec.recommend(user, k=0)


def test_known_and_unknown_ids(trained) -> None:
    meta = trained["meta"]
    init = meta.initial()
    items = list(trained["frame"]["item"].iloc[:20])
    # every unknown user is index 0 (the unknown features): identical predictions
    a, b = init.predict("nobody-1", items, clip=False), init.predict("nobody-2", items, clip=False)
    np.testing.assert_array_equal(a, b)
    # a known user is scored through its own side features
    known = trained["cold"][2]
    assert known in meta.user_ids and not np.allclose(init.predict(known, items, clip=False), a)
    # an item the encoder does not know has no features: an error naming it, unless asked for
    with pytest.raises(
        DataError, match=r"items: 1 item id\(s\) not in the run's item catalogue \('no-such-item'\)"
    ):
        init.predict(known, ["no-such-item"])
    with pytest.raises(
        DataError, match=r"support: 2 item id\(s\) .*\('x1', 'x2'\).*unknown_items='fallback'"
    ):
        meta.adapt([(known, "x1", 3.0), (known, "x2", 4.0), (known, items[0], 5.0)])
    fb = meta.adapt([(known, "x1", 3.0), (known, items[0], 5.0)], unknown_items="fallback")
    p = fb.predict([known, known], ["x1", "x2"], unknown_items="fallback", clip=False)
    assert p[0] == p[1]  # both the unknown item
    # feature-only items (in the encoder and the feature table, never rated) are scored by features
    fo = trained["feature_only"]
    scores = init.predict(known, fo, clip=False)
    assert np.isfinite(scores).all() and len(np.unique(scores)) > 1
    catalogue = {i for i, _ in init.recommend(known, k=10_000)}
    assert set(fo) <= catalogue


def test_empty_support_warns_and_keeps_the_initialisation(trained) -> None:
    meta = trained["meta"]
    items = list(trained["frame"]["item"].iloc[:15])
    user = trained["cold"][3]
    with pytest.warns(
        UserWarning, match=rf"support is empty for user {user!r}: .*meta-learned initialisation"
    ):
        rec = meta.adapt([], user=user)
    np.testing.assert_array_equal(
        rec.predict(user, items, clip=False), meta.initial().predict(user, items, clip=False)
    )
    assert not rec.is_adapted(user)
    with pytest.warns(UserWarning, match="support is empty"):
        meta.adapt_many(pd.DataFrame({"user": [], "item": [], "rating": []}))
    # rows of other users only: empty for this user
    with pytest.warns(UserWarning, match="support is empty"):
        meta.adapt(_support(trained, [trained["cold"][4]]), user=user)
    steps0 = meta.adapt(_support(trained, [user]), steps=0)
    np.testing.assert_array_equal(
        steps0.predict(user, items, clip=False), meta.initial().predict(user, items, clip=False)
    )


def test_adapt_many_equals_per_user_adapt(trained) -> None:
    meta = trained["meta"]
    users = trained["cold"][:10]
    f = _support(trained, users, n=12)
    f = f[
        f.groupby("user").cumcount() < 3 + f["user"].map({u: k % 9 for k, u in enumerate(users)})
    ]  # 3..11 rows: padding
    batched = meta.adapt_many(f, chunk_size=4)  # 3 vmapped calls
    assert batched.n_tasks == len(users)
    items = list(trained["frame"]["item"].iloc[100:130])
    for k, u in enumerate(users):  # per-user adapt takes the eager single-task path
        one = meta.adapt(f[f["user"] == u])
        np.testing.assert_allclose(
            batched.predict(u, items, clip=False),
            one.predict(u, items, clip=False),
            rtol=1e-5,
            atol=1e-5,
        )
        if k < 3:
            assert [i for i, _ in batched.recommend(u, k=5)] == [
                i for i, _ in one.recommend(u, k=5)
            ]
    # and adapt() of the same frame is the same batched computation
    np.testing.assert_allclose(
        meta.adapt(f).predict(users[0], items), batched.predict(users[0], items), atol=1e-6
    )


def test_input_forms_agree(trained) -> None:
    meta, user = trained["meta"], trained["cold"][5]
    f = _support(trained, [user])
    items = list(trained["frame"]["item"].iloc[:10])
    ref = meta.adapt(f).predict(user, items, clip=False)
    renamed = f.rename(columns={"user": "uid", "item": "iid", "rating": "stars"})
    forms = [
        meta.adapt(renamed, columns={"user": "uid", "item": "iid", "rating": "stars"}),
        meta.adapt(renamed, columns=Columns(user="uid", item="iid", rating="stars")),
        meta.adapt(list(f.itertuples(index=False, name=None))),
        meta.adapt(list(zip(f["item"], f["rating"], strict=True)), user=user),
        meta.adapt(f[["item", "rating"]], user=user),
        meta.adapt(f.astype({"user": str, "item": str})),  # ids read from a CSV are strings
    ]
    for rec in forms:
        np.testing.assert_allclose(rec.predict(user, items, clip=False), ref, atol=1e-6)


def test_per_domain_adapts_one_task_for_every_user(trained) -> None:
    meta = trained["meta"]
    users = trained["cold"][:5]
    rec = meta.adapt(_support(trained, users), per="domain")
    assert rec.n_tasks == 1 and rec.is_adapted("someone-else")
    items = list(trained["frame"]["item"].iloc[:10])
    assert np.isfinite(rec.predict(["someone-else"] * 10, items)).all()
    with pytest.raises(
        ConfigError, match=r"per='domian': choose 'user' .* \(did you mean 'domain'\?\)"
    ):
        meta.adapt([], per="domian")


def test_bad_support_is_rejected(trained) -> None:
    meta = trained["meta"]
    item = trained["frame"]["item"].iloc[0]
    with pytest.raises(
        DataError, match=r"support ratings: 7 at row 0 is outside the run's rating_scale=\(1, 5\)"
    ):
        meta.adapt([("u", item, 7.0)])
    with pytest.raises(DataError, match=r"support ratings: 'high' at row 0 is not a finite number"):
        meta.adapt([("u", item, "high")])
    with pytest.raises(
        DataError, match=r"support\[0\]=\('u', 1\): expected \(user, item, rating\) tuples"
    ):
        meta.adapt([("u", 1)])
    with pytest.raises(
        DataError,
        match=r"support columns.rating='rating': column not found.*\(did you mean 'ratings'\?\)",
    ):
        meta.adapt(pd.DataFrame({"user": ["u"], "item": [item], "ratings": [4.0]}))
    with pytest.raises(DataError, match=r"support: expected a DataFrame"):
        meta.adapt("ratings.csv")
    with pytest.raises(ConfigError, match=r"lr=-1: must be a finite number > 0"):
        meta.adapt([("u", item, 4.0)], lr=-1)
    with pytest.raises(ConfigError, match=r"steps=-2: must be an int >= 0"):
        meta.adapt([("u", item, 4.0)], steps=-2)
    with pytest.raises(DataError, match=r"predict: 2 users but 1 items"):
        meta.initial().predict(["a", "b"], [item])


def test_save_load_round_trip(trained, tmp_path) -> None:
    meta = trained["meta"]
    users = trained["cold"][:6]
    rec = meta.adapt_many(_support(trained, users))
    out = rec.save(tmp_path / "adapted")
    back = load_adapted(out)
    assert isinstance(back, Recommender) and back.n_tasks == rec.n_tasks
    items = list(trained["frame"]["item"].iloc[:50])
    for u in [*users, "a-cold-stranger"]:
        np.testing.assert_array_equal(
            back.predict(u, items, clip=False), rec.predict(u, items, clip=False)
        )
        assert back.recommend(u, k=10) == rec.recommend(u, k=10)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["adapted"] is True and manifest["adaptation"]["tasks"] == 6
    # the adapted folder is run-like: load_run gives the meta-model with the same initialisation
    again = load_run(out)
    np.testing.assert_array_equal(
        again.initial().predict(users[0], items, clip=False),
        meta.initial().predict(users[0], items, clip=False),
    )
    with pytest.raises(CheckpointError, match=r"a meta-trained run, not an adapted one"):
        load_adapted(trained["run"])
    with pytest.raises(ConfigError, match=r"already holds a run directory"):
        rec.save(out)


def test_gmf_run_restores_known_ids(tmp_path) -> None:
    """Id models: which ids were trained is recovered from the weights (user tasks: every user cold)."""
    sc = load_scenario(
        ROOT / "tasks" / "synthetic-cold-start.toml",
        overrides=[*OVERRIDES, "model.name='gmf'", "train.steps=4", "train.val_every=4"],
    )
    res = train(sc, tmp_path / "gmf", evaluate_test=False)
    meta = load_run(res.run_dir)
    assert (
        not meta.model.known_users.any()
    )  # user-level tasks: the unknown user embedding serves everyone
    assert 0 < int(meta.model.known_items.sum()) < len(meta.item_ids) - 1
    rec = meta.adapt([("u", meta.item_ids.values[0], 5.0), ("u", meta.item_ids.values[1], 1.0)])
    assert len(rec.recommend("u", k=10)) == 10
    np.testing.assert_array_equal(
        load_adapted(rec.save(tmp_path / "ad")).predict("u", [meta.item_ids.values[3]]),
        rec.predict("u", [meta.item_ids.values[3]]),
    )


# ---------------------------------------------------------------------- CLI
def _csv(trained, tmp_path, users, n=10):
    p = tmp_path / "support.csv"
    _support(trained, users, n).to_csv(p, index=False)
    return p


def test_cli_recommend_json(trained, tmp_path, capsys) -> None:
    user = trained["cold"][6]
    csv = _csv(trained, tmp_path, [user])
    assert (
        main(
            [
                "recommend",
                "--run",
                str(trained["run"]),
                "--user",
                str(user),
                "--support",
                str(csv),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert out["user"] == str(user) and len(out["items"]) == 10  # ids are strings in JSON
    scores = [x["score"] for x in out["items"]]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    seen = {str(i) for i in pd.read_csv(csv)["item"]}
    assert not seen & {x["item"] for x in out["items"]}


def test_cli_adapt_then_recommend(trained, tmp_path, capsys) -> None:
    users = trained["cold"][:3]
    csv = _csv(trained, tmp_path, users)
    out = tmp_path / "adapted"
    assert (
        main(
            [
                "adapt",
                "--run",
                str(trained["run"]),
                "--support",
                str(csv),
                "--out",
                str(out),
                "--steps",
                "4",
            ]
        )
        == 0
    )
    assert "adapted 3 user(s) (4 step(s))" in capsys.readouterr().out
    assert main(["recommend", "--run", str(out), "--user", str(users[0]), "--k", "5"]) == 0
    text = capsys.readouterr().out
    assert (
        f"top 5 for user {users[0]!r} (known user; adapted, 4 step(s))" in text
        and len(text.strip().splitlines()) == 7
    )
    assert (
        main(["recommend", "--run", str(out), "--user", str(users[0]), "--json", "--k", "3"]) == 0
    )
    adapted = load_adapted(out).recommend(users[0], k=3)
    assert [(x["item"], x["score"]) for x in json.loads(capsys.readouterr().out)["items"]] == [
        (str(i), s) for i, s in adapted
    ]  # ids are strings in JSON


def test_cli_errors_exit_2_with_a_message(trained, tmp_path, capsys) -> None:
    run = str(trained["run"])
    headerless = tmp_path / "noheader.csv"
    headerless.write_text("1,2,4.0\n1,3,5.0\n")
    assert main(["recommend", "--run", run, "--user", "1", "--support", str(headerless)]) == 2
    assert (
        "support=" in (err := capsys.readouterr().err)
        and "has no header row" in err
        and "user,item,rating" in err
    )
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("user,movie,rating\n1,2,4\n")
    assert main(["adapt", "--run", run, "--support", str(wrong), "--out", str(tmp_path / "o")]) == 2
    assert "no 'item'" in capsys.readouterr().err
    assert main(["recommend", "--run", str(tmp_path / "missing"), "--user", "1"]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert (
        main(
            [
                "adapt",
                "--run",
                run,
                "--support",
                str(tmp_path / "nope.csv"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: a missing required option
        main(["recommend", "--run", run])
    assert e.value.code == 2 and "--user" in capsys.readouterr().err


def test_read_support(tmp_path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("user, item, rating, extra\nu1, 7, 4, x\n")
    df = read_support(p)
    assert list(df.columns) == ["user", "item", "rating"] and df.iloc[0].tolist() == ["u1", "7", 4]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_support(tmp_path / "empty.csv")


def test_fast_weights_are_stacked_per_task(trained) -> None:
    meta = trained["meta"]
    rec = meta.adapt_many(_support(trained, trained["cold"][:4]))
    for name, v in rec.adapted.fast.items():
        assert v.shape == (4, *meta.params[name].shape)  # one row per user
    saved = meta.fitted.adapted_state(rec.adapted)["fast"]  # the adapted directory's format
    for name, v in saved.items():
        assert v.shape == (5, *meta.params[name].shape)  # 4 users + the initialisation row
        torch.testing.assert_close(v[-1], meta.params[name].cpu())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "4 task(s)" in repr(rec)


# ---------------------------------------------------------------------- real data
@pytest.mark.data
def test_ml1m_cold_user_recommend_end_to_end(shared_data, tmp_path, capsys) -> None:
    """MovieLens-1M, MeLU protocol, a tiny training budget; a user id not in ML-1M with five real
    movie ratings gets 10 scored movies from `metarec recommend --support ... --json`."""
    sc = load_scenario(
        ROOT / "tasks" / "ml1m-melu.toml",
        data_root=str(shared_data),
        overrides=[
            "train.steps=2",
            "train.val_every=2",
            "train.val_tasks=8",
            "train.progress=false",
            "algorithm.meta_batch=4",
        ],
    )
    run = tmp_path / "run"
    train(sc, run, evaluate_test=False)
    meta = load_run(run)
    assert "999999" not in meta.user_ids and 999999 not in meta.user_ids
    movies = [1193, 661, 914, 3408, 2355]  # real MovieLens-1M movie ids
    assert all(m in meta.item_ids for m in movies)
    csv = tmp_path / "five_ratings.csv"
    csv.write_text(
        "user,item,rating\n"
        + "".join(f"999999,{m},{r}\n" for m, r in zip(movies, [5, 3, 3, 4, 5], strict=True))
    )
    assert (
        main(["recommend", "--run", str(run), "--user", "999999", "--support", str(csv), "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["user"] == "999999" and len(out["items"]) == 10
    assert all(
        isinstance(x["score"], float) and np.isfinite(x["score"]) for x in out["items"]
    )  # unclipped
    assert not set(movies) & {x["item"] for x in out["items"]} and all(
        x["item"] in meta.item_ids for x in out["items"]
    )


# ---------------------------------------------------------------------- serving fast paths
def test_encode_once_path_equals_the_full_model(trained) -> None:
    """MeLU: the engine's encode-once inner loop (features computed once, the decision layers
    adapted alone) serves the full model's numbers."""
    from dataclasses import replace

    from metarec.models.base import encoder_is_fixed

    meta = trained["meta"]
    generic = load_run(trained["run"])
    generic.fitted.algo = replace(
        generic.algo, encode_once=False
    )  # the plain forward pass at every inner step
    assert meta.algo.encode_once and encoder_is_fixed(meta.model, meta.fitted._init_fast())
    users = trained["cold"][:4]
    f = _support(trained, users, n=6)
    items = list(trained["frame"]["item"].iloc[:40])
    for a, b in (
        (
            meta.adapt(f[f["user"] == users[0]]),
            generic.adapt(f[f["user"] == users[0]]),
        ),  # eager, one user
        (meta.adapt_many(f), generic.adapt_many(f)),
    ):  # vmapped
        for name in a.adapted.fast:
            torch.testing.assert_close(
                a.adapted.fast[name], b.adapted.fast[name], rtol=1e-5, atol=1e-6
            )
        np.testing.assert_allclose(
            a.predict(users[0], items, clip=False),
            b.predict(users[0], items, clip=False),
            atol=1e-5,
        )
        top_a, top_b = a.recommend(users[0], k=10), b.recommend(users[0], k=10)
        assert [i for i, _ in top_a] == [i for i, _ in top_b]
        np.testing.assert_allclose([s for _, s in top_a], [s for _, s in top_b], atol=1e-5)
        cand = items[:7]
        assert [i for i, _ in a.recommend("a-stranger", k=3, candidates=cand)] == [
            i for i, _ in b.recommend("a-stranger", k=3, candidates=cand)
        ]


def test_thousands_of_cold_users_in_one_vmapped_call(trained, monkeypatch) -> None:
    import metarec.methods.engine.method as A

    meta = trained["meta"]
    calls = []
    real = A.adapt_batch
    monkeypatch.setattr(
        A, "adapt_batch", lambda *a, **k: calls.append(a[3].users.shape) or real(*a, **k)
    )
    items = np.asarray(meta.item_ids.values, dtype=object)
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame(
        {
            "user": np.repeat([f"cold-{k}" for k in range(n)], 3),
            "item": np.concatenate([rng.choice(items, 3, replace=False) for _ in range(n)]),
            "rating": rng.integers(1, 6, 3 * n),
        }
    )
    rec = meta.adapt_many(frame, steps=2)
    assert calls == [(n, 3)]  # one (tasks, support) batch under one vmap
    assert rec.n_tasks == n and rec.is_adapted("cold-1999") and not rec.is_adapted("cold-2000")
    assert len(rec.recommend("cold-7", k=10)) == 10


def test_support_rating_one_item_several_times_warns() -> None:
    from metarec.recommend.support import parse_support

    rows = [("u", "i1", 4.0), ("u", "i1", 2.0), ("u", "i1", 5.0), ("u", "i2", 3.0)]
    with pytest.warns(
        UserWarning,
        match=r"support: user 'u' rates item 'i1' 3 times .*each row is used as its own",
    ):
        got = parse_support(rows, None, None, "explicit", (1.0, 5.0))
    assert len(got.items) == 4  # nothing dropped silently
    parse_support(
        rows[2:], None, None, "explicit", (1.0, 5.0)
    )  # no repeat: no warning (warnings are errors)
