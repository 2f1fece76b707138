"""Evaluation metrics for few-shot recommendation, and evaluation of a method on a pool of tasks.

* :mod:`metarec.metrics.per_task`: every per-task metric on padded ``(T, N)`` tensors (MAE, RMSE,
  nDCG@k, HR@k, MRR, AUC, ranks against negatives) and :func:`evaluate`;
* :mod:`metarec.metrics.averaging`: means over tasks and Student-t intervals;
* :mod:`metarec.metrics.degenerate`: flags for results that look good for the wrong reason;
* :mod:`metarec.metrics.topk`: top-k with deterministic ties;
* :mod:`metarec.metrics.evaluate`: adapt on each task's support, score its query.

The per-task metrics are importable from here: ``from metarec import metrics as M; M.mae(...)``.
"""

from metarec.metrics.per_task import (
    auc,
    degenerate_flags,
    evaluate,
    hr_at_k,
    hr_at_k_from_rank,
    mae,
    mean_ci,
    mean_over_tasks,
    mrr,
    mrr_from_rank,
    ndcg_at_k,
    ndcg_at_k_from_rank,
    pooled_mae,
    pooled_rmse,
    rank_of_positive,
    rmse,
    student_t_quantile,
)

__all__ = [
    "mae",
    "rmse",
    "pooled_mae",
    "pooled_rmse",
    "ndcg_at_k",
    "hr_at_k",
    "mrr",
    "auc",
    "rank_of_positive",
    "hr_at_k_from_rank",
    "ndcg_at_k_from_rank",
    "mrr_from_rank",
    "degenerate_flags",
    "evaluate",
    "mean_over_tasks",
    "mean_ci",
    "student_t_quantile",
]
