"""protocol.split = "predefined", protocol.val_fraction, and a scenario of header-less per-domain
files that loads, inspects and benches with no preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec._errors import ConfigError, DataError
from metarec.cli.main import main
from metarec.config import load_scenario, scenario_from_dict
from metarec.data.load import load_table
from metarec.data.synthetic import make_synthetic
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.build import build_splits
from metarec.episodes.leakage import run_leakage_checks
from metarec.episodes.predefined import predefined_split
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import cold_domain_users_split


def _two_domains(
    root: Path, n_users: int = 60, cold: int = 20, per_user: int = 12, seed: int = 0
) -> dict[str, Path]:
    """Header-less ``user<TAB>item<TAB>rating`` files: books (everyone), movies train (warm users)
    and movies test (the dataset's own cold users); item ids 1..40 collide across domains."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)

    def rows(users: np.ndarray, shift: float) -> str:
        out = []
        for u in users:
            for i in rng.choice(40, per_user, replace=False) + 1:
                out.append(f"{u}\t{i}\t{int(np.clip(round(3 + shift + rng.normal()), 1, 5))}")
        return "\n".join(out) + "\n"

    users = np.arange(1, n_users + 1)
    files = {
        "books_train": rows(users, 0.5),
        "movies_train": rows(users[cold:], -0.5),
        "movies_test": rows(users[:cold], -0.5),
    }
    paths = {}
    for name, text in files.items():
        paths[name] = root / f"{name}.dat"
        paths[name].write_text(text)
    return paths


def _scenario_text(paths: dict[str, Path], extra: str = "") -> str:
    entries = "".join(
        f'[[data.files]]\npath = "{p}"\ndomain = "{name.split("_")[0]}"\npart = "{name.split("_")[1]}"\n'
        for name, p in paths.items()
    )
    return f"""name = "two-domains-predefined"
[data]
source = "csv"
format = "csv"
sep = "\\t"
header = false
names = ["user", "item", "rating"]
namespace = ["item"]
{entries}
[protocol]
split = "predefined"
n_support = 3
n_query = 5
min_interactions = 6
max_interactions = "none"
{extra}
[model]
name = "two_tower"
embedding_dim = 8
hidden = [16]
[train]
steps = 4
val_every = 2
val_tasks = 8
[bench]
algorithms = ["global", "maml"]
seeds = 1
shots = [3]
quick_steps = 2
"""


def test_predefined_cross_domain_uses_the_datasets_own_cold_users(tmp_path: Path) -> None:
    paths = _two_domains(tmp_path / "d")
    (tmp_path / "s.toml").write_text(_scenario_text(paths))
    sc = load_scenario(tmp_path / "s.toml")
    table = load_table(sc.data)
    assert (table.n_users - 1, table.n_items - 1, table.n_domains - 1) == (60, 80, 2)
    splits = build_splits(table, sc.protocol)
    test = splits.pools["meta-test"]
    cold_raw = sorted(int(u) for u in table.user_ids.decode(np.unique(table.users[test.rows])))
    assert cold_raw == list(range(1, 21))  # exactly the users of movies_test.dat
    assert set(table.domain_ids.decode(np.unique(table.domains[test.rows]))) == {"movies"}
    assert np.all(table.parts[test.rows] == 2)
    # no valid file: 10% of the warm movies units are meta-val, taken out of meta-train
    assert len(splits.pools["meta-val"]) == 4
    assert not np.isin(splits.pools["meta-val"].rows, splits.pools["meta-train"].rows).any()
    checks, _ = run_leakage_checks(splits, SamplerConfig(n_support=3, n_query=5))
    assert checks and all(v == "passed" for v in checks.values())
    half = build_splits(
        table, sc.protocol.__class__(**{**sc.protocol.__dict__, "val_fraction": 0.5})
    )
    assert len(half.pools["meta-val"]) == 20


def test_scenario_of_headerless_domain_files_inspects_and_benches(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    paths = _two_domains(tmp_path / "d")
    scen = tmp_path / "s.toml"
    scen.write_text(_scenario_text(paths))
    assert main(["tasks", "inspect", str(scen), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["meta-test"]["tasks"] == 20
    assert report["leakage_checks"]["eval_units_not_in_train"] == "passed"
    out = tmp_path / "bench"
    assert main(["bench", str(scen), "--quick", "--algorithms", "maml", "--seeds", "1", "--shots", "3",
                 "--out", str(out), "--no-plots"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["algorithm"] for r in rows} == {"maml"}
    assert all(r["state"] == "meta-test" and r["n_tasks"] == 20 for r in rows)
    assert all(np.isfinite(r["metrics"]["mae"]) for r in rows)


def _single(parts: list[str], users: list[int]) -> InteractionTable:
    rows = [
        (u, i + 8 * k, 1 + (u + i) % 5, p)
        for k, (u, p) in enumerate(zip(users, parts))
        for i in range(8)
    ]
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "part"])
    return InteractionTable.from_frame(df, Columns(part="part"))


def test_predefined_single_domain_and_its_refusals() -> None:
    t = _single(["train"] * 6 + ["valid", "test", "test"], list(range(9)))
    s = predefined_split(t, n_query=3, min_interactions=4)
    assert [len(s.pools[n]) for n in ("meta-train", "meta-val", "meta-test")] == [6, 1, 2]
    assert all(
        v == "passed"
        for v in run_leakage_checks(s, SamplerConfig(n_support=2, n_query=3))[0].values()
    )
    with pytest.raises(ConfigError, match=r"needs the dataset's own split.*part = \"train\""):
        predefined_split(make_synthetic(2, 20, 20, seed=0))
    with pytest.raises(DataError, match=r"no 'test' rows"):
        predefined_split(_single(["train", "valid"], [0, 1]))
    short = _single(["train", "test", "test"], [0, 1, 2])
    short = short.subset(np.arange(len(short) - 1))  # the last test user keeps 7 rows
    with pytest.warns(
        UserWarning,
        match=r"1 of the dataset's 2 cold test units are left out of meta-test: 1 have fewer than "
        r"min_interactions=8 held-out rows \(set protocol.min_interactions = 2",
    ):
        s = predefined_split(short, n_query=3, min_interactions=8, val_fraction=0)
    assert len(s.pools["meta-test"]) == 1


def test_cold_domain_users_val_fraction_is_configurable() -> None:
    t = make_synthetic(2, 200, 60, density=0.2, seed=0)
    small = cold_domain_users_split(t, beta=0.5, val_fraction=0.1, min_interactions=6, n_query=3)
    large = cold_domain_users_split(t, beta=0.5, val_fraction=0.5, min_interactions=6, n_query=3)
    n_cold = len(small.pools["meta-val"]) + len(small.pools["meta-test"])
    assert len(large.pools["meta-val"]) + len(large.pools["meta-test"]) == n_cold
    assert len(small.pools["meta-val"]) == round(0.1 * n_cold) and len(
        large.pools["meta-val"]
    ) == round(0.5 * n_cold)
    sc = scenario_from_dict(
        {
            "name": "x",
            "protocol": {
                "split": "cold_domain_users",
                "val_fraction": 0.5,
                "min_interactions": 6,
                "n_query": 3,
                "beta": 0.5,
            },
        }
    )
    assert len(build_splits(t, sc.protocol).pools["meta-val"]) == len(large.pools["meta-val"])
    with pytest.raises(
        ConfigError, match=r"protocol.val_fraction=1.0: the validation share must lie in \[0, 1\)"
    ):
        scenario_from_dict({"name": "x", "protocol": {"val_fraction": 1.0}})


def test_predefined_warm_units_adapt_from_their_training_rows() -> None:
    """Leave-one-out style: users 1..4 train and hold out their own later rows; user 5 is cold."""
    rows = [(u, i, 1 + (u + i) % 5, "train") for u in range(6) for i in range(6)]
    rows += [(u, 100 + u, 4, "test") for u in (1, 2, 3, 4)]  # one held-out row per warm user
    rows += [(5, 200 + i, 3, "test") for i in range(6)] + [(0, 300, 2, "valid")]
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "part"])
    table = InteractionTable.from_frame(
        df[~((df.user == 5) & (df.part == "train"))], Columns(part="part")
    )
    s = predefined_split(table, n_query=2, min_interactions=4)
    test = s.pools["meta-test"]
    assert len(test) == 5 and len(s.pools["meta-val"]) == 1
    raw = table.user_ids.decode(test.units)
    warm = {int(u) for u in table.user_ids.decode(s.warm_units["meta-test"])}
    assert warm == {1, 2, 3, 4} and {int(u) for u in raw} == {1, 2, 3, 4, 5}
    for j, u in enumerate(raw):
        r = test.unit_rows(j)
        q = test.query_flag[test.offsets[j] : test.offsets[j + 1]]
        if (
            int(u) in warm
        ):  # query: exactly its held-out row; support candidates: its 6 training rows
            assert np.all(table.parts[r[q]] == 2) and q.sum() == 1
            assert np.all(table.parts[r[~q]] == 0) and (~q).sum() == 6
        else:  # the cold user: cut from its own held-out rows
            assert np.all(table.parts[r] == 2) and q.sum() == 2
    checks, details = run_leakage_checks(s, SamplerConfig(n_support=3, n_query=None))
    assert all(v == "passed" for v in checks.values()), details
    assert "5 warm units" in details["eval_rows_not_in_train"]  # 4 test users and valid user 0
    assert table.user_ids.decode(s.warm_units["meta-val"]) == [0]
    # a query row of a warm unit found in meta-train is still caught
    train = s.pools["meta-train"]
    j = int(np.nonzero(np.isin(test.units, s.warm_units["meta-test"]))[0][0])
    q_row = test.unit_rows(j)[test.query_flag[test.offsets[j] : test.offsets[j + 1]]]
    leaky = type(train)(
        train.name, train.unit, train.units, train.offsets.copy(), train.rows.copy()
    )
    leaky.rows[0] = q_row[0]
    s.pools["meta-train"] = leaky
    assert (
        run_leakage_checks(s, SamplerConfig(n_support=3, n_query=None))[0]["eval_rows_not_in_train"]
        == "failed"
    )


def test_predefined_warm_split_without_valid_part_validates_on_held_back_training_rows() -> None:
    rows = [(u, i, 1 + (u + i) % 5, "train") for u in range(20) for i in range(8)]
    rows += [(u, 100 + u, 3, "test") for u in range(20)]
    table = InteractionTable.from_frame(
        pd.DataFrame(rows, columns=["user", "item", "rating", "part"]), Columns(part="part")
    )
    s = predefined_split(table, n_query=3, val_fraction=0.25)
    val, train = s.pools["meta-val"], s.pools["meta-train"]
    assert len(val) == 5 and np.array_equal(np.sort(s.warm_units["meta-val"]), np.sort(val.units))
    assert val.query_flag.sum() == 5 * 3 and np.all(table.parts[val.rows] == 0)
    assert not np.isin(
        val.rows[val.query_flag], train.rows
    ).any()  # held-back queries left meta-train
    assert np.isin(val.rows[~val.query_flag], train.rows).all()  # their support still trains
    assert all(
        v == "passed"
        for v in run_leakage_checks(s, SamplerConfig(n_support=2, n_query=None))[0].values()
    )
