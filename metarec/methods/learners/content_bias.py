"""``content-bias``: a rating baseline whose cold items are placed by their content (text first).

The prediction for user ``u`` (a task) and item ``i`` is

``r̂(u, i) = mu + b_i + o_u``

* ``mu``: the mean meta-train rating;
* ``b_i``: the item's bias. A ridge regression ``c(i) = x_i · w`` from the item's content
  ``x_i`` (its text embeddings, each L2-normalised, indicators of its categorical values with
  small vocabularies, its numeric features and a constant) to the items' meta-train mean
  deviations from ``mu`` is fitted on the meta-train items (weighted by ``n_i / (n_i + m)``,
  ``m =`` :data:`PRIOR` pseudo ratings). An item's bias is its own mean deviation shrunk towards
  the content prediction, ``b_i = (n_i dev_i + m c(i)) / (n_i + m)``: a warm item keeps (mostly)
  its mean, a cold item (``n_i = 0``) gets ``c(i)``, what its text and attributes predict
  (MetaEmb's idea, Pan et al. SIGIR 2019, as a closed-form linear prior);
* ``o_u``: the task's offset, adapted from its support as the shrunk mean residual
  ``o_u = sum_s (r_s - mu - b_s) / (|S| + lambda)``. Cold items in the support move it too, so
  a user's support of new items also corrects a shift of the new items as a group.

The ridge strength ``alpha``, the text columns' weight (their share against the attributes,
:data:`TEXT_WEIGHTS`) and the offset shrinkage ``lambda`` are selected on **meta-val only**:
meta-train items are cut into 5 folds, each fold's content prediction comes from a ridge fitted
on the other folds (the held-out items are scored as if cold, ``b_i = c(i)``), and the meta-val
tasks' queries are scored with those biases; the combination with the lowest meta-val MAE wins.
Explicit feedback only.

Example:
    >>> m = build_method("content-bias", scenario)              # doctest: +SKIP
    >>> fitted = m.fit(FitData(table, splits))                   # doctest: +SKIP
    >>> fitted.adapt(batch.support).score(q.users, q.items)      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.methods.base import FitData, MethodTags, register_method
from metarec.train.log import TrainingLog

__all__ = [
    "PRIOR",
    "ALPHAS",
    "SHRINKS",
    "TEXT_WEIGHTS",
    "content_matrix",
    "weighted_ridge",
    "task_offsets",
    "ContentBiasMethod",
    "ContentBiasFitted",
    "ContentBiasAdapted",
    "make_content_bias",
]

PRIOR = 5.0
"""Pseudo ratings at the content prediction added to every item's mean deviation."""
ALPHAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
"""Ridge strengths tried on meta-val."""
SHRINKS = (0.0, 1.0, 3.0, 10.0)
"""Offset shrinkages (pseudo support rows at residual 0) tried on meta-val."""
TEXT_WEIGHTS = (1.0, 2.0, 4.0)
"""Scales of the text columns tried on meta-val (the text's share against the attributes: a
weight ``g`` divides the ridge penalty on the text coefficients by ``g^2``)."""
MAX_VOCAB = 64
"""Categorical features with more values (directors, actors) are left out of the content."""


def content_matrix(
    table: InteractionTable, max_vocab: int = MAX_VOCAB, *, text_weight: float = 1.0
) -> np.ndarray:
    """The items' content ``float64 (n_items, F)``: each text feature's embeddings L2-normalised
    (times ``text_weight``), 0/1 indicators of the values of every categorical feature with at
    most ``max_vocab`` values, the numeric features and a constant 1. An item without features has
    only the constant."""
    f = table.item_features
    blocks = [np.ones((table.n_items, 1))]
    if f is None:
        return blocks[0]
    for name in sorted(f.text):
        t = f.text[name].astype(np.float64)
        norm = np.linalg.norm(t, axis=1, keepdims=True)
        blocks.append(np.where(norm > 0, text_weight * t / np.maximum(norm, 1e-12), 0.0))
    for name in sorted(f.categorical):
        size = len(f.vocabs[name])
        if size - 1 > max_vocab:
            continue
        codes = f.categorical[name]  # (n_items, L)
        onehot = np.zeros((table.n_items, size))
        r, c = np.nonzero(codes)
        onehot[r, codes[r, c]] = 1.0
        blocks.append(onehot[:, 1:])
    if f.numeric.shape[1]:
        blocks.append(f.numeric.astype(np.float64))
    return np.concatenate(blocks, axis=1)


def weighted_ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """``argmin_b sum_k w_k (x_k · b - y_k)^2 + alpha |b|^2``: ``(F,)``."""
    xw = x * w[:, None]
    return np.linalg.solve(x.T @ xw + alpha * np.eye(x.shape[1]), xw.T @ y)


def task_offsets(support: EpisodeSet, mu: float, bias: torch.Tensor, shrink: float) -> torch.Tensor:
    """``(T,)`` offsets ``sum_s (r_s - mu - b_s) / (|S| + shrink)`` over each task's support."""
    m = support.mask.to(bias.dtype)
    resid = (support.targets.to(bias.dtype) - mu - bias[support.items]) * m  # (T, N)
    return resid.sum(1) / (m.sum(1) + shrink).clamp_min(1e-12)


