"""The metric that selects a model on meta-val, per feedback kind: one table for every method.

Lower MAE for explicit ratings, higher AUC for implicit feedback. The outer loops keep the
weights with the best ``sign * value`` (:data:`SELECT_METRIC`); reports call it the primary
metric (:data:`PRIMARY_METRIC`).

Example:
    >>> SELECT_METRIC["explicit"], PRIMARY_METRIC["implicit"]
    (('mae', -1.0), 'auc')
"""

from __future__ import annotations

__all__ = ["SELECT_METRIC", "PRIMARY_METRIC", "RANK_SELECT_METRIC"]

SELECT_METRIC: dict[str, tuple[str, float]] = {
    "explicit": ("mae", -1.0),
    "implicit": ("auc", 1.0),
}
"""Feedback kind -> (metric, sign): the selection score is ``sign * metric`` (higher is better)."""

PRIMARY_METRIC: dict[str, str] = {fb: m for fb, (m, _) in SELECT_METRIC.items()}
"""Feedback kind -> the metric model selection uses (always computed and reported)."""

RANK_SELECT_METRIC: tuple[str, float] = ("ndcg@10_all", 1.0)
"""(metric, sign) of a method selected in a ranking scenario (``protocol.ranking``): nDCG@10 over
each meta-val task's catalogue, whatever the feedback kind."""
