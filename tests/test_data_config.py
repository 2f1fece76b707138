"""The [data] scenario keys of multi-file sources, and metrics.names validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarec._errors import ConfigError, DataError
from metarec.config import load_scenario, scenario_from_dict
from metarec.data.load import load_table


def _sc(data: dict, **sections) -> object:
    return scenario_from_dict({"name": "x", "data": data, **sections})


def test_files_entries_and_their_validation(tmp_path: Path) -> None:
    s = _sc(
        {
            "source": "csv",
            "files": [
                {"path": "a.dat", "domain": "a", "part": "train"},
                {"path": "b.dat", "domain": "b", "part": "test"},
            ],
        }
    )
    assert [(f.path, f.domain, f.part) for f in s.data.files] == [
        ("a.dat", "a", "train"),
        ("b.dat", "b", "test"),
    ]
    with pytest.raises(
        ConfigError,
        match=r"data.files\[0\].part='tset': expected one of 'train', 'valid', 'test' or none "
        r"\(did you mean 'test'\?\)",
    ):
        _sc({"source": "csv", "files": [{"path": "a", "part": "tset"}]})
    with pytest.raises(
        ConfigError, match=r"unknown key 'data.files\[0\].domian' \(did you mean 'domain'\?\)"
    ):
        _sc({"source": "csv", "files": [{"path": "a", "domian": "x"}]})
    with pytest.raises(
        ConfigError, match=r"data.files: both data.path='x.csv' and 1 data.files entries"
    ):
        _sc({"source": "csv", "path": "x.csv", "files": [{"path": "a"}]})
    with pytest.raises(
        ConfigError, match=r"data.files\[1\]: no part, while other entries name one"
    ):
        _sc({"source": "csv", "files": [{"path": "a", "part": "train"}, {"path": "b"}]})
    with pytest.raises(ConfigError, match=r"data.files: data.files is read by source = \"csv\""):
        _sc({"source": "amazon", "files": [{"path": "a"}]})
    with pytest.raises(
        ConfigError,
        match=r"data.namespace=\['itme'\]: 'itme' cannot be namespaced \(did you mean 'item'\?\)",
    ):
        _sc({"namespace": ["itme"]})
    with pytest.raises(
        ConfigError, match=r"data.ids='number': expected one of 'string', 'numeric'"
    ):
        _sc({"ids": "number"})
    with pytest.raises(
        ConfigError, match=r"data.shared_users=10: only read by source = \"shared_below_k\""
    ):
        _sc({"source": "csv", "shared_users": 10})
    with pytest.raises(
        ConfigError, match=r"data.columns.item='uid': column 'uid' is already columns.user"
    ):
        _sc({"columns": {"user": "uid", "item": "uid"}})
    with pytest.raises(
        ConfigError, match=r"data.names=\['user', 'user'\]: column names must be distinct"
    ):
        _sc({"names": ["user", "user"]})


def test_metrics_names_are_validated() -> None:
    assert (
        _sc({}, metrics={"names": ["mae", "hr@5", "ndcg@20", "auc", "mrr", "ndcg"]}).metrics.names[
            1
        ]
        == "hr@5"
    )
    with pytest.raises(
        ConfigError, match=r"metrics.names: unknown metric 'ndgc@10' \(did you mean 'ndcg@10'\?\)"
    ):
        _sc({}, metrics={"names": ["mae", "ndgc@10"]})
    with pytest.raises(ConfigError, match=r"metrics.names: metric 'mae@5': mae takes no cut-off"):
        _sc({}, metrics={"names": ["mae@5"]})
    with pytest.raises(ConfigError, match=r"metric 'hr@0': cut-off '0' is not a positive integer"):
        _sc({}, metrics={"names": ["hr@0"]})


def test_implicit_csv_without_rating_column_and_keys_from_the_cli(tmp_path: Path) -> None:
    p = tmp_path / "clicks.csv"
    p.write_text("uid,iid\n1,10\n01,10\n1,11\n1,11\n")
    toml = tmp_path / "s.toml"
    toml.write_text(f'name = "c"\n[data]\nsource = "csv"\npath = "{p}"\nfeedback = "implicit"\n'
                    '[data.columns]\nuser = "uid"\nitem = "iid"\nrating = "none"\n')  # fmt: skip
    with pytest.raises(DataError, match=r"set data.duplicates = \"first\", \"last\" or \"mean\""):
        load_table(load_scenario(toml).data)
    t = load_table(load_scenario(toml, ["data.duplicates=first"]).data)
    assert (len(t), t.n_users - 1) == (3, 2)  # "1" and "01" are two users
    t = load_table(load_scenario(toml, ["data.duplicates=first", "data.ids=numeric"]).data)
    assert (len(t), t.n_users - 1) == (2, 1)


def test_shared_below_k_scenario(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(
        "".join(f"{u}\t{u}\t1\n" for u in range(5))
    )  # shared 0, 1; local 2, 3, 4
    (tmp_path / "b.txt").write_text(
        "".join(f"{u}\t{u}\t1\n" for u in range(3))
    )  # shared 0, 1; local 2
    data = {"source": "shared_below_k", "header": False, "names": ["user", "item", "rating"], "feedback": "implicit",
            "files": [{"path": str(tmp_path / "a.txt"), "domain": "a"},
                      {"path": str(tmp_path / "b.txt"), "domain": "b"}]}  # fmt: skip
    with pytest.raises(DataError, match="data.shared_users is not set"):
        load_table(_sc(data).data)
    assert load_table(_sc({**data, "shared_users": 2}).data).n_users - 1 == 2 + 3 + 1


@pytest.mark.parametrize("override", [r"data.sep=\t", "data.sep=tab", 'data.sep="\\t"'])
def test_tab_separator_typed_on_the_command_line(tmp_path: Path, override: str) -> None:
    p = tmp_path / "r.dat"
    p.write_text("1\t2\t5\n3\t4\t1\n")
    toml = tmp_path / "s.toml"
    toml.write_text(f'name = "t"\n[data]\nsource = "csv"\npath = "{p}"\nformat = "csv"\nheader = false\n'
                    'names = ["user", "item", "rating"]\n')  # fmt: skip
    with pytest.raises(DataError, match=r"wrong separator\?.*data.sep = \"\\t\""):
        load_table(load_scenario(toml).data)
    assert len(load_table(load_scenario(toml, [override]).data)) == 2
