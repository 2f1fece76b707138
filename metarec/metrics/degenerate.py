"""Flags for results that look good (or bad) for the wrong reason: constant predictions, query
sets smaller than ``k``, a metric that is 1.0 whatever the scores, an empty query.
Re-exported by :mod:`metarec.metrics.per_task`."""

from __future__ import annotations

import math

import torch

from metarec.metrics._checks import _check_2d, _check_k

__all__ = ["degenerate_flags"]


_CONSTANT_STD = 1e-6


def degenerate_flags(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, k: int | None = None
) -> list[str]:
    """Human-readable warnings about results that look good (or bad) for the wrong reason.

    Only tasks with at least one real item are considered. Each flag starts with its name:

    * ``'constant predictions'``: on more than half of the tasks with >= 2 real items the
      population std of the real scores is below ``1e-6``; the model ignores its inputs and
      every ranking metric is decided by tie-breaking.
    * ``'query smaller than k'`` (``k`` given): some task has fewer than ``k`` real items, so
      @k metrics there rank the whole query.
    * ``'metric at 1.0 by construction'``: nDCG is 1.0 whatever the scores because every task
      has fewer than 2 real items or all-equal relevance; or (``k`` given) HR@k is 1.0 for
      every task with a positive because ``k >= n_t`` (number of candidates) on every task.
    * ``'empty query'``: no task has a real item; every metric is ``NaN``.

    Returns an empty list when nothing is suspicious.
    """
    if k is not None:
        _check_k(k)
    s, y, m = _check_2d(scores, targets, mask)
    n = m.sum(dim=1)
    live = n > 0
    n_live = int(live.sum())
    if n_live == 0:
        return ["empty query: no task has a real (mask=True) item; every metric is NaN"]
    flags: list[str] = []

    # constant predictions
    nf = n.to(s.dtype).clamp(min=1)
    mean = (s * m).sum(dim=1) / nf
    std = (((s - mean.unsqueeze(1)) ** 2 * m).sum(dim=1) / nf).sqrt()
    multi = n >= 2
    n_multi = int(multi.sum())
    n_const = int((multi & (std < _CONSTANT_STD)).sum())
    if n_multi and 2 * n_const > n_multi:
        flags.append(
            f"constant predictions: scores vary by less than {_CONSTANT_STD:g} (std) within "
            f"{n_const}/{n_multi} tasks with >= 2 query items; the model ignores its inputs and "
            "ranking metrics only reflect tie-breaking"
        )

    # query smaller than k
    if k is not None:
        small = live & (n < k)
        if bool(small.any()):
            flags.append(
                f"query smaller than k: {int(small.sum())}/{n_live} tasks have fewer than k={k} "
                f"real query items (smallest: {int(n[live].min())}); @k metrics there rank the "
                "whole query, so k does not cut anything"
            )

    # metric at 1.0 by construction
    big = torch.full_like(y, math.inf)
    hi = torch.where(m, y, -big).max(dim=1).values
    lo = torch.where(m, y, big).min(dim=1).values
    trivial = (n < 2) | (hi == lo)
    if bool(trivial[live].all()):
        flags.append(
            f"metric at 1.0 by construction: nDCG is 1.0 for any scores because every one of the "
            f"{n_live} tasks has fewer than 2 query items or all-equal relevance; it measures nothing"
        )
    if k is not None and bool((n[live] <= k).all()):
        flags.append(
            f"metric at 1.0 by construction: HR@{k} is 1.0 for every task with a positive because "
            f"k={k} >= the number of candidates on every task (largest query: {int(n.max())}); "
            "use a smaller k or rank against more candidates (sampled negatives)"
        )
    return flags
