"""The data layer: validation at the boundary (each bad input and its message), encoding, synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec._errors import DataError
from metarec.data.encoding import IdEncoder
from metarec.data.features import FeatureSpec
from metarec.data.synthetic import make_synthetic
from metarec.data.table import Columns, InteractionTable


def frame(**over) -> pd.DataFrame:
    d = {"user": [1, 1, 2, 2, 3], "item": [10, 11, 10, 12, 11], "rating": [5.0, 3.0, 4.0, 1.0, 2.0]}
    d.update(over)
    return pd.DataFrame(d)


# ---------------------------------------------------------------- bad input, one test per kind
def test_misnamed_column_suggests_close_match():
    with pytest.raises(DataError, match=r"columns.user='usr'.*did you mean 'user'"):
        InteractionTable.from_frame(frame(), Columns(user="usr"))


def test_nan_rating():
    with pytest.raises(DataError, match=r"1 NaN rating\(s\), first at row 2.*drop or impute"):
        InteractionTable.from_frame(frame(rating=[5.0, 3.0, np.nan, 1.0, 2.0]))


def test_inf_rating():
    with pytest.raises(DataError, match=r"infinite rating inf at row 0.*must be finite"):
        InteractionTable.from_frame(frame(rating=[np.inf, 3.0, 4.0, 1.0, 2.0]))


def test_rating_outside_scale():
    with pytest.raises(
        DataError,
        match=r"rating 7.0 at row 1 is outside rating_scale=\(1, 5\).*set data.rating_scale",
    ):
        InteractionTable.from_frame(frame(rating=[5.0, 7.0, 4.0, 1.0, 2.0]))


def test_non_numeric_rating():
    with pytest.raises(DataError, match=r"non-numeric value 'five' at row 0"):
        InteractionTable.from_frame(frame(rating=["five", 3, 4, 1, 2]))


def test_duplicate_rows_error_and_policies():
    f = frame(user=[1, 1, 2, 2, 1], item=[10, 11, 10, 12, 10], rating=[5.0, 3.0, 4.0, 1.0, 1.0])
    with pytest.raises(
        DataError,
        match=r"duplicates='error': 1 repeated \(user, item, domain\) row\(s\), first user 1, item 10"
        r".*data.duplicates = \"first\"",
    ):
        InteractionTable.from_frame(f)
    assert InteractionTable.from_frame(f, duplicates="first").ratings.tolist() == [
        5.0,
        3.0,
        4.0,
        1.0,
    ]
    assert InteractionTable.from_frame(f, duplicates="last").ratings.tolist() == [
        3.0,
        4.0,
        1.0,
        1.0,
    ]
    assert sorted(InteractionTable.from_frame(f, duplicates="mean").ratings.tolist()) == [
        1.0,
        3.0,
        3.0,
        4.0,
    ]


def test_bad_duplicate_policy():
    with pytest.raises(DataError, match=r"duplicates='frist'.*did you mean 'first'"):
        InteractionTable.from_frame(frame(), duplicates="frist")  # type: ignore[arg-type]


def test_empty_declared_domain():
    f = frame(domain=["a", "a", "b", "b", "a"])
    with pytest.raises(DataError, match=r"domain 'c' has no interactions.*remove it from domains="):
        InteractionTable.from_frame(f, Columns(domain="domain"), domains=["a", "b", "c"])


def test_empty_categorical_domain():
    f = frame(domain=pd.Categorical(["a", "a", "b", "b", "a"], categories=["a", "b", "z"]))
    with pytest.raises(
        DataError, match=r"category 'z' has no interactions.*remove_unused_categories"
    ):
        InteractionTable.from_frame(f, Columns(domain="domain"))


def test_unparsable_timestamp():
    f = frame(ts=["2020-01-01", "2020-01-02", "yesterday", "2020-01-04", "2020-01-05"])
    with pytest.raises(
        DataError, match=r"timestamp column 'ts': cannot parse 'yesterday' at row 2.*ISO 8601"
    ):
        InteractionTable.from_frame(f, Columns(timestamp="ts"))


def test_timestamps_parsed_to_seconds():
    f = frame(
        ts=["2020-01-01T00:00:00", "2020-01-01T00:00:01", "2020-01-02", "2020-01-04", "2020-01-05"]
    )
    t = InteractionTable.from_frame(f, Columns(timestamp="ts"))
    assert t.timestamps[1] - t.timestamps[0] == 1
    assert t.timestamps[0] == 1577836800


def test_feature_column_mixed_types():
    items = pd.DataFrame({"item": [10, 11, 12], "brand": ["acme", 7, "zeta"]})
    with pytest.raises(
        DataError, match=r"item_features\['brand'\]: column mixes numbers \(7\) and strings"
    ):
        InteractionTable.from_frame(
            frame(), item_features=items, item_feature_specs=[FeatureSpec("brand")]
        )


def test_feature_table_duplicated_ids():
    items = pd.DataFrame({"item": [10, 10, 12], "brand": ["a", "b", "c"]})
    with pytest.raises(
        DataError,
        match=r"item_features: 1 duplicated id\(s\) in column 'item', first 10.*drop_duplicates",
    ):
        InteractionTable.from_frame(
            frame(), item_features=items, item_feature_specs=[FeatureSpec("brand")]
        )


def test_feature_table_misnamed_column():
    items = pd.DataFrame({"item": [10, 11, 12], "genres": ["a", "b", "c"]})
    with pytest.raises(DataError, match=r"column 'genre' not found.*did you mean 'genres'"):
        InteractionTable.from_frame(
            frame(), item_features=items, item_feature_specs=[FeatureSpec("genre", "multi")]
        )


def test_missing_user_id():
    with pytest.raises(DataError, match=r"user column 'user': 1 missing id\(s\)"):
        InteractionTable.from_frame(frame(user=[1, None, 2, 2, 3]))


def test_empty_frame():
    with pytest.raises(DataError, match=r"no interactions \(0 rows\)"):
        InteractionTable.from_frame(frame().iloc[:0])


def test_implicit_needs_binary():
    with pytest.raises(DataError, match=r"implicit feedback needs 0/1 values, got 5.0.*binarise"):
        InteractionTable.from_frame(frame(), feedback="implicit")


def test_bad_feedback_and_scale_and_feature_kind():
    with pytest.raises(DataError, match=r"feedback='explict'.*did you mean 'explicit'"):
        InteractionTable.from_frame(frame(), feedback="explict")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"rating_scale=\(5, 1\): needs finite lo < hi"):
        InteractionTable.from_frame(frame(), rating_scale=(5, 1))
    with pytest.raises(DataError, match=r"kind must be one of.*did you mean 'numeric'"):
        FeatureSpec("x", "numerc")  # type: ignore[arg-type]


def test_numeric_feature_non_numeric_value():
    users = pd.DataFrame({"user": [1, 2, 3], "age": [20, "old", 30]})
    with pytest.raises(DataError, match=r"numeric feature has non-numeric value 'old'"):
        InteractionTable.from_frame(
            frame(), user_features=users, user_feature_specs=[FeatureSpec("age", "numeric")]
        )


# ---------------------------------------------------------------- encoding and features
def test_encoder_stable_unknown_and_json_roundtrip():
    enc = IdEncoder.fit([30, 10, 20, 10])
    assert enc.encode(np.array([10, 20, 30, 99])).tolist() == [1, 2, 3, 0]
    assert enc.encode([10, "20", 30.0]).tolist() == [1, 2, 3]
    back = IdEncoder.from_json(enc.to_json())
    assert back.encode([30, 10]).tolist() == [3, 1]
    assert enc.decode([0, 2]) == [None, 20]


def test_cold_items_keep_features_and_cold_users_encode_to_unknown():
    items = pd.DataFrame({"item": [10, 11, 12, 99], "genre": ["a|b", "b", "c", "a|c"]})
    t = InteractionTable.from_frame(
        frame(), item_features=items, item_feature_specs=[FeatureSpec("genre", "multi")]
    )
    cold = t.item_ids.encode([99])[0]
    assert cold > 0  # an item never interacted with still has an index ...
    row = t.item_features.categorical["genre"][cold]
    assert (row > 0).sum() == 2  # ... and its two genres
    assert t.user_ids.encode(["never-seen"]).tolist() == [0]


# ---------------------------------------------------------------- synthetic generator
def test_synthetic_deterministic_and_sized():
    a = make_synthetic(n_domains=3, n_users=20, n_items=40, seed=1)
    b = make_synthetic(n_domains=3, n_users=20, n_items=40, seed=1)
    c = make_synthetic(n_domains=3, n_users=20, n_items=40, seed=2)
    assert np.array_equal(a.ratings, b.ratings) and np.array_equal(a.items, b.items)
    assert not np.array_equal(a.ratings[:50], c.ratings[:50])
    assert a.n_domains - 1 == 3 and a.n_users - 1 == 60
    assert np.bincount(a.users)[1:].min() >= 15
    assert a.ratings.min() >= 1 and a.ratings.max() <= 5


def test_synthetic_truth_explains_ratings():
    t, truth = make_synthetic(
        n_domains=2, n_users=30, n_items=50, noise=0.1, seed=0, return_truth=True
    )
    df = t.to_frame(raw_ids=True)
    exp = np.array([truth.expected_rating(u, i) for u, i in zip(df["user"], df["item"])])
    resid = df["rating"].to_numpy() - exp
    assert np.abs(resid).mean() < 0.15  # ratings = truth + N(0, 0.1) (clipped)
    assert df["rating"].std() > 0.5  # and the truth is not constant


def test_synthetic_implicit_prefers_high_scores():
    t, truth = make_synthetic(
        n_domains=2, n_users=40, n_items=60, feedback="implicit", seed=0, return_truth=True
    )
    df = t.to_frame(raw_ids=True)
    chosen = np.mean([truth.score(u, i) for u, i in zip(df["user"], df["item"])])
    rng = np.random.default_rng(0)
    rand = np.mean([truth.score(u, int(rng.integers(0, 60)) + 60 * (u // 40)) for u in df["user"]])
    assert chosen > rand + 0.3
    assert set(np.unique(t.ratings)) == {1.0}


def test_synthetic_bad_argument():
    with pytest.raises(DataError, match=r"density=0: must be in \(0, 1\]"):
        make_synthetic(density=0)


def test_feature_ids_of_another_type_than_interaction_ids():
    items = pd.DataFrame({"item": ["10", "11", "12"], "brand": ["a", "b", "c"]})
    with pytest.raises(
        DataError,
        match=r"item_features\['item'\]: ids are strings but the interactions' item ids are numbers",
    ):
        InteractionTable.from_frame(
            frame(), item_features=items, item_feature_specs=[FeatureSpec("brand")]
        )


def test_small_id_lookup_matches_the_vectorised_encoder():
    """A handful of ids is encoded by dict lookup; the result equals the pandas-index path."""
    from metarec.data.encoding import _FEW

    def vectorised(enc: IdEncoder, raw: np.ndarray) -> np.ndarray:
        padded = np.concatenate(
            [raw, np.array(["pad"] * (_FEW + 1), dtype=object)]
        )  # longer than _FEW
        return enc.encode(padded)[: len(raw)]

    ints = IdEncoder([10, 20, 30, 40], name="item")
    raw = np.array([10, "20", 30.0, np.int64(40), "nope", None], dtype=object)
    np.testing.assert_array_equal(ints.encode(raw), vectorised(ints, raw))
    np.testing.assert_array_equal(ints.encode(raw), [1, 2, 3, 4, 0, 0])
    mixed = IdEncoder(["a", 3, "7"], name="x")
    probe = np.array(["a", 3, "3", 7, 7.0, "b"], dtype=object)
    np.testing.assert_array_equal(mixed.encode(probe), vectorised(mixed, probe))
    assert ints.encode([]).shape == (0,)


@pytest.mark.parametrize(
    "raw", [["u1"] * 5, [7, 7, 7], [7.0], ["7", "7"], ["u1", "u2", "u1"], [7, "7"], [None, "a"]]
)
def test_fit_of_a_handful_of_ids_matches_the_general_path(raw):
    """One id repeated (one cold user's support) skips the pandas pass; the encoder is the same."""
    try:
        general = IdEncoder.fit(
            np.asarray(raw + ["pad"] * 70, dtype=object)[: len(raw)], name="user"
        )
    except ValueError as e:
        with pytest.raises(ValueError, match=str(e).split(":")[0]):
            IdEncoder.fit(raw, name="user")
        return
    fast = IdEncoder.fit(raw, name="user")
    assert [str(v) for v in fast.values] == [str(v) for v in general.values]
    np.testing.assert_array_equal(fast.encode(raw), general.encode(raw))
