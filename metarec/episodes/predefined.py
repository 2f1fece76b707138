"""The predefined split: a dataset's own train / valid / test files as meta-splits.

:func:`predefined_split` turns the ``part`` of each interaction (:data:`~metarec.data.table.PARTS`)
into task pools: cold units are cut from their held-out rows, warm units use their training rows
as support; the leakage checks of :mod:`metarec.episodes.leakage` run on the result like on any
generated protocol (see :mod:`metarec.episodes.splits`).
"""

from __future__ import annotations

import warnings

import numpy as np

from metarec._errors import ConfigError, DataError, suggest
from metarec.data.table import PARTS, InteractionTable
from metarec.episodes.pool import TaskPool, build_pool, unit_keys
from metarec.episodes.sampler import pin_queries
from metarec.episodes.splits import MetaSplits, _check_val_fraction

__all__ = ["predefined_split"]


def predefined_split(
    table: InteractionTable,
    *,
    unit: str = "user",
    target_domain: str | None = None,
    n_query: int = 10,
    min_interactions: int = 2,
    max_interactions: int | None = None,
    val_fraction: float = 0.1,
    order: str = "random",
    seed: int = 0,
) -> MetaSplits:
    """The dataset's own split (``table.parts``): its ``train`` rows are meta-train, the units of
    its ``valid`` and ``test`` rows are meta-val and meta-test.

    With several domains the task units are (user, domain) pairs, as in
    :func:`cold_domain_users_split`: the dataset's own cold users are those whose rows in a
    domain are all held out (in ``valid`` / ``test``), while their other domains' rows train.
    ``target_domain`` keeps only that domain's held-out rows for evaluation (the others are
    left out of every pool).

    Two kinds of evaluation task, decided per unit by the dataset's split:

    * a **cold** unit (no training rows) is cut from its own held-out rows: ``n_query`` pinned
      query rows, the rest its support candidates; it needs ``min_interactions`` held-out rows
      (units with fewer are left out, with a warning);
    * a **warm** unit (the split holds out some interactions of a unit that also trains, as in
      leave-one-out benchmarks) has all its held-out rows as the query and its training rows as
      the support candidates; the leakage checks then allow its support, never its query, in
      meta-train (:attr:`MetaSplits.warm_units`).

    Without a ``valid`` part, ``val_fraction`` of the training units that hold nothing out (of
    the evaluated domains, with several) become cold meta-val tasks, their rows left out of
    meta-train; in a warm split (every test unit also trains) ``val_fraction`` of those units
    (of any training units of the evaluated domains when none holds nothing out) hold back
    ``n_query`` training rows each as warm meta-val queries instead, so validation mirrors the
    test. The test rows are never touched.

    Raises:
        ConfigError: the table has no parts; ``target_domain`` is unknown.
        DataError: no training or test rows; no test unit left.
    """
    _check_val_fraction(val_fraction)
    if table.parts is None:
        raise ConfigError(
            "split='predefined' needs the dataset's own split: give every [[data.files]] entry a "
            'part (part = "train", "valid" or "test"), or name a split column with '
            "data.columns.part"
        )
    parts = table.parts
    counts = {p: int((parts == i).sum()) for i, p in enumerate(PARTS)}
    if counts["train"] == 0 or counts["test"] == 0:
        missing = "train" if counts["train"] == 0 else "test"
        raise DataError(
            f"split='predefined': the dataset's split has no {missing!r} rows (parts: {counts}); "
            f'add a data.files entry with part = "{missing}"'
        )
    cross = table.n_domains - 1 >= 2
    if cross:
        keys = table.users.astype(np.int64) * table.n_domains + table.domains
        unit_name = "user-domain"
    else:
        keys = unit_keys(table, unit)  # type: ignore[arg-type]
        unit_name = unit
    held = parts > 0
    if target_domain is not None:
        names = table.domain_ids.values
        if target_domain not in table.domain_ids:
            raise ConfigError(
                f"target_domain={target_domain!r}: not a domain of this table; "
                f"domains: {names}{suggest(target_domain, names)}"
            )
        tdom = int(table.domain_ids.encode([target_domain])[0])
        held &= table.domains == tdom
    train_rows = np.nonzero(parts == 0)[0]
    train_keys = np.unique(keys[train_rows])
    valid_rows = np.nonzero(held & (parts == 1))[0]
    if valid_rows.shape[0] == 0 and val_fraction > 0:
        eval_doms = np.unique(table.domains[held & (parts == 2)])
        cand_rows = (
            train_rows[np.isin(table.domains[train_rows], eval_doms)] if cross else train_rows
        )
        cand_rows = cand_rows[
            ~np.isin(keys[cand_rows], keys[parts > 0])
        ]  # units that hold nothing out
        cand = build_pool(table, cand_rows, keys, "candidates", unit_name, min_interactions=min_interactions,
                          max_interactions=max_interactions).units  # fmt: skip
        rng = np.random.default_rng(seed)
        warm_units: dict[str, np.ndarray] = {}
        test_keys = np.unique(keys[held & (parts == 2)])
        all_warm_test = bool(np.isin(test_keys, train_keys).all())
        if cand.shape[0] and not all_warm_test:
            val_units = rng.permutation(cand)[: int(round(val_fraction * cand.shape[0]))]
            is_val = np.isin(keys, val_units)
            valid_rows = np.nonzero(is_val)[0]
            train_rows = train_rows[~is_val[train_rows]]
        else:  # a warm split (every test unit trains): validate the same way, on held-back training rows
            pool_rows = (
                cand_rows
                if cand.shape[0]
                else train_rows[np.isin(table.domains[train_rows], eval_doms)]
            )
            warm_val, kept = _warm_validation(
                table, pool_rows, keys, unit_name, val_fraction, n_query, order, rng, seed
            )
            train_rows = np.setdiff1d(train_rows, np.setdiff1d(pool_rows, kept))
            if len(warm_val):
                warm_units["meta-val"] = warm_val.units
        train_keys = np.unique(keys[train_rows])
    else:
        warm_units = {}
    pools: dict[str, TaskPool] = {
        "meta-train": build_pool(
            table, train_rows, keys, "meta-train", unit_name, min_interactions=2
        )
    }
    for name, rows in (("meta-val", valid_rows), ("meta-test", np.nonzero(held & (parts == 2))[0])):
        if name in warm_units:
            pools[name] = warm_val
            continue
        units = np.unique(keys[rows])
        warm = np.intersect1d(units, train_keys)
        cold_rows = rows[~np.isin(keys[rows], warm)]
        pool = build_pool(
            table,
            cold_rows,
            keys,
            name,
            unit_name,
            min_interactions=min_interactions,
            max_interactions=max_interactions,
        )
        pool = pin_queries(table, pool, n_query, order=order, seed=seed + 1) if len(pool) else pool
        n_cold = units.shape[0] - warm.shape[0]
        if name == "meta-test" and len(pool) < n_cold:
            _warn_left_out(keys[cold_rows], n_cold, len(pool), min_interactions, max_interactions)
        if warm.shape[0]:
            own = np.concatenate(
                [rows[np.isin(keys[rows], warm)], train_rows[np.isin(keys[train_rows], warm)]]
            )
            wpool = build_pool(table, own, keys, name, unit_name, min_interactions=1)
            flag = np.isin(wpool.rows, rows)  # (nnz,) the held-out rows are the query
            pool = _concat_pools(
                pool, TaskPool(name, unit_name, wpool.units, wpool.offsets, wpool.rows, flag)
            )
            warm_units[name] = warm
        pools[name] = pool
    if len(pools["meta-test"]) == 0:
        raise DataError(
            f"split='predefined': no test unit has between min_interactions={min_interactions} and "
            f"max_interactions={max_interactions} held-out rows; lower protocol.min_interactions "
            "(>= 2: one support, one query)"
        )
    return MetaSplits(
        table,
        pools,
        disjoint_units=["meta-val", "meta-test"],
        order="time" if order == "time" else "random",
        warm_units=warm_units,
    )


