"""Evaluate a meta-trained initialisation on a pool of tasks: adapt on each support, score the query.

Used by validation in the outer loop, by the benchmark suite and by the demo. Evaluation is
deterministic: it builds its own sampler with a fixed seed over a pool whose query sets are
pinned, so the same parameters always get the same numbers.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec import metrics as M
from metarec._errors import ConfigError
from metarec.algorithms import AlgorithmConfig, adapt_batch, predict_batch
from metarec.algorithms.losses import masked_bce
from metarec.data.table import InteractionTable
from metarec.episodes.pool import TaskPool
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.metrics.select import PRIMARY_METRIC, SELECT_METRIC

__all__ = [
    "evaluate_pool",
    "evaluate_fitted",
    "per_task_metrics",
    "clip_to_scale",
    "PoolScores",
    "select_eval_lr",
    "PRIMARY_METRIC",
    "SELECT_METRIC",
    "check_finite_predictions",
    "metric_selection",
]


_WITHIN = {
    "explicit": ("mae", "rmse", "ndcg"),
    "implicit": ("auc", "ndcg", "hr", "mrr", "logloss"),
}  # metrics defined within a query set of each feedback kind
_STANDARD = {
    "explicit": ("mae", "rmse", "ndcg@{k}"),
    "implicit": ("auc", "ndcg@{k}", "hr@{k}", "mrr"),
}


def metric_selection(names: Sequence[str] | None, feedback: str, k: int = 10) -> tuple[str, ...]:
    """The within-query metrics to compute and report for ``metrics.names`` on ``feedback`` data.

    ``names`` empty or ``None``: the standard set (explicit: ``mae, rmse, ndcg@k``; implicit:
    ``auc, ndcg@k, hr@k, mrr``). Otherwise the named metrics, in order, with ``ndcg`` / ``hr``
    named without a cut-off taking ``k``. The primary metric (:data:`PRIMARY_METRIC`: ``mae``
    explicit, ``auc`` implicit) is always kept, first, because validation selects the best
    step with it; a list that omits it gets one warning saying so. A metric not defined within a
    query set of this feedback kind (``auc``, ``hr``, ``mrr``, ``logloss`` need binary labels;
    ``mae``, ``rmse`` need ratings) is a :class:`~metarec._errors.ConfigError`.

    E.g. ``metric_selection(["rmse", "ndcg"], "explicit", 5) == ("mae", "rmse", "ndcg@5")``.
    """
    if feedback not in _WITHIN:
        raise ConfigError(f"feedback={feedback!r}: must be 'explicit' or 'implicit'")
    if not names:
        return tuple(n.format(k=k) for n in _STANDARD[feedback])
    primary = PRIMARY_METRIC[feedback]
    out: list[str] = []
    for name in names:
        base, at, cut = name.partition("@")
        if base not in _WITHIN[feedback]:
            ok = [n.format(k=k) for n in _STANDARD[feedback]]
            need = "binary labels" if feedback == "explicit" else "ratings"
            raise ConfigError(
                f"metrics.names: {name!r} is not defined within a query set of {feedback} feedback "
                f"(it needs {need}); this data supports {', '.join(_WITHIN[feedback])}; e.g. "
                f"--set 'metrics.names=[{', '.join(repr(n).replace(chr(39), chr(34)) for n in ok)}]'"
            )
        full = f"{base}@{cut or k}" if base in ("ndcg", "hr") else base
        if full not in out:
            out.append(full)
    if primary not in out:
        warnings.warn(
            f"metrics.names={list(names)} omits {primary!r}, the metric that selects the best "
            f"validation step on {feedback} feedback; it is computed and reported as well",
            stacklevel=2,
        )
        out.insert(0, primary)
    else:
        out.remove(primary)
        out.insert(0, primary)
    return tuple(out)


def per_task_metrics(
    pred: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    feedback: str,
    k: int,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-task metric values ``{name: (T,)}`` within the query set, of the metrics
    :func:`metric_selection` picks for ``names`` (default: explicit mae, rmse, ndcg@k; implicit
    auc, ndcg@k, hr@k, mrr). ``logloss`` (implicit) is the mean binary cross-entropy of the
    scores read as logits."""
    out: dict[str, torch.Tensor] = {}
    for name in metric_selection(names, feedback, k):
        base, _, cut = name.partition("@")
        if base == "mae":
            out[name] = M.mae(pred, targets, mask)
        elif base == "rmse":
            out[name] = M.rmse(pred, targets, mask)
        elif base == "ndcg":
            out[name] = M.ndcg_at_k(pred, targets, mask, int(cut))
        elif base == "hr":
            out[name] = M.hr_at_k(pred, targets, mask, int(cut))
        elif base == "mrr":
            out[name] = M.mrr(pred, targets, mask)
        elif base == "auc":
            out[name] = M.auc(pred, targets, mask)
        else:  # logloss
            ll = masked_bce(pred.double(), targets.double(), mask)
            out[name] = torch.where(mask.any(dim=-1), ll, torch.full_like(ll, float("nan")))
    return out


