"""Repeated ``(user, item, domain)`` rows: the policies that resolve them and the one error
that no policy may resolve (the same pair in two parts of a dataset's own split)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec._errors import DataError, py

__all__ = ["DUPLICATE_POLICIES", "deduplicate"]

DUPLICATE_POLICIES = ("error", "first", "last", "mean")


def deduplicate(
    work: pd.DataFrame, policy: str, *, part: str | None, domain: str | None
) -> pd.DataFrame:
    """Resolve repeated ``(user, item, domain)`` rows of the working frame by ``policy``.

    ``work`` has the columns ``u``, ``i``, ``d``, ``r`` and optionally ``t`` (timestamp) and ``p``
    (the dataset's own split part); ``part`` and ``domain`` are the user's column names, used in
    messages. A pair in two parts is always an error; otherwise ``"error"`` refuses any repeat,
    ``"first"``/``"last"`` keep one row (by timestamp where there is one, else by file order)
    and ``"mean"`` averages the ratings (latest timestamp). Rows keep their original order.
    """
    # Integer codes of (user, item, domain): hashing string ids once is much cheaper than
    # comparing them row against row.
    codes = pd.DataFrame({k: pd.factorize(work[k])[0] for k in ("u", "i", "d")}, index=work.index)
    dup = codes.duplicated(keep=False)
    if not dup.any():
        return work.reset_index(drop=True)
    if "p" in work:
        cross = (
            codes.loc[dup]
            .assign(p=work.loc[dup, "p"])
            .groupby(["u", "i", "d"], sort=False)["p"]
            .transform("nunique")
        )
        if (cross > 1).any():
            row = cross.index[np.argmax(cross.to_numpy() > 1)]
            u, i, d = (work.at[row, k] for k in ("u", "i", "d"))
            n_pairs = int(codes.loc[cross.index[cross.to_numpy() > 1]].drop_duplicates().shape[0])
            where = f", domain {py(d)!r}" if domain else ""
            raise DataError(
                f"part column {part!r}: user {py(u)!r}, item {py(i)!r}{where} is in two parts of "
                f"the dataset's split ({n_pairs} such pair(s)); an interaction cannot be both "
                "trained on and evaluated; remove it from one of the files"
            )
    if policy == "error":
        first = {k: work.loc[dup, k].iloc[0] for k in ("u", "i", "d")}
        where = f", domain {py(first['d'])!r}" if domain else ""
        raise DataError(
            f"duplicates='error': {int(codes.duplicated().sum())} repeated (user, item, domain) "
            f"row(s), first user {py(first['u'])!r}, item {py(first['i'])!r}{where}; set "
            'data.duplicates = "first", "last" or "mean" in the scenario (duplicates= in Python) '
            "to resolve them, or drop them beforehand"
        )
    if policy == "mean":
        agg = {"u": "first", "i": "first", "d": "first", "r": "mean"}
        if "t" in work:
            agg["t"] = "max"
        if "p" in work:
            agg["p"] = "first"
        group = codes.groupby(["u", "i", "d"], sort=False).ngroup()
        return work.groupby(group.to_numpy(), sort=False).agg(agg).reset_index(drop=True)
    order = work.sort_values("t", kind="stable").index if "t" in work else work.index
    keep = ~codes.loc[order].duplicated(keep=policy).to_numpy()
    return work.loc[np.sort(order[keep])].reset_index(drop=True)
