"""Statistics over seeds: Student-t CDF, paired t-test, metric directions (no scipy).

Seeds are the replicates of a benchmark: each seed re-draws the split, the initial weights and
the task order, so a table cell is the mean over seeds and its interval a Student-t interval
over seeds (:func:`metarec.metrics.per_task.mean_ci` applied to the per-seed values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from metarec._errors import ConfigError
from metarec.metrics.per_task import _t_upper_tail  # exact tail via the regularized incomplete beta

__all__ = ["LOWER_IS_BETTER", "PRIMARY", "lower_is_better", "student_t_cdf", "paired_t_test"]

LOWER_IS_BETTER = ("mae", "rmse", "logloss", "overlap", "pop")
PRIMARY = {"explicit": "mae", "implicit": "auc"}
"""The primary metric per feedback kind (the significance test and the bolded headline)."""


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (errors; the share of lists two users
    have in common, ``overlap@k``; the popularity of what is recommended, ``pop@k``) or larger
    (ranking metrics, ``coverage@k``)."""
    return metric.split("@")[0] in LOWER_IS_BETTER


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom.

    ``P(T > |t|) = 0.5 * I_{df / (df + t^2)}(df / 2, 1 / 2)`` (regularized incomplete beta,
    :mod:`metarec.metrics.per_task`), mirrored for negative ``t``. E.g. ``student_t_cdf(2.7764, 4) = 0.975``.
    """
    if not df > 0:
        raise ConfigError(f"df={df!r}: degrees of freedom must be > 0 (n - 1 for n paired values)")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = _t_upper_tail(abs(t), df)
    return 1.0 - tail if t >= 0 else tail


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided paired t-test of ``mean(a - b) = 0`` over paired replicates (seeds).

    ``d_s = a_s - b_s``, ``t = mean(d) / (sd(d) / sqrt(n))`` (``n - 1`` in the standard
    deviation), ``p = 2 * P(T_{n-1} > |t|)``. Returns ``{"n", "mean_diff", "t", "p"}``; with
    fewer than two pairs ``t`` and ``p`` are ``NaN`` (no test); with identical differences
    (``sd = 0``) ``p`` is 0 when the mean difference is non-zero and 1 when it is zero.
    """
    if len(a) != len(b):
        raise ConfigError(
            f"paired_t_test: {len(a)} values against {len(b)}; pass one value per seed on both sides"
        )
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(d)
    if n == 0:
        return {"n": 0, "mean_diff": math.nan, "t": math.nan, "p": math.nan}
    mean = math.fsum(d) / n
    if n < 2:
        return {"n": n, "mean_diff": mean, "t": math.nan, "p": math.nan}
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1))
    if sd == 0.0:
        return {
            "n": n,
            "mean_diff": mean,
            "t": math.copysign(math.inf, mean) if mean else 0.0,
            "p": 0.0 if mean else 1.0,
        }
    t = mean / (sd / math.sqrt(n))
    return {"n": n, "mean_diff": mean, "t": t, "p": min(1.0, 2.0 * _t_upper_tail(abs(t), n - 1))}