def _warn_left_out(
    cold_keys: np.ndarray, n_cold: int, n_kept: int, lo: int, hi: int | None
) -> None:
    """Warn that cold test units were left out of meta-test, with the advice that fits each:
    a limit to relax, or none for a unit with a single held-out row (nothing to adapt on)."""
    _, counts = np.unique(cold_keys, return_counts=True)  # held-out rows per cold unit
    single = int(((counts == 1) & (counts < lo)).sum())
    below = int(((counts >= 2) & (counts < lo)).sum())
    above = int((counts > hi).sum()) if hi is not None else 0
    parts = []
    if below:
        parts.append(
            f"{below} have fewer than min_interactions={lo} held-out rows (set "
            "protocol.min_interactions = 2 to evaluate them: one support row, one query row)"
        )
    if above:
        parts.append(
            f"{above} have more than max_interactions={hi} held-out rows (set "
            'protocol.max_interactions = "none" to evaluate them)'
        )
    if single:
        parts.append(
            f"{single} have a single held-out row and no training row: with no support row to "
            "adapt on they cannot be evaluated (a cold task needs one support and one query row); "
            "no setting keeps them"
        )
    warnings.warn(
        f"split='predefined': {n_cold - n_kept} of the dataset's {n_cold} cold test units are left "
        f"out of meta-test: {'; '.join(parts)}",
        stacklevel=4,
    )


def _warm_validation(
    table: InteractionTable,
    train_rows: np.ndarray,
    keys: np.ndarray,
    unit_name: str,
    val_fraction: float,
    n_query: int,
    order: str,
    rng: np.random.Generator,
    seed: int,
) -> tuple[TaskPool, np.ndarray]:
    """Meta-val of a warm split: ``val_fraction`` of the training units each hold back
    ``n_query`` of their training rows as the query (removed from meta-train); their other
    training rows are the support. Returns the pool and the remaining training rows."""
    cand = build_pool(table, train_rows, keys, "meta-val", unit_name, min_interactions=2)
    pick = np.zeros(len(cand), dtype=bool)
    pick[rng.permutation(len(cand))[: int(round(val_fraction * len(cand)))]] = True
    pool = cand.filter(pick)
    if len(pool) == 0:
        return pool, train_rows
    pool = pin_queries(table, pool, n_query, order=order, seed=seed + 2)
    held_back = pool.rows[pool.query_flag]
    return pool, train_rows[~np.isin(train_rows, held_back)]


def _concat_pools(a: TaskPool, b: TaskPool) -> TaskPool:
    """Units of ``a`` then of ``b`` (disjoint units), in one pool with pinned queries."""
    if len(a) == 0:
        return b
    qa = a.query_flag if a.query_flag is not None else np.zeros(a.rows.shape[0], dtype=bool)
    qb = b.query_flag if b.query_flag is not None else np.zeros(b.rows.shape[0], dtype=bool)
    offsets = np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]).astype(np.int64)
    return TaskPool(a.name, a.unit, np.concatenate([a.units, b.units]), offsets, np.concatenate([a.rows, b.rows]),
                    np.concatenate([qa, qb]))  # fmt: skip
