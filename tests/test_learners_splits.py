"""MAMO's time-based user split of the MeLU states (metarec.episodes.splits.melu_time_split)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec._errors import ConfigError
from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.splits import melu_time_split


def _table() -> InteractionTable:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        start = u * 1000  # user u arrives at time u * 1000
        for j, i in enumerate(rng.choice(40, size=20, replace=False)):
            rows.append((u, int(i), float(rng.integers(1, 6)), start + j))
    f = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    items = pd.DataFrame({"item": range(40), "year": [str(1990 + i % 10) for i in range(40)]})
    return InteractionTable.from_frame(
        f,
        Columns(user="user", item="item", rating="rating", timestamp="ts"),
        item_features=items,
        item_feature_specs=[FeatureSpec("year")],
    )


def test_new_users_arrive_after_existing_ones_and_queries_are_latest() -> None:
    t = _table()
    sp = melu_time_split(t, n_query=3, min_interactions=5, new_item_year=1998)
    first = {u: t.timestamps[t.users == u].min() for u in np.unique(t.users)}
    existing = np.unique(
        np.concatenate([t.users[sp.pools[p].rows] for p in ("meta-train", "meta-val", "warm")])
    )
    new = np.unique(t.users[sp.pools["user-cold"].rows])
    assert len(new) and max(first[u] for u in existing) < min(first[u] for u in new)
    years = np.array([0] + [int(v) for v in t.item_features.vocabs["year"].values])[
        t.item_features.categorical["year"][:, 0]
    ]
    assert (years[t.items[sp.pools["meta-train"].rows]] < 1998).all()
    pool = sp.pools["user-cold"]
    for j in range(len(pool)):
        rows, flag = pool.unit_rows(j), pool.query_flag[pool.offsets[j] : pool.offsets[j + 1]]
        assert t.timestamps[rows[~flag]].max() < t.timestamps[rows[flag]].min()


def test_bad_fraction_is_refused() -> None:
    with pytest.raises(ConfigError, match="existing_user_fraction=1.0"):
        melu_time_split(_table(), existing_user_fraction=1.0)
