"""Clients' data: one domain (or user cohort) of an interaction table per client.

:func:`client_names` lists the clients a table yields; :func:`client_data` builds one client
from the table: the rows of its domain (or cohort) only, and metarec's own splits of its users
into meta-train, meta-val and cold test users (``federated.fractions``, the scenario's shots and
query sizes). Nothing outside a client's rows survives in its :class:`ClientData`; the full
table is read once and dropped. :func:`pooled_splits` joins every client's pools over the full
table for the centralised comparison (it sees every row, as a centralised learner would).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from metarec._errors import ConfigError, DataError
from metarec.config import ProtocolConfig, Scenario
from metarec.config.federated import FederatedConfig
from metarec.data.table import InteractionTable
from metarec.episodes.build import build_splits
from metarec.episodes.pool import TaskPool, unit_keys
from metarec.episodes.splits import MetaSplits

__all__ = [
    "ClientData",
    "client_names",
    "client_masks",
    "client_data",
    "client_protocol",
    "check_client_table",
    "pooled_splits",
]


@dataclass
class ClientData:
    """One client's share of the data.

    Attributes:
        name: the domain (or cohort) name.
        index: position of the client in :func:`client_names`.
        table: the client's rows only (encoders and side features are shared, so every client
            builds a model of the same shapes).
        splits: its users cut into ``meta-train``, ``meta-val`` and ``meta-test`` (cold users).
        rows: ``int64 (n,)`` positions of its rows in the full table (for the centralised
            comparison only; a client never sends them).
    """

    name: str
    index: int
    table: InteractionTable
    splits: MetaSplits
    rows: np.ndarray

    @property
    def n_train(self) -> int:
        """Meta-train interactions: the client's weight in the server's average."""
        return int(self.splits.pools[self.splits.train].rows.shape[0])

    def sizes(self) -> dict[str, int]:
        """Task units and interactions per pool."""
        out = {"interactions": len(self.table)}
        for name, pool in self.splits.pools.items():
            out[f"{name} users"] = len(pool)
        return out


def client_masks(table: InteractionTable, fed: FederatedConfig) -> list[tuple[str, np.ndarray]]:
    """``[(client name, bool (n_rows,) mask)]``: one client per domain or cohort with rows."""
    if fed.clients == "domains":
        names = list(table.domain_ids.values)
        return [
            (str(n), table.domains == d)
            for d, n in enumerate(names, start=1)
            if np.any(table.domains == d)
        ]
    cohort_by = fed.cohort_by
    if (
        cohort_by is None
    ):  # FederatedConfig refuses this; checked again for a config built around it
        raise ConfigError(
            'clients="cohorts" needs cohort_by, the user column that forms the cohorts; '
            'set cohort_by = "age" or use clients = "domains"'
        )
    keys = unit_keys(table, "cohort", cohort_by)
    vocab = table.user_features.vocabs[cohort_by].values if table.user_features is not None else []
    out = []
    for k in np.unique(keys):
        label = str(vocab[k - 1]) if 0 < k <= len(vocab) else "unknown"
        out.append((f"{fed.cohort_by}={label}", keys == k))
    return out


def client_names(table: InteractionTable, fed: FederatedConfig) -> list[str]:
    """The clients' names, in client-index order."""
    return [n for n, _ in client_masks(table, fed)]


def client_protocol(p: ProtocolConfig, fed: FederatedConfig, index: int) -> ProtocolConfig:
    """A client's protocol: its users split at random (``fed.fractions``) into meta-train,
    meta-val and cold test users, with the scenario's shots and query size; a user needs at
    least ``n_support + n_query`` interactions in the client."""
    need = (p.n_support or 1) + (p.n_query or 1)
    return replace(
        p,
        unit="user",
        split="time" if p.split == "time" else "random",
        fractions=tuple(fed.fractions),
        min_interactions=max(p.min_interactions, need),
        seed=p.seed + index,
    )


def check_client_table(t: InteractionTable, name: str) -> None:
    """Refuse a client's rows that metarec could not train on (non-finite or off-scale ratings).

    Raises:
        DataError: naming the client, the bad value and the fix.
    """
    bad = ~np.isfinite(t.ratings)
    if t.rating_scale is not None and t.feedback == "explicit":
        lo, hi = t.rating_scale
        bad |= (t.ratings < lo) | (t.ratings > hi)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise DataError(
            f"client {name!r}: {int(bad.sum())} rating(s) are not finite or lie off the rating "
            f"scale {t.rating_scale} (first: row {i}, rating {float(t.ratings[i])!r}); fix or drop "
            "those rows in this client's data"
        )


def client_data(
    table: InteractionTable, scenario: Scenario, index: int, *, corrupt: bool = False
) -> ClientData:
    """Client ``index``'s rows of ``table`` and its splits.

    Args:
        corrupt: replace a few of its ratings by NaN first (the ``invalid`` fault), so that
            :func:`check_client_table` refuses them.

    Raises:
        DataError: the client's ratings are invalid, or too few of its users have enough
            interactions for its splits.
    """
    fed = scenario.federated
    masks = client_masks(table, fed)
    if not 0 <= index < len(masks):
        raise DataError(
            f"client index {index}: the table yields {len(masks)} clients "
            f"({[n for n, _ in masks]}); pass 0..{len(masks) - 1}"
        )
    name, mask = masks[index]
    rows = np.nonzero(mask)[0]
    sub = table.subset(rows)
    if corrupt:
        sub.ratings = sub.ratings.copy()
        sub.ratings[:: max(len(sub) // 5, 1)] = np.nan
    check_client_table(sub, name)
    try:
        splits = build_splits(sub, client_protocol(scenario.protocol, fed, index))
    except DataError as e:
        raise DataError(f"client {name!r}: {e}") from None
    return ClientData(name, index, sub, splits, rows)


def _concat(pools: list[TaskPool], maps: list[np.ndarray], name: str) -> TaskPool:
    """Pools of client tables joined into one pool over the full table (rows remapped)."""
    units = np.concatenate([p.units for p in pools])
    lens = np.concatenate([p.lengths for p in pools])
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    rows = np.concatenate([m[p.rows] for p, m in zip(pools, maps)])
    flags = [p.query_flag for p in pools if p.query_flag is not None]
    qf = np.concatenate(flags) if len(flags) == len(pools) else None
    return TaskPool(name, "user-domain", units, offsets, rows, qf)


def pooled_splits(table: InteractionTable, clients: list[ClientData]) -> MetaSplits:
    """Every client's meta-train, meta-val and cold test pools over the full ``table``
    (the same tasks and pinned queries); the test pools are the states ``cold:<client>``."""
    maps = [c.rows for c in clients]
    pools = {
        "meta-train": _concat([c.splits.pools["meta-train"] for c in clients], maps, "meta-train"),
        "meta-val": _concat([c.splits.pools["meta-val"] for c in clients], maps, "meta-val"),
    }
    states = []
    for c in clients:
        pools[f"cold:{c.name}"] = _concat([c.splits.pools["meta-test"]], [c.rows], f"cold:{c.name}")
        states.append(f"cold:{c.name}")
    return MetaSplits(table, pools, states=states, disjoint_units=["meta-val", *states])
