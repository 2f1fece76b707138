"""Hostile input at the file boundary: each case a clear DataError or correct behaviour."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec._errors import CheckpointError, DataError
from metarec.data.encoding import IdEncoder
from metarec.data.files import check_codes, read_frame, read_json_object, sniff_separator
from metarec.data.readers import read_interactions
from metarec.data.table import Columns, InteractionTable


def _frame(**cols) -> pd.DataFrame:
    base = {"user": [1, 2, 3], "item": [10, 11, 12], "rating": [5, 4, 3]}
    base.update(cols)
    return pd.DataFrame(base)


def test_one_column_in_two_roles_is_refused() -> None:
    with pytest.raises(
        DataError, match=r"columns.item='user': the same column is already columns.user"
    ):
        Columns(user="user", item="user")
    with pytest.raises(DataError, match=r"columns.timestamp='rating'.*already columns.rating"):
        Columns(timestamp="rating")


@pytest.mark.parametrize(
    "bad, rule",
    [
        (1.7, "not a whole number of seconds"),
        (1e30, r"not a time in epoch seconds \(outside years 1..9999\)"),
        (2**62, "not a time in epoch seconds"),
        (float("inf"), "not a whole number"),
    ],
)
def test_bad_timestamps_are_refused_not_truncated(bad: float, rule: str) -> None:
    df = _frame(ts=[1_000_000_000, bad, 1_000_000_100])
    with pytest.raises(DataError, match=rf"timestamp column 'ts': .*at row 1 is ({rule})"):
        InteractionTable.from_frame(df, Columns(timestamp="ts"))


def test_whole_float_and_string_epoch_timestamps_are_accepted() -> None:
    t = InteractionTable.from_frame(
        _frame(ts=[1.7e9, 1.7e9 + 1, 1.7e9 + 2]), Columns(timestamp="ts")
    )
    assert t.timestamps.tolist() == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    t = InteractionTable.from_frame(
        _frame(ts=["1700000000", "1700000001", " 1700000002"]), Columns(timestamp="ts")
    )
    assert t.timestamps.tolist() == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    t = InteractionTable.from_frame(
        _frame(ts=["2020-01-31T12:00:00", "2020-01-31", "1970-01-01T00:00:01Z"]),
        Columns(timestamp="ts"),
    )
    assert t.timestamps.tolist() == [1580472000, 1580428800, 1]
    with pytest.raises(DataError, match=r"cannot parse 'soon' at row 2 as a time"):
        InteractionTable.from_frame(
            _frame(ts=["2020-01-31", "2020-02-01", "soon"]), Columns(timestamp="ts")
        )


def test_epoch_string_in_a_file(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating,ts\n1,2,5,1700000000\n2,2,4,1700000050\n")
    assert read_interactions(p, Columns(timestamp="ts")).timestamps.tolist() == [
        1700000000,
        1700000050,
    ]


def test_ids_above_int64() -> None:
    big = [2**63 + 5, 2**64 + 1, 1]
    t = InteractionTable.from_frame(_frame(user=big))
    assert (
        t.n_users - 1 == 3
        and t.user_ids.encode([2**64 + 1]).tolist()
        == t.user_ids.encode(["18446744073709551617"]).tolist()
    )
    assert t.user_ids.encode([2**64 + 1])[0] > 0
    u = np.array([2**63 + 5, 2**64 - 1, 1], dtype=np.uint64)
    t = InteractionTable.from_frame(_frame(user=u))
    assert sorted(str(v) for v in t.user_ids.values) == sorted(
        ["1", str(2**63 + 5), str(2**64 - 1)]
    )
    assert t.user_ids.encode(u).tolist() == t.users.tolist()


def test_ids_above_int64_in_a_file(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\n99999999999999999999,1,5\n1,1,4\n")
    t = read_interactions(p, Columns())
    assert "99999999999999999999" in t.user_ids
    with pytest.raises(
        DataError,
        match=r"r.csv: user column 'user': id 99999999999999999999 at row 0 is outside the int64 range",
    ):
        read_interactions(p, Columns(), ids="numeric")


def test_one_id_written_two_ways_is_refused() -> None:
    with pytest.raises(
        DataError, match=r"user ids: 1 and '1' are one id written as different types"
    ):
        InteractionTable.from_frame(_frame(user=[1, "1", 2]))
    with pytest.raises(DataError, match=r"user column 'user': value \[1\] at row 1 is a list"):
        InteractionTable.from_frame(_frame(user=[1, [1], 2]))


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    good = gzip.compress(
        b"user,item,rating\n" + b"".join(b"%d,%d,5\n" % (i, i) for i in range(2000))
    )
    p = tmp_path / "r.csv.gz"
    p.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(
        DataError,
        match=r"r.csv.gz: the compressed file is corrupt or truncated.*obtain the file again",
    ):
        read_interactions(p, Columns())
    p.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    with pytest.raises(DataError, match=r"r.csv.gz: .*(corrupt|truncated)"):
        read_interactions(p, Columns())


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    p = tmp_path / "r.parquet"
    _frame().to_parquet(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match=r"r.parquet: not a readable Parquet file.*corrupt or truncated"
    ):
        read_interactions(p, Columns())
    p.write_text("user,item,rating\n1,2,3\n")
    with pytest.raises(
        DataError, match=r"r.parquet: not a readable Parquet file.*data.format = \"csv\""
    ):
        read_interactions(p, Columns())


def test_binary_empty_and_folder_files(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_bytes(b"\xff\xfe\x00\x81" * 50)
    with pytest.raises(DataError, match=r"r.csv: not UTF-8 text.*re-save it as UTF-8"):
        read_interactions(p, Columns())
    p.write_text("")
    with pytest.raises(DataError, match=r"r.csv: the file is empty"):
        read_interactions(p, Columns())
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(DataError, match=r"d.csv: is a folder, not a file"):
        read_interactions(tmp_path / "d.csv", Columns())
    p.write_text('user,item,rating\n1,"2,5\n')
    with pytest.raises(DataError, match=r"r.csv: cannot parse the file"):
        read_frame(p)


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    p = tmp_path / "encoders.json"
    p.write_text("[1, 2, 3]")
    with pytest.raises(
        DataError, match=r"encoders.json: the encoders file holds a JSON list, expected an object"
    ):
        read_json_object(p, "encoders")
    p.write_text('{"user_ids": ')
    with pytest.raises(
        CheckpointError,
        match=r"not valid JSON \(Expecting value at line 1, column 14; truncated\?\); re-train",
    ):
        read_json_object(p, "encoders", error=CheckpointError, fix="re-train")
    p.write_text('{"a": 1}')
    assert read_json_object(p, "encoders") == {"a": 1}


def test_out_of_range_feature_codes() -> None:
    assert check_codes(np.array([[0, 3], [2, 1]]), 4, "item feature 'genre'").shape == (2, 2)
    with pytest.raises(
        DataError, match=r"item feature 'genre': code 9 is outside the vocabulary's range \[0, 3\]"
    ):
        check_codes(np.array([[0, 9]]), 4, "item feature 'genre'")
    with pytest.raises(CheckpointError, match=r"code -1 is outside"):
        check_codes(np.array([-1]), 4, "x", error=CheckpointError)


def test_sniff_separator(tmp_path: Path) -> None:
    p = tmp_path / "r.txt"
    for sep in (",", "\t", ";", "|", "::"):
        p.write_text(f"user{sep}item{sep}rating\n1{sep}2{sep}5\n")
        assert sniff_separator(p) == sep
    p.write_text("justone\nline\n")
    assert sniff_separator(p) is None


def test_encoder_round_trip_keeps_exact_strings() -> None:
    enc = IdEncoder.fit(["1", "01", "001"])
    assert len(enc) == 4 and enc.encode(["01", "1", "0001"]).tolist()[2] == 0
    back = IdEncoder.from_json(enc.to_json())
    assert back.encode(["001", "01", "1"]).tolist() == enc.encode(["001", "01", "1"]).tolist()
