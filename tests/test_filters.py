"""Nothing dropped in silence: every filter's share under its key (tasks inspect, train, bench),
the small validation pool warning, the predefined split's advice; the CLI's --version and the
adapted-user message."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.cli.main import main
from metarec.config import ProtocolConfig, load_scenario
from metarec.data.load import load_table
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.build import build_splits
from metarec.episodes.filters import MIN_SELECTION_TASKS, SmallPoolWarning
from metarec.episodes.predefined import predefined_split

ROOT = Path(__file__).resolve().parent.parent


def _table(counts: list[int]) -> InteractionTable:
    """User ``u`` rates ``counts[u]`` items, each item once per user."""
    rows = [(f"u{u}", f"i{i}", 1 + (u + i) % 5) for u, n in enumerate(counts) for i in range(n)]
    return InteractionTable.from_frame(pd.DataFrame(rows, columns=["user", "item", "rating"]))


def test_every_left_out_row_is_counted_under_its_key():
    counts = [5] * 6 + [30] * 60 + [150] * 4  # 6 users below min 20, 4 above max 100
    t = _table(counts)
    p = ProtocolConfig(min_interactions=20, max_interactions=100, fractions=(0.5, 0.25, 0.25))
    s = build_splits(t, p)
    by_key = {d.key: d for d in s.filters.drops}
    assert set(by_key) == {"protocol.min_interactions", "protocol.max_interactions"}
    lo, hi = by_key["protocol.min_interactions"], by_key["protocol.max_interactions"]
    assert (lo.value, lo.rows, lo.users) == (20, 6 * 5, 6)
    assert (hi.value, hi.rows, hi.users) == (100, 4 * 150, 4)
    assert hi.items == 150 - 30  # items 30..149 are rated only by the users above the limit
    assert s.filters.rows == (60 * 30, len(t)) and s.filters.users == (60, 70)
    assert 'set protocol.max_interactions = "none"' in hi.line()
    # the report adds up: kept + every filter's rows = the table
    assert s.filters.rows[0] + sum(d.rows for d in s.filters.drops) == len(t)


def test_nothing_left_out_reports_nothing():
    t = _table([30] * 60)
    s = build_splits(t, ProtocolConfig(max_interactions=None, fractions=(0.5, 0.25, 0.25)))
    assert s.filters.drops == [] and s.filters.lines() == [
        "kept 1,800 of 1,800 interactions, 60 of 60 users, 30 of 30 items in the pools"
    ]


def test_merged_duplicates_are_reported():
    df = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "x", "y"], "rating": [1, 3, 4]})
    t = InteractionTable.from_frame(df, duplicates="mean")
    assert [(d.key, d.value, d.rows) for d in t.filtered] == [("data.duplicates", "mean", 1)]


def test_a_small_validation_pool_is_warned_about_with_the_key():
    t = _table([30] * 100)
    p = ProtocolConfig(max_interactions=None, fractions=(0.85, 0.07, 0.08))
    with pytest.warns(
        SmallPoolWarning,
        match=rf"meta-val holds 7 task\(s\), fewer than {MIN_SELECTION_TASKS}: .* raise protocol.fractions "
        r"\(its validation share, 0.07\)",
    ):
        build_splits(t, p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_splits(t, ProtocolConfig(max_interactions=None, fractions=(0.4, 0.3, 0.3)))


def _predefined(test_rows: dict[str, int]) -> InteractionTable:
    rows = [(f"t{u}", f"i{i}", 3, "train") for u in range(20) for i in range(6)]
    rows += [(u, f"i{i}", 4, "test") for u, n in test_rows.items() for i in range(n)]
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "part"])
    return InteractionTable.from_frame(df, Columns(part="part"))


def test_predefined_advice_fits_the_cause():
    t = _predefined({"single1": 1, "single2": 1, "short": 3, "ok": 8})
    with pytest.warns(UserWarning) as got:
        s = predefined_split(t, n_query=2, min_interactions=4, val_fraction=0)
    msg = str(got[0].message)
    assert "3 of the dataset's 4 cold test units are left out of meta-test" in msg
    assert (
        "1 have fewer than min_interactions=4 held-out rows (set protocol.min_interactions = 2"
        in msg
    )
    assert (
        "2 have a single held-out row and no training row" in msg and "no setting keeps them" in msg
    )
    assert len(s.pools["meta-test"]) == 1
    # once min_interactions = 2, the advice to set it is gone: only the single-row users remain
    with pytest.warns(UserWarning) as got:
        predefined_split(t, n_query=2, min_interactions=2, val_fraction=0)
    msg = str(got[0].message)
    assert (
        "2 of the dataset's 4 cold test units" in msg and "set protocol.min_interactions" not in msg
    )


def test_inspect_train_and_bench_show_the_filters(tmp_path, capsys):
    sc = ROOT / "tasks" / "synthetic-cold-start.toml"
    small = ["--set", "data.synthetic.n_domains=4", "--set", "protocol.max_interactions=25"]
    assert main(["tasks", "inspect", str(sc), *small]) == 0
    out = capsys.readouterr().out
    assert "filters (what no pool holds, and the key that controls it):" in out
    assert (
        "protocol.max_interactions = 25:" in out and "users with more than 25 interactions" in out
    )
    assert main(["tasks", "inspect", str(sc), *small, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    drops = {d["key"]: d for d in report["filters"]["drops"]}
    assert drops["protocol.max_interactions"]["users"] > 0
    train = ["--set", "train.steps=2", "--set", "train.val_every=1", "--set", "train.progress=false",
             "--set", "train.val_tasks=8"]  # fmt: skip
    assert main(["train", str(sc), *small, *train, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.count("metarec: filter: protocol.max_interactions = 25:") == 1
    bench = ["--quick", "--algorithms", "global,maml", "--seeds", "1", "--shots", "3", "--no-plots",
             "--set", "bench.quick_steps=2", "--set", "train.val_every=1", "--set", "train.val_tasks=8"]  # fmt: skip
    assert main(["bench", str(sc), *small, *bench, "--out", str(tmp_path / "bench")]) == 0
    out = capsys.readouterr().out
    assert (
        out.count("metarec: filter: protocol.max_interactions = 25:") == 1
    )  # once per run, not per cell


def test_version_and_the_adapted_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    from metarec import __version__

    assert capsys.readouterr().out.strip() == f"metarec {__version__}"
    sc = ROOT / "tasks" / "synthetic-cold-start.toml"
    run = tmp_path / "run"
    assert main(["train", str(sc), "--set", "algorithm.name=popularity", "--set", "data.synthetic.n_domains=2",
                 "--out", str(run)]) == 0  # fmt: skip
    items = json.loads((run / "encoders.json").read_text())["item_ids"]["values"][:3]
    csv = tmp_path / "s.csv"
    csv.write_text("user,item,rating\n" + "".join(f"new,{i},5\n" for i in items))
    capsys.readouterr()
    assert (
        main(["recommend", "--run", str(run), "--user", "new", "--support", str(csv), "--k", "3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "None step" not in out and "cold user;" in out


@pytest.mark.data
def test_inspect_ml100k_reports_the_users_max_interactions_drops(shared_data, capsys):
    sc = ROOT / "tasks" / "ml100k-raw-features.toml"
    args = ["--data-root", str(shared_data), "--set", "protocol.max_interactions=100"]
    assert main(["tasks", "inspect", str(sc), *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (drop,) = report["filters"]["drops"]
    # ML-100K: 361 of the 943 users rated more than 100 movies; count them from the raw file
    raw = pd.read_csv(shared_data / "movielens-100k" / "ml-100k" / "u.data", sep="\t", header=None)
    per_user = raw[0].value_counts()
    assert (drop["key"], drop["value"]) == ("protocol.max_interactions", 100)
    assert drop["users"] == int((per_user > 100).sum()) == 361
    assert drop["rows"] == int(per_user[per_user > 100].sum())
    assert report["filters"]["users"] == [943 - 361, 943]
    assert main(["tasks", "inspect", str(sc), *args]) == 0
    text = capsys.readouterr().out
    assert f"protocol.max_interactions = 100: {drop['rows']:,} rows, 361 users" in text


@pytest.mark.data
def test_genre_group_domains_report_the_movies_without_a_group(shared_data):
    sc = load_scenario(
        {"data": {"source": "movielens-100k", "path": str(shared_data / "movielens-100k"), "domain_by": "genre_group"}}
    )  # fmt: skip
    t = load_table(sc.data)
    (d,) = t.filtered
    assert (d.key, d.rows, d.items) == ("data.domain_by", 100_000 - len(t), 2) and d.rows > 0
    assert np.unique(t.users).shape[0] == 943 and d.users == 0


def test_cross_domain_support_takes_plain_ids_with_domain(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", str(i), int(rng.integers(1, 6)), d) for d in ("books", "films")
            for u in range(40) for i in rng.choice(30, 12, replace=False)]  # fmt: skip
    pd.DataFrame(rows, columns=["user", "item", "rating", "domain"]).to_csv(
        tmp_path / "r.csv", index=False
    )
    sc = tmp_path / "s.toml"
    sc.write_text(
        f'[data]\nsource = "csv"\npath = "{tmp_path / "r.csv"}"\nnamespace = ["item"]\n'
        '[data.columns]\ndomain = "domain"\n'
        '[protocol]\nn_support = 3\nn_query = 3\nmin_interactions = 6\nmax_interactions = "none"\n'
        '[algorithm]\nname = "popularity"\n'
    )
    run = tmp_path / "run"
    assert main(["train", str(sc), "--out", str(run)]) == 0
    csv = tmp_path / "support.csv"
    csv.write_text("user,item,rating\nnew,7,5\nnew,3,1\n")  # plain ids, as a user writes them
    capsys.readouterr()
    assert (
        main(["recommend", "--run", str(run), "--user", "new", "--support", str(csv), "--json"])
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "item '7' is not in the run's catalogue, whose item ids are namespaced by domain ('books:7', 'films:7')"
        in err
    )
    assert (
        "pass --domain books to read plain ids as 'books''s, or write the namespaced id ('books:7')"
        in err
    )
    argv = [
        "recommend",
        "--run",
        str(run),
        "--user",
        "new",
        "--support",
        str(csv),
        "--domain",
        "films",
        "--json",
    ]
    assert main(argv) == 0
    items = [x["item"] for x in json.loads(capsys.readouterr().out)["items"]]
    assert items and all(i.startswith("films:") for i in items)
    assert "films:7" not in items and "films:3" not in items  # the support was read as films' items
