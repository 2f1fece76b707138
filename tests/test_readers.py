"""Dataset readers: format parsing on small made-up files, and counts on the real data.

The real datasets are licensed and never copied into the project: tests marked ``data`` read
them from ``$METAREC_DATA`` (e.g. ``METAREC_DATA=../shared/datasets``) and skip when it is unset.
Every file written here is invented (ids and values made up), only the layout is real.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec._errors import ConfigError, DataError
from metarec.data.features import FeatureSpec
from metarec.data.readers import (
    read_amazon_pair,
    read_amazon_pair_split,
    read_interactions,
    read_melu_item_features,
    read_movielens_1m,
    read_movielens_100k,
    read_recbole_atomic,
)
from metarec.data.table import Columns, InteractionTable


@pytest.fixture(scope="module")
def data_root() -> Path:
    """``$METAREC_DATA``, or skip with the reason."""
    value = os.environ.get("METAREC_DATA")
    if not value:
        pytest.skip(
            "METAREC_DATA is not set; set it to the shared datasets folder (../shared/datasets) to "
            "run real-data tests"
        )
    root = Path(value)
    if not root.is_dir():
        pytest.skip(
            f"METAREC_DATA={value!r} is not a folder; real-data tests need the shared datasets"
        )
    return root


def _sub(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent from METAREC_DATA")
    return path


def _decode_features(table: InteractionTable, raw_item: object, name: str) -> list[object]:
    ft = table.item_features
    assert ft is not None
    idx = table.item_ids.encode([raw_item])[0]
    return [v for v in ft.vocabs[name].decode(ft.categorical[name][idx]) if v is not None]


# ---------------------------------------------------------------------- made-up files
def _write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)
    return path


@pytest.fixture
def fake_ml100k(tmp_path: Path) -> Path:
    flags = ["0"] * 19
    g1, g2 = flags.copy(), flags.copy()
    g1[1] = g1[5] = "1"  # Action, Comedy
    g2[0] = "1"  # unknown
    _write(
        tmp_path / "ml-100k/u.data",
        "1\t10\t4\t880000000\n2\t10\t2\t880000100\n2\t11\t5\t880000200\n",
    )
    _write(tmp_path / "ml-100k/u.user", "1|17|F|writer|01234\n2|60|M|other|T8H1N\n")
    _write(
        tmp_path / "ml-100k/u.item",
        "10|Caf\xe9 Film (1991)|01-Jan-1991||http://x|" + "|".join(g1) + "\n"
        "11|unknown||||" + "|".join(g2) + "\n",
        encoding="latin-1",
    )
    return tmp_path


@pytest.fixture
def fake_ml1m(tmp_path: Path) -> Path:
    _write(
        tmp_path / "ml-1m/ratings.dat",
        "1::10::5::978300000\n1::20::3::978300001\n2::20::1::978300002\n",
    )
    _write(tmp_path / "ml-1m/users.dat", "1::F::1::10::01234\n2::M::56::0::55455-1234\n")
    _write(
        tmp_path / "ml-1m/movies.dat",
        "10::Caf\xe9: The Movie (1999)::Drama|Sci-Fi\n20::Other (1950)::Comedy\n30::Unrated "
        "(2000)::Drama\n",
        encoding="latin-1",
    )
    _write(
        tmp_path / "melu-extra/movies_extrainfos.dat",
        "10::Café: The Movie::1999::PG-13::1 Jan 1999::Drama, Sci-Fi::Ann Lee, Bo Chan::W::Xu Yi, "
        "Zed Q::plot::http://p\n"
        "30::Unrated::2000::UNRATED::N/A::Drama::N/A::N/A::N/A::N/A::N/A\n",
        newline="\r\n",
    )
    return tmp_path


def test_fake_ml100k_features(fake_ml100k: Path) -> None:
    for root in (fake_ml100k, fake_ml100k / "ml-100k"):
        t = read_movielens_100k(root)
        assert len(t) == 3 and t.timestamps is not None and t.feedback == "explicit"
        assert sorted(_decode_features(t, 10, "genre")) == ["Action", "Comedy"]
        assert _decode_features(t, 10, "year") == [1991]
        assert _decode_features(t, 11, "year") == []  # no release date -> unknown
        uf = t.user_features
        assert uf is not None and uf.vocabs["age"].values == [1, 56]
        assert uf.vocabs["zip"].values == ["01234", "T8H1N"]  # strings, leading zero kept
    t = read_movielens_100k(fake_ml100k, age="numeric", year="numeric")
    with pytest.raises(ConfigError, match="age='buckets'.*did you mean 'bucket'"):
        read_movielens_100k(fake_ml100k, age="buckets")  # type: ignore[arg-type]
    assert t.user_features is not None and t.user_features.numeric_names == ["age"]
    assert t.item_features is not None and t.item_features.numeric_names == ["year"]


def test_fake_ml1m_plain_and_melu(fake_ml1m: Path) -> None:
    plain = read_movielens_1m(fake_ml1m, melu_extra=False)
    assert len(plain) == 3 and set(plain.item_ids.values) == {10, 20, 30}  # unrated 30 kept, cold
    assert _decode_features(plain, 10, "year") == [1999]
    assert sorted(_decode_features(plain, 10, "genre")) == ["Drama", "Sci-Fi"]
    melu = read_movielens_1m(fake_ml1m)  # None: melu-extra/ exists
    assert melu.item_features is not None
    assert set(melu.item_features.vocabs) == {"rate", "genre", "director", "actors", "year"}
    assert sorted(_decode_features(melu, 10, "director")) == ["Ann Lee", "Bo Chan"]
    assert _decode_features(melu, 30, "director") == []  # N/A -> no value
    assert _decode_features(melu, 30, "rate") == ["UNRATED"]
    i20 = melu.item_ids.encode([20])[0]  # rated, no MeLU row: loads with zero features
    assert i20 > 0 and not melu.item_features.present[i20]
    assert all(v[i20].sum() == 0 for v in melu.item_features.categorical.values())
    assert read_movielens_1m(fake_ml1m / "ml-1m", melu_extra=True).item_features is not None
    short = read_movielens_1m(fake_ml1m, zip_prefix=1)
    assert short.user_features is not None and short.user_features.vocabs["zip"].values == [
        "0",
        "5",
    ]


def test_melu_features_frame(fake_ml1m: Path) -> None:
    df = read_melu_item_features(fake_ml1m / "melu-extra/movies_extrainfos.dat")
    assert list(df.columns[:4]) == ["item", "title", "year", "rate"] and len(df.columns) == 11
    assert df["item"].tolist() == [10, 30] and df["year"].tolist() == [1999, 2000]
    assert df.loc[0, "title"] == "Café: The Movie" and df.loc[0, "poster"] == "http://p"  # no \r
    assert df.loc[1, "actors"] is None or pd.isna(df.loc[1, "actors"])


def test_missing_files_say_how_to_get_them(tmp_path: Path, fake_ml1m: Path) -> None:
    with pytest.raises(DataError, match="metarec data fetch movielens-1m --root"):
        read_movielens_1m(tmp_path / "nowhere")
    with pytest.raises(DataError, match="metarec data fetch movielens-100k"):
        read_movielens_100k(tmp_path)
    (fake_ml1m / "melu-extra/movies_extrainfos.dat").unlink()
    with pytest.raises(DataError, match="movies_extrainfos.dat.*MeLU"):
        read_movielens_1m(fake_ml1m, melu_extra=True)
    assert read_movielens_1m(fake_ml1m).item_features.vocabs.keys() == {"genre", "year"}  # type: ignore[union-attr]
    with pytest.raises(DataError, match="cjx96/DisenCDR"):
        read_amazon_pair(tmp_path, "sport_cloth")
    _write(fake_ml1m / "ml-1m/ratings.dat", "1::10::5::978300000\n1::20\n")
    with pytest.raises(DataError, match="ratings.dat: cannot parse"):
        read_movielens_1m(fake_ml1m)
    _write(fake_ml1m / "ml-1m/ratings.dat", "1::10::5::978300000\n")
    _write(fake_ml1m / "ml-1m/users.dat", "1::F::1::10\n")
    with pytest.raises(DataError, match="users.dat, line 1: 4 '::'-separated fields, expected 5"):
        read_movielens_1m(fake_ml1m)


def test_fake_amazon_pair(tmp_path: Path) -> None:
    _write(tmp_path / "a_b/train.txt", "0\t0\t1\n1\t0\t1\n1\t1\t1\n")
    _write(tmp_path / "b_a/train.txt", "0\t0\t1\n1\t2\t1\n")
    _write(tmp_path / "a_b/test.txt", "0\t1\t1\n")
    _write(tmp_path / "b_a/test.txt", "1\t0\t1\n")
    t = read_amazon_pair(tmp_path, "a_b")
    assert len(t) == 5 and t.feedback == "implicit" and np.all(t.ratings == 1)
    assert t.domain_ids.values == ["a", "b"] and t.n_users - 1 == 2
    assert set(t.item_ids.values) == {"a:0", "a:1", "b:0", "b:2"}  # same local id 0, two items
    split = read_amazon_pair_split(tmp_path, "a-b")
    assert split.test.to_dict("list") == {
        "user": [0, 1],
        "item": ["a:1", "b:0"],
        "domain": ["a", "b"],
    }
    assert (split.train.item_ids.encode(split.test["item"]) > 0).all()
    (tmp_path / "b_a/test.txt").unlink()
    with pytest.raises(DataError, match=r"file not found: .*b_a/test.txt.*DisenCDR"):
        read_amazon_pair_split(tmp_path, "a_b")
    with pytest.raises(DataError, match="did you mean 'a_b'"):
        read_amazon_pair(tmp_path, "a_bb")
    with pytest.raises(ConfigError, match="which='tset'.*did you mean 'test'"):
        read_amazon_pair(tmp_path, "a_b", which="tset")  # type: ignore[arg-type]


def test_fake_recbole(tmp_path: Path) -> None:
    _write(
        tmp_path / "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t4\t10\nu2\ti1\t2.5\t11\n",
    )
    _write(
        tmp_path / "toy.item",
        "item_id:token\ttitle:token_seq\tyear:token\tprice:float\temb:float_seq\n"
        'i1\tA "Quoted" B\t1999\t3.5\t1 2\n'
        "i2\tC\t2000\t\t3 4\n",
    )
    t = read_recbole_atomic(tmp_path, "toy")
    assert (
        t.rating_scale == (2.5, 4.0)
        and t.timestamps is not None
        and t.timestamps.tolist() == [10, 11]
    )
    ft = t.item_features
    assert ft is not None and set(ft.vocabs) == {"title", "year"} and ft.numeric_names == ["price"]
    assert set(ft.vocabs["title"].values) == {"A", '"Quoted"', "B", "C"}
    assert t.user_features is None  # no .user file
    only = read_recbole_atomic(tmp_path, "toy", item_features=["year"])
    assert only.item_features is not None and list(only.item_features.vocabs) == ["year"]
    with pytest.raises(DataError, match="did you mean 'year'"):
        read_recbole_atomic(tmp_path, "toy", item_features=["yaer"])
    _write(tmp_path / "imp.inter", "user_id:token\titem_id:token\nu1\ti1\n")
    assert read_recbole_atomic(tmp_path, "imp").feedback == "implicit"
    with pytest.raises(DataError, match="imp2.inter"):
        read_recbole_atomic(tmp_path, "imp2")


# ---------------------------------------------------------------------- generic files
def _toy_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"uid": [1, 1, 2], "iid": ["x", "y", "x"], "stars": [5, 3, 4], "ts": [10, 20, 30]}
    )


@pytest.mark.parametrize("name", ["toy.csv", "toy.tsv", "toy.csv.gz", "toy.parquet"])
def test_read_interactions_formats(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".parquet"):
        pytest.importorskip(
            "pyarrow", reason="Parquet needs the 'parquet' extra: pip install -e .[parquet]"
        )
        _toy_frame().to_parquet(path)
    else:
        _toy_frame().to_csv(path, sep="\t" if ".tsv" in name else ",", index=False)
    t = read_interactions(path, Columns(user="uid", item="iid", rating="stars", timestamp="ts"))
    assert len(t) == 3 and t.ratings.tolist() == [5.0, 3.0, 4.0] and t.timestamps is not None
    assert t.item_ids.values == ["x", "y"]


def test_read_interactions_options_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "toy.csv"
    _toy_frame().to_csv(path, sep=";", index=False)
    feats = pd.DataFrame({"iid": ["x", "y", "z"], "colour": ["red", "blue", "red"]})
    t = read_interactions(
        path, Columns(user="uid", item="iid", rating="stars"), sep=";",
        item_features=feats, item_feature_specs=[FeatureSpec("colour")],
    )  # fmt: skip
    assert t.item_features is not None and t.n_items - 1 == 3  # cold item z kept via features
    with pytest.raises(DataError, match=r"columns.rating='star'.*did you mean 'stars'"):
        read_interactions(path, Columns(user="uid", item="iid", rating="star"), sep=";")
    with pytest.raises(DataError, match=r"toy.xlsx.*unsupported extension.*\.parquet"):
        read_interactions(tmp_path / "toy.xlsx", Columns())
    with pytest.raises(DataError, match="file not found.*missing.csv"):
        read_interactions(tmp_path / "missing.csv", Columns())
    imp = read_interactions(
        path, Columns(user="uid", item="iid", rating=None), sep=";", feedback="implicit"
    )
    assert imp.feedback == "implicit" and np.all(imp.ratings == 1)


# ---------------------------------------------------------------------- real data
@pytest.mark.data
def test_movielens_100k_counts(data_root: Path) -> None:
    t = read_movielens_100k(_sub(data_root, "movielens-100k"))
    assert (len(t), len(np.unique(t.users)), len(np.unique(t.items))) == (100_000, 943, 1_682)
    assert np.bincount(t.ratings.astype(int))[1:].tolist() == [6110, 11370, 27145, 34174, 21201]
    assert np.bincount(t.users).min(initial=99) >= 0 and np.bincount(t.users)[1:].min() >= 20
    assert t.user_features is not None and t.user_features.present[1:].all()
    assert sorted(_decode_features(t, 1, "genre")) == [
        "Animation",
        "Children's",
        "Comedy",
    ]  # Toy Story
    assert _decode_features(t, 1, "year") == [1995]


@pytest.mark.data
def test_movielens_1m_counts_and_melu(data_root: Path) -> None:
    root = _sub(data_root, "movielens-1m")
    t = read_movielens_1m(root, melu_extra=False)
    assert (len(t), len(np.unique(t.users)), len(np.unique(t.items))) == (1_000_209, 6_040, 3_706)
    assert np.bincount(t.users)[1:].min() >= 20 and t.timestamps is not None
    assert sorted(_decode_features(t, 1, "genre")) == ["Animation", "Children's", "Comedy"]
    _sub(root, "melu-extra")
    m = read_movielens_1m(root)  # None -> MeLU features, the folder exists
    ft = m.item_features
    assert ft is not None and len(m) == 1_000_209
    assert set(ft.vocabs) == {"rate", "genre", "director", "actors", "year"}
    assert (
        len(ft.vocabs["rate"]) == 7 and len(ft.vocabs["genre"]) == 25
    )  # 6 ratings, 24 genres (+ unknown)
    assert _decode_features(m, 1, "director") == ["John Lasseter"]
    missing = m.item_ids.encode([860, 1795])
    assert (missing > 0).all() and not ft.present[missing].any()
    assert int(ft.present.sum()) == 3_881
    df = read_melu_item_features(root / "melu-extra/movies_extrainfos.dat")
    assert (
        len(df) == 3_881
        and df["item"].is_unique
        and not df["poster"].dropna().str.endswith("\r").any()
    )


@pytest.mark.data
def test_recbole_atomic_ml100k(data_root: Path) -> None:
    t = read_recbole_atomic(_sub(data_root, "movielens-100k", "recbole-atomic"), "ml-100k")
    assert (len(t), len(np.unique(t.users)), len(np.unique(t.items))) == (100_000, 943, 1_682)
    assert t.rating_scale == (1.0, 5.0) and t.timestamps is not None
    assert t.user_features is not None and set(t.user_features.vocabs) == {
        "age",
        "gender",
        "occupation",
        "zip_code",
    }
    assert t.item_features is not None and "class" in t.item_features.vocabs


@pytest.mark.data
def test_amazon_sport_cloth(data_root: Path) -> None:
    root = _sub(data_root, "amazon-disencdr")
    split = read_amazon_pair_split(root, "sport_cloth")
    t = split.train
    assert len(t) == 92_612 + 87_829 and t.domain_ids.values == ["cloth", "sport"]
    frame = t.to_frame(raw_ids=True)
    assert frame["domain"].value_counts().to_dict() == {"sport": 92_612, "cloth": 87_829}
    assert frame.groupby("domain")["item"].nunique().to_dict() == {"sport": 30_796, "cloth": 39_008}
    assert t.n_users - 1 == 9_928
    assert len(split.test) == 8_326 + 7_540
    assert (t.item_ids.encode(split.test["item"]) > 0).all()  # test items were seen in training