@dataclass
class ContentBiasAdapted:
    """``score(users, items) = mu + bias[items] + offset[task]``."""

    mu: float
    bias: torch.Tensor  # (n_items,)
    offsets: torch.Tensor  # (T,)

    @property
    def n_tasks(self) -> int:
        return int(self.offsets.shape[0])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` item indices -> ``(T, N)`` predicted ratings (``users`` unused)."""
        if items.dim() != 2 or items.shape[0] != self.n_tasks:
            raise ConfigError(
                f"score(items {tuple(items.shape)}): expected (T, N) with T={self.n_tasks} (one "
                "row per adapted task)"
            )
        b = self.bias.to(items.device)
        return self.mu + b[items] + self.offsets.to(items.device, b.dtype).unsqueeze(1)

    def select(self, rows: torch.Tensor) -> ContentBiasAdapted:
        return ContentBiasAdapted(self.mu, self.bias, self.offsets[rows.to(self.offsets.device)])

    @classmethod
    def concat(cls, parts: list[ContentBiasAdapted]) -> ContentBiasAdapted:
        return cls(parts[0].mu, parts[0].bias, torch.cat([p.offsets for p in parts]))


class ContentBiasFitted:
    """The fitted biases: ``mu``, ``bias (n_items,)`` float64, the selected ``alpha`` / ``shrink``."""

    name = "content-bias"

    def __init__(
        self,
        table: InteractionTable,
        mu: float,
        bias: torch.Tensor,
        alpha: float,
        shrink: float,
        val_mae: float | None = None,
        text_weight: float = 1.0,
    ) -> None:
        self.table, self.mu, self.bias = table, float(mu), bias
        self.alpha, self.shrink, self.val_mae = float(alpha), float(shrink), val_mae
        self.text_weight = float(text_weight)
        self.training_log = TrainingLog()  # closed form: no steps
        self.cold_bias: torch.Tensor | None = None
        """After :meth:`ContentBiasMethod.fit`: each item's bias as if it were cold ``(n_items,)``,
        the content prediction, out of fold for the meta-train items (not saved)."""

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> ContentBiasAdapted:
        """Offsets from ``support`` (``steps`` / ``lr`` do not apply: the offset is closed-form)."""
        return ContentBiasAdapted(
            self.mu, self.bias, task_offsets(support, self.mu, self.bias, self.shrink)
        )

    def config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "shrink": self.shrink,
            "text_weight": self.text_weight,
            "val_mae": self.val_mae,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "bias": self.bias.detach().cpu(),
            "mu": torch.tensor(self.mu, dtype=torch.float64),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        got, mu = state.get("bias"), state.get("mu")
        if got is None or mu is None or tuple(got.shape) != tuple(self.bias.shape):
            raise CheckpointError(
                f"state_dict: 'bias' has shape {None if got is None else tuple(got.shape)} (and "
                f"'mu' {'missing' if mu is None else 'present'}), the catalogue needs "
                f"{tuple(self.bias.shape)}; the weights belong to another run; re-train"
            )
        self.bias, self.mu = got.to(torch.float64), float(mu)

    @classmethod
    def build(
        cls, name: str, config: Mapping[str, Any], table: InteractionTable
    ) -> ContentBiasFitted:
        """An empty shell of ``config`` (fill it with :meth:`load_state_dict`)."""
        return cls(
            table,
            0.0,
            torch.zeros(table.n_items, dtype=torch.float64),
            float(config.get("alpha", 1.0)),
            float(config.get("shrink", 0.0)),
            config.get("val_mae"),
            float(config.get("text_weight", 1.0)),
        )


class ContentBiasMethod:
    """``content-bias`` (see the module docstring).

    Args:
        sampler: how meta-val tasks are cut (the scenario's protocol).
        alphas, shrinks, text_weights: the candidates selected on meta-val.
        folds: meta-train item folds of the out-of-fold content predictions.
    """

    name = "content-bias"

    def __init__(
        self,
        sampler: SamplerConfig | None = None,
        *,
        alphas: Sequence[float] = ALPHAS,
        shrinks: Sequence[float] = SHRINKS,
        text_weights: Sequence[float] = TEXT_WEIGHTS,
        folds: int = 5,
    ) -> None:
        for arg, vals in (("alphas", alphas), ("shrinks", shrinks), ("text_weights", text_weights)):
            if not len(vals) or any(not np.isfinite(v) or v < 0 for v in vals):
                raise ConfigError(
                    f"content-bias: {arg}={list(vals)}: need a non-empty list of finite values >= "
                    f"0; e.g. {arg}=[1, 10]"
                )
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"content-bias: folds={folds!r}: need an int >= 2; e.g. folds=5")
        self.sampler = sampler or SamplerConfig()
        self.alphas, self.shrinks, self.folds = tuple(alphas), tuple(shrinks), folds
        self.text_weights = tuple(text_weights)

    def fit(self, data: FitData) -> ContentBiasFitted:
        table, splits = data.table, data.splits
        if table.feedback != "explicit":
            raise ConfigError(
                "content-bias: predicts ratings (explicit feedback); this table is implicit; use "
                "popularity"
            )
        rows = splits.pools[splits.train].rows
        it, r = table.items[rows], table.ratings[rows].astype(np.float64)
        mu = float(r.mean())
        n = np.bincount(it, minlength=table.n_items).astype(np.float64)
        dev = np.zeros(table.n_items)
        np.divide(np.bincount(it, weights=r, minlength=table.n_items), n, out=dev, where=n > 0)
        dev = np.where(n > 0, dev - mu, 0.0)
        rated = np.nonzero(n > 0)[0]
        w = n[rated] / (n[rated] + PRIOR)
        val = splits.pools[splits.val]
        best: tuple[float, float, float, float, np.ndarray] | None = None
        fold = np.random.default_rng(data.seed).integers(0, self.folds, size=rated.shape[0])
        has_text = bool(table.item_features is not None and table.item_features.text)
        for tw in self.text_weights if has_text else (1.0,):
            x = content_matrix(table, text_weight=tw)
            for alpha in self.alphas:
                oof = _out_of_fold(x, rated, dev, w, fold, alpha, self.folds)
                b = torch.as_tensor(oof, dtype=torch.float64)
                for shrink in self.shrinks:
                    v = _pool_mae(table, val, self.sampler, mu, b, shrink, data.seed)
                    if best is None or v < best[0]:
                        best = (v, alpha, shrink, tw, oof)
        assert best is not None
        v, alpha, shrink, tw, oof = best
        x = content_matrix(table, text_weight=tw)
        c = x @ weighted_ridge(x[rated], dev[rated], w, alpha)
        bias = (n * dev + PRIOR * c) / (n + PRIOR)  # warm: own mean; cold: content prediction
        bias[0] = 0.0
        out = ContentBiasFitted(
            table,
            mu,
            torch.as_tensor(bias, dtype=torch.float64),
            alpha,
            shrink,
            None if not np.isfinite(v) else v,
            tw,
        )
        cold = np.where(n > 0, oof, c)  # meta-train items out of fold, the others from the full fit
        cold[0] = 0.0
        out.cold_bias = torch.as_tensor(cold, dtype=torch.float64)
        if (
            out.val_mae is not None
        ):  # closed form: no steps, the selected combination's meta-val MAE
            out.training_log = TrainingLog(metric="mae", best_val={"mae": out.val_mae})
        return out


def _out_of_fold(
    x: np.ndarray,
    rated: np.ndarray,
    dev: np.ndarray,
    w: np.ndarray,
    fold: np.ndarray,
    alpha: float,
    folds: int,
) -> np.ndarray:
    """``(n_items,)``: each rated item's content prediction from a ridge fitted on the other
    folds (the item scored as if cold); 0 for the other items."""
    oof = np.zeros(x.shape[0])
    for k in range(folds):
        fit, held = fold != k, fold == k
        if held.any() and fit.any():
            beta = weighted_ridge(x[rated[fit]], dev[rated[fit]], w[fit], alpha)
            oof[rated[held]] = x[rated[held]] @ beta
    return oof


def _pool_mae(
    table: InteractionTable,
    pool: Any,
    sampler: SamplerConfig,
    mu: float,
    bias: torch.Tensor,
    shrink: float,
    seed: int,
) -> float:
    """Mean over the pool's tasks of the query MAE (clipped to the rating scale)."""
    if len(pool) == 0:
        return float("nan")
    lo, hi = table.rating_scale or (-np.inf, np.inf)
    total, count = 0.0, 0
    for b in TaskSampler(table, pool, sampler, seed=seed, dtype=torch.float64).iterate(512):
        p = (
            mu + bias[b.query.items] + task_offsets(b.support, mu, bias, shrink).unsqueeze(1)
        ).clamp(lo, hi)
        m = b.query.mask.to(torch.float64)
        per = ((p - b.query.targets).abs() * m).sum(1) / m.sum(1).clamp_min(1.0)
        total += float(per[m.sum(1) > 0].sum())
        count += int((m.sum(1) > 0).sum())
    return total / max(count, 1)


def make_content_bias(scenario: Any = None, **settings: Any) -> ContentBiasMethod:
    """``content-bias`` over the scenario's protocol; ``settings``: ``alphas``, ``shrinks``,
    ``text_weights``, ``folds``."""
    unknown = sorted(set(settings) - {"alphas", "shrinks", "text_weights", "folds"})
    if unknown:
        raise ConfigError(
            f"content-bias: unknown setting {unknown[0]!r}; the settings are alphas, shrinks, "
            "text_weights and folds"
        )
    sampler = None
    if scenario is not None:
        from metarec.episodes.build import sampler_config

        sampler = sampler_config(scenario.protocol)
    return ContentBiasMethod(sampler, **settings)


register_method(
    "content-bias",
    make_content_bias,
    loader=ContentBiasFitted.build,
    tags=MethodTags(feedback=("explicit",), family="learner"),
    replace=True,
)
