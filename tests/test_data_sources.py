"""Multi-file sources, exact ids, namespaces, implicit files and the cross-domain id layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec._errors import DataError
from metarec.data.readers import read_amazon_pair, read_interactions
from metarec.data.sources import SourceFile, read_files, read_shared_below_k
from metarec.data.table import Columns

NAMES = ["user", "item", "rating"]


def _write(path: Path, rows: list[tuple], sep: str = "\t", header: str | None = None) -> Path:
    lines = ([header] if header else []) + [sep.join(str(x) for x in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_headerless_domain_files_with_namespaced_items(tmp_path: Path) -> None:
    a = _write(tmp_path / "books.dat", [(1, 7, 5), (2, 7, 3), (2, 8, 4)])
    b = _write(tmp_path / "movies.dat", [(1, 7, 2), (3, 9, 1)])
    files = [SourceFile(a, domain="books"), SourceFile(b, domain="movies")]
    t = read_files(files, format="csv", sep="\t", header=False, names=NAMES, namespace=("item",))
    assert (len(t), t.n_users - 1, t.n_items - 1, t.n_domains - 1) == (5, 3, 4, 2)
    assert sorted(t.item_ids.values) == ["books:7", "books:8", "movies:7", "movies:9"]
    frame = t.to_frame(raw_ids=True)
    assert set(frame.loc[frame["domain"] == "movies", "item"]) == {"movies:7", "movies:9"}
    # without the namespace item 7 is one item rated in both domains
    t2 = read_files(files, format="csv", sep="\t", header=False, names=NAMES)
    assert t2.n_items - 1 == 3
    with pytest.raises(DataError, match=r"unsupported extension '\.dat'.*data\.format = \"csv\""):
        read_files(files, header=False, names=NAMES)


def test_parts_recorded_and_mixed_entries_refused(tmp_path: Path) -> None:
    tr = _write(tmp_path / "train.tsv", [(1, 1, 5), (2, 2, 4)], header="user\titem\trating")
    te = _write(tmp_path / "test.tsv", [(3, 1, 2)], header="user\titem\trating")
    t = read_files([{"path": tr, "part": "train"}, {"path": te, "part": "test"}])
    assert t.parts.tolist() == [0, 0, 2]
    assert t.summary()["parts"] == {"train": 2, "valid": 0, "test": 1}
    with pytest.raises(DataError, match=r"files\[1\].*no part, while other files name one"):
        read_files([{"path": tr, "part": "train"}, {"path": te}])
    with pytest.raises(DataError, match=r"part='tset'.*did you mean 'test'"):
        read_files([{"path": tr, "part": "tset"}])
    # the same interaction in train and test is refused whatever the duplicates policy
    _write(te, [(1, 1, 2)], header="user\titem\trating")
    with pytest.raises(DataError, match="is in two parts of the dataset's split"):
        read_files([{"path": tr, "part": "train"}, {"path": te, "part": "test"}], duplicates="last")


def test_ids_keep_their_exact_string_form_unless_numeric(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "r.csv",
        [("1", "a", 5), ("01", "a", 4), ("001", "a", 3)],
        sep=",",
        header="user,item,rating",
    )
    t = read_interactions(p, Columns())
    assert t.n_users - 1 == 3 and sorted(t.user_ids.values) == ["001", "01", "1"]
    with pytest.raises(
        DataError,
        match=r"item column 'item': id 'a' at row 0 is not an integer.*data.ids = \"string\"",
    ):
        read_interactions(p, Columns(), ids="numeric")
    q = _write(
        tmp_path / "n.csv",
        [("1", 5, 5), ("01", 6, 4), ("001", 7, 3)],
        sep=",",
        header="user,item,rating",
    )
    tn = read_interactions(q, Columns(), ids="numeric")
    assert tn.n_users - 1 == 1 and tn.user_ids.values == [1]


def test_implicit_file_without_rating_column(tmp_path: Path) -> None:
    p = _write(tmp_path / "clicks.csv", [(1, 10), (1, 11), (2, 10)], sep=",", header="user,item")
    t = read_interactions(p, Columns(), feedback="implicit")
    assert t.ratings.tolist() == [1.0, 1.0, 1.0] and t.feedback == "implicit"
    t2 = read_interactions(p, Columns(rating=None), feedback="implicit")
    assert len(t2) == 3
    with pytest.raises(DataError, match="columns.rating='rating': column not found"):
        read_interactions(p, Columns())  # explicit feedback needs the ratings


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_wrong_separator_hint(tmp_path: Path, sep: str) -> None:
    p = _write(tmp_path / "r.csv", [(1, 2, 5), (3, 4, 1)], sep=sep, header=sep.join(NAMES))
    with pytest.raises(DataError, match=r"wrong separator\?.*splits? .*data\.sep = "):
        read_interactions(p, Columns())
    assert len(read_interactions(p, Columns(), sep=sep)) == 2
    assert len(read_interactions(p, Columns(), sep="auto")) == 2


def test_headerless_and_header_hints(tmp_path: Path) -> None:
    p = _write(tmp_path / "r.tsv", [(1, 2, 5), (3, 4, 1)])
    with pytest.raises(DataError, match=r"looks like data, not a header; set data.header = false"):
        read_interactions(p, Columns())
    with pytest.raises(DataError, match=r"columns are numbered; name them with data.names"):
        read_interactions(p, Columns(), header=False)
    t = read_interactions(p, Columns(), header=False, names=NAMES)
    assert t.user_ids.values == ["1", "3"]
    d = _write(tmp_path / "ml.dat", [(1, 2, 5, 978300760)], sep="::")
    t = read_interactions(
        d, Columns(timestamp="ts"), format="csv", sep="::", header=False, names=[*NAMES, "ts"]
    )
    assert t.timestamps.tolist() == [978300760]


# ---------------------------------------------------------------------- cross-domain id layouts
def _shared_below_k(root: Path) -> tuple[list[SourceFile], int]:
    """K = 3 shared users (0, 1, 2); books has local users 3, 4, 5; movies local users 3, 4."""
    rows_a = [(u, i, 1) for u in (0, 1, 2, 3, 4, 5) for i in (u, u + 10)]
    rows_b = [(u, i, 1) for u in (0, 1, 2, 3, 4) for i in (u + 1, u + 20)]
    a, b = root / "books_movies", root / "movies_books"
    a.mkdir(), b.mkdir()
    _write(a / "train.txt", rows_a)
    _write(b / "train.txt", rows_b)
    return [
        SourceFile(a / "train.txt", domain="books"),
        SourceFile(b / "train.txt", domain="movies"),
    ], 3


def _every_user_shared(root: Path) -> list[SourceFile]:
    """DisenCDR's layout: users 0..3 in both domains."""
    a, b = root / "books_movies", root / "movies_books"
    a.mkdir(), b.mkdir()
    _write(a / "train.txt", [(u, i, 1) for u in range(4) for i in (u, u + 5)])
    _write(b / "train.txt", [(u, i, 1) for u in range(4) for i in (u + 2,)])
    return [
        SourceFile(a / "train.txt", domain="books"),
        SourceFile(b / "train.txt", domain="movies"),
    ]