def check_finite_predictions(pred: torch.Tensor, mask: torch.Tensor, how: str) -> None:
    """Refuse query predictions ``(T, N)`` that are not finite where ``mask`` is set: the
    adaptation (``how``: its settings, for the message) diverged, and clipping to the rating
    scale would hide it.

    Raises:
        ConfigError: naming how many tasks diverged, the settings and what to lower.
    """
    bad = (~torch.isfinite(pred) & mask).any(dim=1)
    if bool(bad.any()):
        raise ConfigError(
            f"evaluation: the adapted predictions of {int(bad.sum())} of {pred.shape[0]} task(s) are not "
            f"finite: the adaptation diverged ({how}); lower algorithm.inner_lr (algorithm.eval_lr when "
            "set), algorithm.inner_steps or train.outer_lr, then train again (--overwrite replaces the run)"
        )


def clip_to_scale(pred: torch.Tensor, table: InteractionTable) -> torch.Tensor:
    """Explicit-feedback predictions clipped to the table's rating scale (others unchanged)."""
    scale = table.rating_scale
    if table.feedback == "explicit" and scale is not None:
        return pred.clamp(scale[0], scale[1])
    return pred


class PoolScores:
    """Per-task metric values and query predictions of a pool, gathered batch by batch.

    Every pool evaluator (meta-learners, popularity, the bench's ranking evaluation, the
    cross-domain methods) adds one batch of tasks at a time and ends with :meth:`result`, so they
    all return the same keys and flag degenerate results the same way.
    """

    def __init__(self) -> None:
        self._per: dict[str, list[np.ndarray]] = {}
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._masks: list[torch.Tensor] = []

    def add(
        self,
        values: Mapping[str, torch.Tensor],
        pred: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor,
    ) -> None:
        """One batch: per-task ``values`` ``{metric: (T,)}`` and its query ``pred``/``targets``/``mask`` ``(T, N)``."""
        for name, v in values.items():
            self._per.setdefault(name, []).append(v.detach().double().cpu().numpy())
        self._preds.append(pred.detach().double().cpu())
        self._targets.append(targets.detach().double().cpu())
        self._masks.append(mask.detach().cpu())

    def per_task(self) -> dict[str, np.ndarray]:
        """``{metric: float64 (T,)}`` over every batch added, in order."""
        return {name: np.concatenate(v) for name, v in self._per.items()}

    def result(
        self, n_tasks: int, k: int, *, adapt_s: float = 0.0, per_task: bool = False
    ) -> dict[str, Any]:
        """``{metric: mean over tasks, "n_tasks", "adapt_ms_per_task", "flags"}`` (+ ``"per_task"``)."""
        arrays = self.per_task()
        out: dict[str, Any] = {name: M.mean_over_tasks(v.tolist()) for name, v in arrays.items()}
        out["n_tasks"] = n_tasks
        out["adapt_ms_per_task"] = 1000.0 * adapt_s / max(n_tasks, 1)
        width = max(x.shape[1] for x in self._preds)

        def cat(xs: list[torch.Tensor], fill: float | bool) -> torch.Tensor:
            return torch.cat(
                [torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill) for x in xs]
            )

        out["flags"] = M.degenerate_flags(
            cat(self._preds, 0.0), cat(self._targets, 0.0), cat(self._masks, False), k=k
        )
        if per_task:
            out["per_task"] = arrays
        return out


