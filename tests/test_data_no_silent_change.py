"""No silent data change (issue 22, problem 7): an empty domain file, ids that differ only by
whitespace, special files; each is a clear error or one documented rule for every reader."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec._errors import CheckpointError, ConfigError, DataError
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.data.encoding import IdEncoder, normalize_ids
from metarec.data.files import read_frame, read_json_object
from metarec.data.load import load_table
from metarec.data.sources import SourceFile, read_files
from metarec.data.table import InteractionTable
from metarec.recommend.support import read_support

ROWS = "user,item,rating\n" + "".join(
    f"u{u},i{i},{1 + (u + i) % 5}\n" for u in range(6) for i in range(5)
)


def test_a_header_only_domain_file_is_an_error_naming_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "books.csv").write_text(ROWS)
    (tmp_path / "films.csv").write_text("user,item,rating\n")
    files = [
        SourceFile(tmp_path / "books.csv", "books"),
        SourceFile(tmp_path / "films.csv", "films"),
    ]
    with pytest.raises(
        DataError, match=r"films\.csv: no interaction rows .*\(domain 'films'\).*remove its entry"
    ):
        read_files(files)
    (tmp_path / "s.toml").write_text(
        '[data]\nsource = "csv"\n[[data.files]]\npath = "books.csv"\ndomain = "books"\n'
        '[[data.files]]\npath = "films.csv"\ndomain = "films"\n'
    )
    assert main(["tasks", "inspect", str(tmp_path / "s.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "films.csv" in err[0] and "domain 'films'" in err[0]


def test_ids_follow_one_rule_in_every_reader(tmp_path: Path) -> None:
    """' u3' and 'u3' were two users in training data while the support reader stripped the
    space: now an id's surrounding whitespace is never part of it, in every reader."""
    (tmp_path / "d.csv").write_text("user,item,rating\n u3,i1,4\nu3 ,i2,5\nu4, i1 ,3\n")
    t = read_files([tmp_path / "d.csv"])
    assert t.user_ids.values == ["u3", "u4"] and t.item_ids.values == ["i1", "i2"]
    frame = pd.DataFrame({"user": [" u3", "u3"], "item": ["i1", "i2"], "rating": [4.0, 5.0]})
    assert InteractionTable.from_frame(frame).user_ids.values == ["u3"]
    (tmp_path / "s.csv").write_text("user,item,rating\n u3 ,i1,4\n")
    sup = read_support(tmp_path / "s.csv")
    assert t.user_ids.encode(sup["user"]).tolist() == [1] and t.item_ids.encode(
        [" i2 "]
    ).tolist() == [2]
    # exact otherwise: leading zeros and case still make other ids
    assert IdEncoder.fit(["1", "01", "U1", "u1"]).values == ["01", "1", "U1", "u1"]
    assert normalize_ids(np.array([" a", 3, None], dtype=object)).tolist() == ["a", 3, None]


def test_a_repeated_pair_that_differs_only_by_whitespace_is_a_duplicate(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("user,item,rating\nu3,i1,4\n u3,i1,2\n")
    with pytest.raises(DataError, match="duplicates"):
        read_files([tmp_path / "d.csv"])


def test_an_id_of_only_whitespace_is_missing() -> None:
    frame = pd.DataFrame({"user": ["u1", "  "], "item": ["i1", "i2"], "rating": [4.0, 5.0]})
    with pytest.raises(
        DataError, match=r"user column 'user': 1 id\(s\) that are only whitespace, first at row 1"
    ):
        InteractionTable.from_frame(frame)


def _fifo(tmp_path: Path) -> Path:
    p = tmp_path / "pipe.csv"
    os.mkfifo(p)
    return p


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_special_files_get_their_own_message(tmp_path: Path) -> None:
    """A FIFO or /dev/zero was reported as 'file not found' (or read forever)."""
    fifo = _fifo(tmp_path)
    done = threading.Event()

    def read() -> None:
        with pytest.raises(
            DataError, match=r"pipe\.csv: is a FIFO \(named pipe\), not a regular file"
        ):
            read_frame(fifo)
        done.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert done.is_set(), "reading a FIFO blocked"
    with pytest.raises(DataError, match=r"/dev/zero: is a character device, not a regular file"):
        read_frame("/dev/zero", format="csv")
    with pytest.raises(
        DataError, match=r"is a FIFO \(named pipe\), not a regular file; pass a CSV"
    ):
        read_support(fifo)
    with pytest.raises(CheckpointError, match=r"is a character device, not a regular file"):
        read_json_object("/dev/zero", "manifest", error=CheckpointError)
    with pytest.raises(ConfigError, match=r"scenario file '/dev/zero': is a character device"):
        load_scenario("/dev/zero")


def test_scenario_data_paths_resolve_against_the_scenario_everywhere(
    tmp_path: Path, monkeypatch
) -> None:
    """The same scenario reads the same file from any working folder (the loopback federated
    backend runs its clients in another folder)."""
    (tmp_path / "d.csv").write_text(ROWS)
    (tmp_path / "s.toml").write_text('[data]\nsource = "csv"\npath = "d.csv"\n')
    monkeypatch.chdir("/")
    t = load_table(load_scenario(tmp_path / "s.toml").data)
    assert len(t) == 30
