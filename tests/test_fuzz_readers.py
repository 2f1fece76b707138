"""Property-based fuzzing of the CSV reader and ``InteractionTable.from_frame``: every input
either loads into a consistent table or raises one of metarec's errors, never anything else.

Inputs are mostly well-formed with hostile values mixed in, so both outcomes are exercised (each
test asserts that it saw both)."""

from __future__ import annotations

import collections
import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from metarec._errors import MetarecError  # noqa: E402
from metarec.data.readers import read_interactions  # noqa: E402
from metarec.data.table import Columns, InteractionTable  # noqa: E402

_N = os.environ.get(
    "METAREC_FUZZ_EXAMPLES"
)  # more (and random) examples: METAREC_FUZZ_EXAMPLES=2000
FUZZ = settings(
    max_examples=int(_N or 150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=not _N,
)

_GOOD = st.sampled_from(["1", "2", "3", "01", "4", "5", "1", "0"])
_BAD = st.sampled_from(
    ["", "-3", "4.5", "1e30", "1.7", "nan", "inf", "é", '"', "'", " ", "1700000000", "2020-01-31",
     "99999999999999999999", "0", "true", "NULL", "7"]
)  # fmt: skip
_TOKEN = st.one_of(_GOOD, _GOOD, _GOOD, _BAD)


def _check_table(t: InteractionTable) -> None:
    n = len(t)
    assert n > 0
    for arr, size in ((t.users, t.n_users), (t.items, t.n_items), (t.domains, t.n_domains)):
        assert arr.shape == (n,) and arr.dtype == np.int64
        assert arr.min() >= 1 and arr.max() < size  # every loaded id is known
    assert np.isfinite(t.ratings).all()
    assert not pd.DataFrame({"u": t.users, "i": t.items, "d": t.domains}).duplicated().any()
    if t.timestamps is not None:
        assert t.timestamps.dtype == np.int64


def _outcome(seen: collections.Counter, load) -> None:
    try:
        t = load()
    except MetarecError:
        seen["refused"] += 1
        return
    _check_table(t)
    seen["loaded"] += 1


def test_csv_reader_loads_or_raises_a_metarec_error() -> None:
    seen: collections.Counter = collections.Counter()

    @FUZZ
    @given(
        extra=st.lists(st.sampled_from(["ts", "ts", "x", "user"]), max_size=2),
        data=st.data(),
        seps=st.sampled_from(
            [(",", None)] * 3
            + [(";", ";"), ("\t", "auto"), ("|", "auto"), (";", None), ("\t", ";")]
        ),
        feedback=st.sampled_from(["explicit", "implicit"]),
        ids=st.sampled_from(["string", "numeric"]),
        timestamp=st.booleans(),
        gzip_it=st.booleans(),
        cut=st.integers(min_value=0, max_value=40),
    )
    def run(extra, data, seps, feedback, ids, timestamp, gzip_it, cut) -> None:
        file_sep, read_sep = seps
        header = ["user", "item", "rating", *extra]
        width = st.one_of(*[st.just(len(header))] * 6, st.integers(min_value=1, max_value=6))
        rows = data.draw(
            st.lists(
                width.flatmap(lambda w: st.lists(_TOKEN, min_size=w, max_size=w)),
                min_size=1,
                max_size=8,
            ),
            label="rows",
        )
        for r in rows:  # mostly a valid rating in the rating field
            if len(r) > 2 and data.draw(st.booleans(), label="valid rating"):
                r[2] = data.draw(st.sampled_from(["1", "0", "5", "3"]), label="rating")
        text = "\n".join([file_sep.join(header)] + [file_sep.join(r) for r in rows]) + "\n"
        raw = gzip.compress(text.encode()) if gzip_it else text.encode()
        if cut and cut < 3:  # sometimes truncate the file
            raw = raw[: max(1, len(raw) - cut * 7)]
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / ("r.csv.gz" if gzip_it else "r.csv")
            path.write_bytes(raw)
            cols = Columns(timestamp="ts" if timestamp and "ts" in extra else None)
            _outcome(
                seen,
                lambda: read_interactions(
                    path, cols, sep=read_sep, feedback=feedback, ids=ids, rating_scale=None
                ),
            )

    run()
    assert seen["loaded"] >= 10 and seen["refused"] >= 10, seen


def test_csv_reader_on_arbitrary_bytes() -> None:
    seen: collections.Counter = collections.Counter()

    @FUZZ
    @given(st.binary(max_size=200))
    def run(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "r.csv"
            path.write_bytes(b"user,item,rating\n" + data)
            _outcome(seen, lambda: read_interactions(path, Columns(), rating_scale=None))

    run()
    assert seen["refused"] >= 10, seen


_VALUE = st.one_of(
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=5),
    st.sampled_from(["1", "2", "x"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.sampled_from([[1], {"a": 1}, b"x", (1, 2)]),
)


def test_from_frame_loads_or_raises_a_metarec_error() -> None:
    seen: collections.Counter = collections.Counter()

    @FUZZ
    @given(
        n=st.integers(min_value=1, max_value=8),
        data=st.data(),
        rating=st.sampled_from(["rating", None]),
        timestamp=st.booleans(),
        domain=st.booleans(),
        feedback=st.sampled_from(["explicit", "implicit"]),
        duplicates=st.sampled_from(["error", "first", "last", "mean"]),
        typed=st.booleans(),
    )
    def run(n, data, rating, timestamp, domain, feedback, duplicates, typed) -> None:
        cols = ["user", "item", "rating", "ts", "dom"]
        clean = {"user": st.integers(1, 50), "item": st.sampled_from(["a", "b", "c", "d", "e", "f"]),
                 "rating": st.sampled_from([0, 1]), "ts": st.integers(0, 2**31),
                 "dom": st.sampled_from(["x", "y"])}  # fmt: skip
        frame = pd.DataFrame({
            c: data.draw(st.lists(st.one_of(clean[c], clean[c], clean[c], _VALUE)
                                  if data.draw(st.integers(0, 3), label=f"{c} hostile") == 0
                                  else clean[c], min_size=n, max_size=n), label=c)
            for c in cols
        })  # fmt: skip
        if typed:  # numeric columns, as pandas infers them
            frame = frame.infer_objects()
        columns = Columns(
            rating=rating, timestamp="ts" if timestamp else None, domain="dom" if domain else None
        )
        _outcome(seen, lambda: InteractionTable.from_frame(frame, columns, feedback=feedback, duplicates=duplicates,
                                                            rating_scale=None))  # fmt: skip

    run()
    assert seen["loaded"] >= 10 and seen["refused"] >= 10, seen