def test_shared_below_k_user_counts(tmp_path: Path) -> None:
    files, k = _shared_below_k(tmp_path)
    t = read_shared_below_k(files, k, names=NAMES, header=False)
    assert t.n_users - 1 == 3 + 3 + 2  # shared + books-local + movies-local
    users = t.to_frame(raw_ids=True)
    both = users.groupby("user")["domain"].nunique()
    assert sorted(both[both == 2].index) == ["0", "1", "2"]
    assert {"books:3", "books:5", "movies:3", "movies:4"} <= set(users["user"])
    assert t.n_items - 1 == 12 + 10  # items namespaced per domain
    with pytest.raises(DataError, match=r"data.shared_users is not set.*not guessed"):
        read_shared_below_k(files, None, names=NAMES, header=False)
    with pytest.raises(
        DataError,
        match=r"shared_users=6: 1 of the 6 ids below 6 are not in every domain.*K is too large",
    ):
        read_shared_below_k(files, 6, names=NAMES, header=False)


def test_amazon_reader_refuses_the_shared_below_k_layout(tmp_path: Path) -> None:
    _shared_below_k(tmp_path)
    with pytest.raises(
        DataError,
        match=r"hold different users \(6 in books, 5 in movies.*source = \"shared_below_k\"",
    ):
        read_amazon_pair(tmp_path, "books_movies")


def test_every_user_shared_layout_reads_with_both_readers(tmp_path: Path) -> None:
    files = _every_user_shared(tmp_path)
    t = read_amazon_pair(tmp_path, "books_movies")
    assert t.n_users - 1 == 4
    t2 = read_shared_below_k(files, 4, names=NAMES, header=False)
    assert t2.n_users - 1 == 4 and len(t2) == len(t)


def test_multi_file_frame_matches_from_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "user": rng.integers(0, 30, 200),
            "item": rng.integers(0, 40, 200),
            "rating": rng.integers(1, 6, 200),
        }
    )
    df = df.drop_duplicates(["user", "item"]).reset_index(drop=True)
    half = len(df) // 2
    df.iloc[:half].to_csv(tmp_path / "a.csv", index=False)
    df.iloc[half:].to_csv(tmp_path / "b.csv", index=False)
    t = read_files([tmp_path / "a.csv", tmp_path / "b.csv"], ids="numeric")
    ref = type(t).from_frame(df)
    assert t.user_ids.values == ref.user_ids.values
    np.testing.assert_array_equal(t.users, ref.users)
    np.testing.assert_array_equal(t.ratings, ref.ratings)


def test_names_must_match_the_column_count(tmp_path: Path) -> None:
    p = _write(tmp_path / "four.tsv", [(1, 2, 5, 99), (3, 4, 1, 98)])
    with pytest.raises(
        DataError,
        match=r"four.tsv: the file has 4 columns but names lists 3.*a name for a timestamp column",
    ):
        read_interactions(p, Columns(), header=False, names=NAMES)
    t = read_interactions(p, Columns(timestamp="ts"), header=False, names=[*NAMES, "ts"])
    assert t.users.shape == (2,) and t.timestamps.tolist() == [99, 98]
    h = _write(tmp_path / "h.tsv", [(1, 2, 5)], header="a\tb\tc")
    assert read_interactions(h, Columns(), names=NAMES).user_ids.values == [
        "1"
    ]  # names replace a header
