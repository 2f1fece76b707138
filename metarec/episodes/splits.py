"""Meta-splits: disjoint meta-train / meta-val / meta-test task pools, and the MeLU states.

Every protocol returns a :class:`MetaSplits`: named :class:`TaskPool`\\ s, the names of the
training and validation pools and the test pools (``states``), plus what the leakage checks
need to know (which pools must have units disjoint from meta-train, which items are cold).
Evaluation pools have their query sets pinned once (:func:`pin_queries`), so every method, seed
and number of shots is scored on the same query interactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metarec._errors import ConfigError, DataError, suggest
from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool, build_pool, unit_keys
from metarec.episodes.sampler import pin_queries

__all__ = [
    "MetaSplits",
    "random_split",
    "time_split",
    "melu_split",
    "melu_time_split",
    "cold_domain_users_split",
]


@dataclass
class MetaSplits:
    """Named task pools of one protocol.

    Attributes:
        table: the interaction table the pools index.
        pools: ``{name: TaskPool}``; ``train`` and ``val`` name two of them, ``states`` the tests.
        disjoint_units: pools whose units must never appear in meta-train.
        cold_items: ``{pool name: item indices}`` that must never appear in meta-train.
        order: ``"random"`` or ``"time"`` (time-ordered tasks are checked for order).
        warm_units: ``{pool name: units}`` whose support comes from meta-train by design (a
            predefined split that holds out interactions of trained units): only their pinned
            query rows must stay out of meta-train.
        filters: what the split (and reading the data) left out of every pool, each under the
            key that controls it (:class:`metarec.episodes.filters.FilterReport`), set by
            :func:`metarec.episodes.build.build_splits`; ``None`` for splits built otherwise.

    Example:
        >>> from metarec.data.synthetic import make_synthetic
        >>> t = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> splits = random_split(t, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10)
        >>> splits.train, splits.val, splits.states
        ('meta-train', 'meta-val', ['meta-test'])
        >>> {name: len(pool) for name, pool in splits.pools.items()}
        {'meta-train': 36, 'meta-val': 12, 'meta-test': 12}
        >>> splits.disjoint_units  # cold users: no test user is ever a meta-train task
        ['meta-val', 'meta-test']
    """

    table: InteractionTable
    pools: dict[str, TaskPool]
    train: str = "meta-train"
    val: str = "meta-val"
    states: list[str] = field(default_factory=lambda: ["meta-test"])
    disjoint_units: list[str] = field(default_factory=list)
    cold_items: dict[str, np.ndarray] = field(default_factory=dict)
    order: str = "random"
    warm_units: dict[str, np.ndarray] = field(default_factory=dict)
    filters: Any = None

    def __getitem__(self, name: str) -> TaskPool:
        if name not in self.pools:
            raise ConfigError(
                f"split {name!r}: unknown; available: {list(self.pools)}{suggest(name, self.pools)}"
            )
        return self.pools[name]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"fractions={tuple(fractions)}: need three non-negative fractions (train, val, test) "
            "summing to 1; e.g. fractions=(0.7, 0.1, 0.2)"
        )
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def _assign(order: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    ftr, fva, _ = _check_fractions(fractions)
    n = order.shape[0]
    a, b = int(round(ftr * n)), int(round((ftr + fva) * n))
    return [order[:a], order[a:b], order[b:]]


def _unit_split(
    table: InteractionTable,
    unit: str,
    ordered_units: np.ndarray,
    keys: np.ndarray,
    fractions: Sequence[float],
    *,
    n_query: int,
    min_interactions: int,
    max_interactions: int | None,
    order: str,
    seed: int,
) -> MetaSplits:
    parts = _assign(ordered_units, fractions)
    names = ["meta-train", "meta-val", "meta-test"]
    pools: dict[str, TaskPool] = {}
    for name, units in zip(names, parts):
        rows = np.nonzero(np.isin(keys, units))[0]
        pool = build_pool(
            table,
            rows,
            keys,
            name,
            unit,
            min_interactions=min_interactions,
            max_interactions=max_interactions,
        )
        if name != "meta-train" and len(pool):
            pool = pin_queries(table, pool, n_query, order=order, seed=seed + 1)
        pools[name] = pool
    for name, pool in pools.items():
        if len(pool) == 0:
            raise DataError(
                f"split {name!r}: no task unit has between min_interactions={min_interactions} and "
                f"max_interactions={max_interactions} interactions; lower min_interactions or "
                "change fractions"
            )
    return MetaSplits(table, pools, disjoint_units=["meta-val", "meta-test"], order=order)


def random_split(
    table: InteractionTable,
    unit: str = "user",
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    *,
    n_query: int = 10,
    min_interactions: int = 13,
    max_interactions: int | None = None,
    cohort_by=None,
    order: str = "random",
    seed: int = 0,
) -> MetaSplits:
    """Task units shuffled by ``seed`` and cut into meta-train / meta-val / meta-test."""
    keys = unit_keys(table, unit, cohort_by)  # type: ignore[arg-type]
    units = np.unique(keys)
    units = units[units > 0] if unit == "user" else units
    rng = np.random.default_rng(seed)
    return _unit_split(
        table,
        unit,
        rng.permutation(units),
        keys,
        fractions,
        n_query=n_query,
        min_interactions=min_interactions,
        max_interactions=max_interactions,
        order=order,
        seed=seed,
    )


def time_split(
    table: InteractionTable,
    unit: str = "user",
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    *,
    n_query: int = 10,
    min_interactions: int = 13,
    max_interactions: int | None = None,
    cohort_by=None,
    seed: int = 0,
) -> MetaSplits:
    """Units ordered by their first interaction: the earliest form meta-train, the latest
    meta-test (new users arrive later than the ones trained on); tasks are time-ordered."""
    if table.timestamps is None:
        raise ConfigError(
            "split='time': the table has no timestamps; load a timestamp column or use "
            "split='random'"
        )
    keys = unit_keys(table, unit, cohort_by)  # type: ignore[arg-type]
    order_rows = np.lexsort((table.timestamps, keys))
    k_sorted = keys[order_rows]
    units, starts = np.unique(k_sorted, return_index=True)
    first = table.timestamps[order_rows[starts]]
    ordered = units[np.lexsort((units, first))]
    return _unit_split(
        table,
        unit,
        ordered,
        keys,
        fractions,
        n_query=n_query,
        min_interactions=min_interactions,
        max_interactions=max_interactions,
        order="time",
        seed=seed,
    )


def item_years(table: InteractionTable, feature: str = "year") -> np.ndarray:
    """Release year of every item index (``int64``; 0 when unknown), from a categorical item feature."""
    f = table.item_features
    if f is None or feature not in f.categorical:
        avail = [] if f is None else sorted(f.categorical)
        raise ConfigError(
            f"split='melu' needs an item feature {feature!r} (release year); available: {avail}"
            f"{suggest(feature, avail)}; load MovieLens with its movie features"
        )
    vocab = f.vocabs[feature].values
    as_year = np.array([0] + [_year(v) for v in vocab], dtype=np.int64)
    return as_year[f.categorical[feature][:, 0]]


def _year(v) -> int:
    try:
        return int(float(str(v)[:4]))
    except ValueError:
        return 0


def melu_split(
    table: InteractionTable,
    *,
    existing_user_fraction: float = 0.8,
    new_item_year: int = 1998,
    n_query: int = 10,
    min_interactions: int = 13,
    max_interactions: int | None = 100,
    val_fraction: float = 0.1,
    warm_fraction: float = 0.1,
    seed: int = 0,
) -> MetaSplits:
    """MeLU's cold-start protocol (Lee et al., KDD 2019) on MovieLens.

    Users with ``min_interactions..max_interactions`` ratings; a random ``existing_user_fraction``
    of them are *existing*, the rest *new*; items released in ``new_item_year`` or later are
    *new*. Existing users are cut into meta-train, meta-val and warm-test users (``val_fraction``,
    ``warm_fraction`` of them), so the warm state is scored on tasks never trained on. States:

    * ``warm``: warm-test users on existing items;
    * ``user-cold``: new users on existing items;
    * ``item-cold``: existing users on new items;
    * ``user-item-cold``: new users on new items.

    Meta-train holds only existing items. Each task has ``n_query`` pinned random query items and
    the rest as support; a task needs ``min_interactions..max_interactions`` interactions in its state.
    """
    if not 0 < existing_user_fraction < 1:
        raise ConfigError(
            f"existing_user_fraction={existing_user_fraction}: must be in (0, 1); MeLU uses 0.8"
        )
    years = item_years(table)
    new_item = years[table.items] >= new_item_year
    counts = np.bincount(table.users, minlength=table.n_users)
    eligible = np.nonzero(
        (counts >= min_interactions) & ((counts <= max_interactions) if max_interactions else True)
    )[0]
    eligible = eligible[eligible > 0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(eligible)
    n_exist = int(round(existing_user_fraction * perm.shape[0]))
    existing, new = perm[:n_exist], perm[n_exist:]
    n_val, n_warm = int(round(val_fraction * n_exist)), int(round(warm_fraction * n_exist))
    val_u, warm_u, train_u = (
        existing[:n_val],
        existing[n_val : n_val + n_warm],
        existing[n_val + n_warm :],
    )
    is_in = lambda users: np.isin(table.users, users)  # noqa: E731
    spec = {
        "meta-train": is_in(train_u) & ~new_item,
        "meta-val": is_in(val_u) & ~new_item,
        "warm": is_in(warm_u) & ~new_item,
        "user-cold": is_in(new) & ~new_item,
        "item-cold": is_in(existing) & new_item,
        "user-item-cold": is_in(new) & new_item,
    }
    pools = {}
    for name, mask in spec.items():
        pool = build_pool(
            table,
            np.nonzero(mask)[0],
            table.users,
            name,
            "user",
            min_interactions=min_interactions,
            max_interactions=max_interactions,
        )
        if name != "meta-train" and len(pool):
            pool = pin_queries(table, pool, n_query, seed=seed + 1)
        pools[name] = pool
    new_items = np.unique(table.items[new_item])
    return MetaSplits(
        table,
        pools,
        states=["warm", "user-cold", "item-cold", "user-item-cold"],
        disjoint_units=["meta-val", "warm", "user-cold", "user-item-cold"],
        cold_items={"item-cold": new_items, "user-item-cold": new_items},
    )


def cold_domain_users_split(
    table: InteractionTable,
    target_domain: str | None = None,
    *,
    beta: float = 0.2,
    val_fraction: float = 0.1,
    n_query: int = 10,
    min_interactions: int = 2,
    max_interactions: int | None = None,
    seed: int = 0,
) -> MetaSplits:
    """Cross-domain cold-start (PTUPCDR's protocol): a fraction ``beta`` of the users who
    interact in both domains become cold in the target domain.

    Task units are (user, domain) pairs, so a user's source-domain task can be trained on while
    their target-domain task is held out. Meta-train: every source-domain task and the target
    tasks of warm users. Cold users are cut into meta-val (``val_fraction`` of them) and
    meta-test; their target interactions never enter meta-train. Test tasks pin ``n_query``
    query interactions (``min_interactions`` must exceed it by at least one shot)."""
    if not 0 < beta < 1:
        raise ConfigError(
            f"beta={beta}: the cold fraction must be in (0, 1); e.g. beta=0.2, 0.5 or 0.8"
        )
    _check_val_fraction(val_fraction)
    names = table.domain_ids.values
    if len(names) < 2:
        raise ConfigError(
            "split='cold_domain_users' needs at least two domains; load a cross-domain pair"
        )
    if target_domain is None:
        target_domain = names[-1]
    if target_domain not in table.domain_ids:
        raise ConfigError(
            f"target_domain={target_domain!r}: not a domain of this table; "
            f"domains: {names}{suggest(target_domain, names)}"
        )
    tdom = int(table.domain_ids.encode([target_domain])[0])
    in_target = table.domains == tdom
    both = np.intersect1d(np.unique(table.users[in_target]), np.unique(table.users[~in_target]))
    tcount = np.bincount(table.users[in_target], minlength=table.n_users)
    eligible = both[tcount[both] >= min_interactions]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(eligible)
    cold = perm[: int(round(beta * perm.shape[0]))]
    n_val = int(round(val_fraction * cold.shape[0]))
    val_u, test_u = cold[:n_val], cold[n_val:]
    keys = table.users.astype(np.int64) * table.n_domains + table.domains
    is_cold_row = np.isin(table.users, cold) & in_target
    pools = {
        "meta-train": build_pool(
            table,
            np.nonzero(~is_cold_row)[0],
            keys,
            "meta-train",
            "user-domain",
            min_interactions=min_interactions,
        ),
    }
    for name, users in (("meta-val", val_u), ("meta-test", test_u)):
        rows = np.nonzero(np.isin(table.users, users) & in_target)[0]
        pool = build_pool(
            table,
            rows,
            keys,
            name,
            "user-domain",
            min_interactions=min_interactions,
            max_interactions=max_interactions,
        )
        pools[name] = pin_queries(table, pool, n_query, seed=seed + 1) if len(pool) else pool
    return MetaSplits(table, pools, disjoint_units=["meta-val", "meta-test"])


def _check_val_fraction(val_fraction: float) -> None:
    if not 0 <= val_fraction < 1:
        raise ConfigError(
            f"val_fraction={val_fraction}: the validation share must lie in [0, 1); "
            "e.g. protocol.val_fraction = 0.1 (val_fraction= in Python)"
        )


def melu_time_split(
    table: InteractionTable,
    *,
    existing_user_fraction: float = 0.8,
    new_item_year: int = 1998,
    n_query: int = 10,
    min_interactions: int = 13,
    max_interactions: int | None = 100,
    val_fraction: float = 0.1,
    warm_fraction: float = 0.1,
    seed: int = 0,
) -> MetaSplits:
    """MeLU's four states with MAMO's time-based user split (Dong et al., KDD 2020).

    As :func:`melu_split`, except that users are ordered by their first interaction: the earliest
    ``existing_user_fraction`` are *existing* (their order cut into meta-val, warm-test and
    meta-train users as in :func:`melu_split`, after a seeded shuffle inside the existing group),
    the latest are *new* users, so every new user arrives after every existing one; query sets
    pin each task's latest ``n_query`` interactions (support strictly earlier with
    ``order = "time"``).
    """
    if not 0 < existing_user_fraction < 1:
        raise ConfigError(
            f"existing_user_fraction={existing_user_fraction}: must be in (0, 1); MAMO uses 0.8"
        )
    if table.timestamps is None:
        raise ConfigError(
            "melu_time_split: the table has no timestamps; load a timestamp column or use "
            "melu_split"
        )
    years = item_years(table)
    new_item = years[table.items] >= new_item_year
    counts = np.bincount(table.users, minlength=table.n_users)
    eligible = np.nonzero(
        (counts >= min_interactions) & ((counts <= max_interactions) if max_interactions else True)
    )[0]
    eligible = eligible[eligible > 0]
    first = np.full(table.n_users, np.iinfo(np.int64).max)
    np.minimum.at(first, table.users, table.timestamps)
    ordered = eligible[np.lexsort((eligible, first[eligible]))]
    n_exist = int(round(existing_user_fraction * ordered.shape[0]))
    existing, new = np.random.default_rng(seed).permutation(ordered[:n_exist]), ordered[n_exist:]
    n_val, n_warm = int(round(val_fraction * n_exist)), int(round(warm_fraction * n_exist))
    val_u, warm_u, train_u = (
        existing[:n_val],
        existing[n_val : n_val + n_warm],
        existing[n_val + n_warm :],
    )
    spec = {
        "meta-train": np.isin(table.users, train_u) & ~new_item,
        "meta-val": np.isin(table.users, val_u) & ~new_item,
        "warm": np.isin(table.users, warm_u) & ~new_item,
        "user-cold": np.isin(table.users, new) & ~new_item,
        "item-cold": np.isin(table.users, existing) & new_item,
        "user-item-cold": np.isin(table.users, new) & new_item,
    }
    pools = {}
    for name, mask in spec.items():
        pool = build_pool(
            table,
            np.nonzero(mask)[0],
            table.users,
            name,
            "user",
            min_interactions=min_interactions,
            max_interactions=max_interactions,
        )
        if name != "meta-train" and len(pool):
            pool = pin_queries(table, pool, n_query, order="time", seed=seed + 1)
        pools[name] = pool
    new_items = np.unique(table.items[new_item])
    return MetaSplits(
        table,
        pools,
        states=["warm", "user-cold", "item-cold", "user-item-cold"],
        disjoint_units=["meta-val", "warm", "user-cold", "user-item-cold"],
        cold_items={"item-cold": new_items, "user-item-cold": new_items},
        order="time",
    )
