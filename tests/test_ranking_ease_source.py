"""``ease-source``: a cold user's source-domain history moves their target ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import ConfigError
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.splits import cold_domain_users_split
from metarec.methods import FitData, build_fitted
from metarec.methods.ranking import make_ease, make_ease_source


def _two_groups(seed: int = 0, n_users: int = 200) -> InteractionTable:
    """Group g likes source items g*10..g*10+9 and target items g*10..g*10+9; everyone also
    interacts with target item 'both' (no taste signal in it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        g = u % 2
        for i in rng.choice(np.arange(10) + 10 * g, size=6, replace=False):
            rows.append((f"u{u}", f"s{i}", "source"))
        for i in rng.choice(np.arange(10) + 10 * g, size=5, replace=False):
            rows.append((f"u{u}", f"t{i}", "target"))
        rows.append((f"u{u}", "both", "target"))
    df = pd.DataFrame(rows, columns=["user", "item", "domain"])
    return InteractionTable.from_frame(
        df, Columns(user="user", item="item", rating=None, domain="domain"), feedback="implicit"
    )


def _cold_pair(table: InteractionTable, splits) -> EpisodeSet:
    """Two cold users of opposite groups, each with the single target shot 'both'."""
    cold = np.unique(table.users[splits.pools["meta-test"].rows])
    names = table.user_ids.decode(cold)
    a = next(u for u, n in zip(cold, names, strict=True) if int(str(n)[1:]) % 2 == 0)
    b = next(u for u, n in zip(cold, names, strict=True) if int(str(n)[1:]) % 2 == 1)
    both = int(table.item_ids.encode(["both"])[0])
    users = torch.tensor([[a], [b]])
    items = torch.full((2, 1), both)
    return EpisodeSet(users, items, torch.ones(2, 1), torch.ones(2, 1, dtype=torch.bool))


def _top10(fitted, sup: EpisodeSet, table: InteractionTable) -> list[set[int]]:
    targets = np.flatnonzero(
        np.isin(
            np.arange(table.n_items),
            table.items[table.domains == table.domain_ids.encode(["target"])[0]],
        )
    )
    scores = fitted.adapt(sup).score_catalogue(torch.from_numpy(targets))
    scores[:, targets == int(sup.items[0, 0])] = -float("inf")
    top = torch.topk(scores, 10, dim=1).indices
    return [set(targets[t.numpy()].tolist()) for t in top]


def test_source_history_moves_the_target_ranking():
    table = _two_groups()
    splits = cold_domain_users_split(
        table, target_domain="target", beta=0.3, n_query=3, min_interactions=3, seed=0
    )
    sup = _cold_pair(table, splits)
    data = FitData(table, splits, seed=0)
    with_history = make_ease_source(None, lambdas=[10.0]).fit(data)
    a, b = _top10(with_history, sup, table)
    assert len(a & b) <= 3  # opposite histories, the same shot: opposite lists
    plain = make_ease(None, lambdas=[10.0]).fit(data)
    a0, b0 = _top10(plain, sup, table)
    assert a0 == b0  # without the history the two users look alike
    shell = build_fitted("ease-source", with_history.config(), table)
    shell.load_state_dict(with_history.state_dict())
    assert _top10(shell, sup, table) == [a, b]


def test_ease_source_needs_two_domains():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        [(f"u{u}", f"i{i}") for u in range(40) for i in rng.choice(20, size=6, replace=False)],
        columns=["user", "item"],
    )
    table = InteractionTable.from_frame(
        df, Columns(user="user", item="item", rating=None), feedback="implicit"
    )
    from metarec.episodes.splits import random_split

    splits = random_split(table, "user", (0.5, 0.25, 0.25), n_query=1, min_interactions=2, seed=0)
    with pytest.raises(ConfigError, match="ease-source: the table has one domain"):
        make_ease_source(None).fit(FitData(table, splits))
