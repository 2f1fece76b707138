"""The repeated-support warning: the same words on the dict path (a user's few rows, serving)
and the pandas path (many rows)."""

from __future__ import annotations

import warnings

import pytest

from metarec.recommend.support import _FEW_ROWS, parse_support


@pytest.mark.parametrize("n_other", [3, _FEW_ROWS + 10], ids=["few", "many"])
def test_repeats_warn_alike_on_both_paths(n_other: int) -> None:
    rows = [
        ("u", "i1", 4.0),
        ("u", "i1", 2.0),
        ("u", "i1", 5.0),
        ("v", "i2", 3.0),
        ("v", "i2", 1.0),
    ]
    rows += [(f"w{n}", "i3", 3.0) for n in range(n_other)]
    with pytest.warns(
        UserWarning,
        match=r"support: user 'u' rates item 'i1' 3 times \(2 repeated \(user, item\) pair\(s\) in all\)",
    ):
        parse_support(rows, None, None, "explicit", (1.0, 5.0))


@pytest.mark.parametrize("n_other", [3, _FEW_ROWS + 10], ids=["few", "many"])
def test_distinct_rows_do_not_warn(n_other: int) -> None:
    rows = [(f"w{n}", "i3", 3.0) for n in range(n_other)] + [("w0", "i4", 1.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = parse_support(rows, None, None, "explicit", (1.0, 5.0))
    assert len(out.items) == n_other + 1
