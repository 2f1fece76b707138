"""Averages of per-task (or per-seed) metric values and their Student-t confidence intervals,
with the Student-t distribution computed without scipy. Re-exported by :mod:`metarec.metrics.per_task`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import torch

from metarec._errors import ConfigError

__all__ = ["mean_ci", "mean_over_tasks", "student_t_quantile"]


def _finite_values(values: torch.Tensor | Sequence[float]) -> list[float]:
    if isinstance(values, torch.Tensor):
        flat = values.detach().to("cpu", torch.float64).reshape(-1).tolist()
    else:
        flat = [float(v) for v in values]
    return [v for v in flat if math.isfinite(v)]


def mean_over_tasks(values: torch.Tensor | Sequence[float]) -> float:
    """Mean of the finite per-task values (``NaN`` = undefined task, skipped).

    ``mean = (1 / |F|) * sum_{t in F} v_t`` with ``F`` the tasks whose value is finite;
    ``NaN`` if there is none.
    """
    vals = _finite_values(values)
    return math.fsum(vals) / len(vals) if vals else float("nan")


def mean_ci(
    values: torch.Tensor | Sequence[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and Student-t confidence half-width of the finite per-task values.

    ``half_width = t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)`` with ``s`` the sample
    standard deviation (``n - 1`` denominator) of the ``n`` finite values, so the interval is
    ``mean ± half_width``. Tasks are treated as independent draws. Returns
    ``(nan, nan)`` for no value and ``(mean, nan)`` for one (the spread is unknown).
    """
    if not (isinstance(confidence, (int, float)) and 0.0 < float(confidence) < 1.0):
        raise ConfigError(
            f"confidence={confidence!r}: must be strictly between 0 and 1; pass e.g. 0.95"
        )
    vals = _finite_values(values)
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan")
    mean = math.fsum(vals) / n
    if n == 1:
        return mean, float("nan")
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
    t = student_t_quantile((1.0 + float(confidence)) / 2.0, n - 1)
    return mean, t * math.sqrt(var / n)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for i in range(1, 10_000):
        m2 = 2 * i
        aa = i * (b - i) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + i) * (qab + i) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_bt = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    bt = math.exp(log_bt)
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, 1.0 - x) / b


def _t_upper_tail(t: float, df: float) -> float:
    """``P(T > t)`` for ``t >= 0``: ``0.5 * I_{df / (df + t^2)}(df / 2, 1 / 2)``."""
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def student_t_quantile(p: float, df: float) -> float:
    """Quantile ``t_{p, df}`` of Student's t distribution (inverse CDF), without scipy.

    Solves ``P(T > t) = 1 - p`` by bisection on the exact tail
    ``P(T > t) = 0.5 * I_{df / (df + t^2)}(df / 2, 1 / 2)`` (regularized incomplete beta by
    continued fraction), accurate to ~1e-12 relative. E.g. ``t_{0.975, 4} = 2.7764``,
    ``t_{0.975, 9} = 2.2622``; tends to the normal quantile as ``df`` grows.
    """
    if not 0.0 < p < 1.0:
        raise ConfigError(f"p={p!r}: a quantile level must be strictly between 0 and 1")
    if not df > 0:
        raise ConfigError(f"df={df!r}: degrees of freedom must be > 0 (n - 1 for n values)")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    q = 1.0 - p
    lo, hi = 0.0, max(1.0, 2.0 * NormalDist().inv_cdf(p))
    while _t_upper_tail(hi, df) > q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_upper_tail(mid, df) > q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)