def evaluate_pool(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    algo: AlgorithmConfig,
    table: InteractionTable,
    pool: TaskPool,
    sampler_config: SamplerConfig,
    *,
    state: Mapping[str, torch.Tensor] | None = None,
    steps: int | None = None,
    lr: float | None = None,
    max_tasks: int | None = None,
    batch_size: int = 256,
    k: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
    return_per_task: bool = False,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Adapt to every task's support (``steps`` inner steps, default the algorithm's) and score
    its query.

    Returns:
        ``{metric: mean over tasks, "n_tasks", "flags": [...], "adapt_ms_per_task"}`` and, with
        ``return_per_task``, ``"per_task": {metric: np.ndarray}``. Explicit predictions are
        clipped to the table's rating scale before scoring. The metrics are those
        :func:`metric_selection` picks for ``names`` (a scenario's ``metrics.names``; the
        primary metric always among them).

    Example:
        >>> import metarec as mr
        >>> from metarec.data.synthetic import make_synthetic
        >>> from metarec.episodes.splits import random_split
        >>> table = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10)
        >>> model = mr.build_model("melu", table, embedding_dim=4, hidden=[8])
        >>> params = dict(model.named_parameters())
        >>> algo = mr.AlgorithmConfig("maml", inner_steps=1, inner_lr=0.1)
        >>> res = evaluate_pool(model, params, algo, table, splits.pools["meta-test"],
        ...                     mr.SamplerConfig(n_support=3, n_query=5), names=["mae", "rmse"])
        >>> res["n_tasks"], sorted(k for k in res if k not in ("flags", "adapt_ms_per_task"))
        (12, ['mae', 'n_tasks', 'rmse'])
        >>> bool(res["rmse"] >= res["mae"] > 0)
        True
    """
    dtype = next(iter(params.values())).dtype
    sampler = TaskSampler(table, pool, sampler_config, seed=seed, device=device, dtype=dtype)
    n = len(pool) if max_tasks is None else min(max_tasks, len(pool))
    order = np.arange(n)
    scores = PoolScores()
    adapt_s = 0.0
    for start in range(0, n, batch_size):
        b = sampler.batch(order[start : start + batch_size])
        t0 = time.perf_counter()
        fast = adapt_batch(algo, model, params, b.support, steps, lr, state=state)
        adapt_s += time.perf_counter() - t0
        with torch.no_grad():
            p = predict_batch(model, params, fast, b.query.users, b.query.items)
            check_finite_predictions(
                p,
                b.query.mask,
                f"inner learning rate {lr if lr is not None else algo.inner_lr}, "
                f"{steps if steps is not None else algo.inner_steps} step(s)",
            )
            p = clip_to_scale(p, table)
        scores.add(
            per_task_metrics(p, b.query.targets, b.query.mask, table.feedback, k, names),
            p,
            b.query.targets,
            b.query.mask,
        )
    return scores.result(n, k, adapt_s=adapt_s, per_task=return_per_task)


def evaluate_fitted(
    fitted: Any,
    table: InteractionTable,
    pool: TaskPool,
    sampler_config: SamplerConfig,
    *,
    steps: int | None = None,
    lr: float | None = None,
    max_tasks: int | None = None,
    batch_size: int = 256,
    k: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    return_per_task: bool = False,
    names: Sequence[str] | None = None,
    check_finite: bool = True,
) -> dict[str, Any]:
    """Adapt any method of the interface (:class:`metarec.methods.Fitted`) to every task's
    support and score its query: ``fitted.adapt(support, steps=, lr=).score(query.users,
    query.items)`` per batch of ``batch_size`` tasks; explicit predictions are clipped to the
    rating scale. The one evaluation of every method (training's meta-val checks, ``metarec
    train``'s test metrics, the benchmark's curves and ``--tune`` trials).

    Same sampler, seed and batch size as :func:`evaluate_pool` (so the same query sets), same
    metrics (``names``) and return value. ``check_finite=False`` lets non-finite predictions
    through (their metrics are NaN: a training loop's candidate that diverged is then not
    kept) instead of raising.

    Example:
        >>> from metarec.data.synthetic_personal import make_taste_table
        >>> from metarec.episodes.splits import random_split
        >>> from metarec.methods.popularity import PopularityMethod
        >>> from metarec.methods import FitData
        >>> table = make_taste_table(n_users=30, n_items=20, per_user=8, seed=0)
        >>> splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=3, min_interactions=5)
        >>> fitted = PopularityMethod().fit(FitData(table, splits))
        >>> ev = evaluate_fitted(fitted, table, splits.pools["meta-test"], SamplerConfig(n_support=2, n_query=3))
        >>> sorted(k for k in ev if k in ("mae", "rmse", "n_tasks"))
        ['mae', 'n_tasks', 'rmse']
    """
    sampler = TaskSampler(table, pool, sampler_config, seed=seed, device=device, dtype=dtype)
    n = len(pool) if max_tasks is None else min(max_tasks, len(pool))
    order = np.arange(n)
    scores = PoolScores()
    adapt_s = 0.0
    for start in range(0, n, batch_size):
        b = sampler.batch(order[start : start + batch_size])
        t0 = time.perf_counter()
        adapted = fitted.adapt(b.support, steps=steps, lr=lr)
        adapt_s += time.perf_counter() - t0
        with torch.no_grad():
            p = adapted.score(b.query.users, b.query.items).to(dtype)
            if check_finite:
                check_finite_predictions(
                    p,
                    b.query.mask,
                    f"steps={steps if steps is not None else 'default'}, lr={lr if lr is not None else 'default'}",
                )
            p = clip_to_scale(p, table)
        scores.add(
            per_task_metrics(p, b.query.targets, b.query.mask, table.feedback, k, names),
            p,
            b.query.targets,
            b.query.mask,
        )
    return scores.result(n, k, adapt_s=adapt_s, per_task=return_per_task)


def select_eval_lr(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    algo: AlgorithmConfig,
    table: InteractionTable,
    val_pool: TaskPool,
    sampler_config: SamplerConfig,
    lrs: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1),
    *,
    steps: int | None = None,
    max_tasks: int = 256,
    k: int = 10,
) -> tuple[float, dict[float, float]]:
    """Pick the adaptation learning rate on **validation** tasks (e.g. for plain fine-tuning,
    whose rate is not meta-learned). Returns ``(best_lr, {lr: primary metric})``; the primary
    metric is MAE (explicit, lower is better) or AUC (implicit, higher is better)."""
    metric, sign = SELECT_METRIC[table.feedback]
    scores = {}
    for lr in lrs:
        try:
            ev = evaluate_pool(
                model,
                params,
                algo,
                table,
                val_pool,
                sampler_config,
                steps=steps,
                lr=lr,
                max_tasks=max_tasks,
                k=k,
            )
        except ConfigError:  # this rate diverges: never chosen
            scores[lr] = float("nan")
            continue
        scores[lr] = float(ev[metric])
    finite = {lr: v for lr, v in scores.items() if np.isfinite(v)}
    best = max(finite, key=lambda lr: sign * finite[lr]) if finite else lrs[0]
    return best, scores
