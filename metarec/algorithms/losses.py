"""Masked per-task losses over padded ``(..., N)`` predictions.

Every loss takes ``pred``, ``target`` ``(..., N)`` and a boolean ``mask`` ``(..., N)`` and
returns one value per leading index ``(...)``: the mean over the real (``mask=True``) entries.
A padded entry contributes exactly nothing, to the value and to every gradient, whatever its
prediction or target (targets of padded entries are replaced before use, so even NaN padding is
harmless); a set with no real entry has loss 0.

* ``mse``: ``sum_m (pred - target)^2 / n_real`` (explicit ratings).
* ``bce``: binary cross-entropy with logits, ``sum_m softplus(pred) - target * pred / n_real``.
* ``bpr``: Bayesian personalised ranking over every (positive, negative) pair of the set,
  ``-sum_{i pos, j neg} log sigmoid(pred_i - pred_j) / n_pairs``; positives are real entries with
  ``target > 0.5``, negatives real entries with ``target <= 0.5``; no pair gives 0.
* ``softmax``: sampled softmax with the logQ correction (Yi et al., "Sampling-bias-corrected
  neural modeling for large corpus item recommendations", RecSys 2019): every real entry's logit
  is corrected by the log-probability that the negative sampler draws its item,
  ``o_j = pred_j - logq_j``, and each positive competes with the set's negatives,
  ``sum_{i pos} [log(exp(o_i) + sum_{j neg} exp(o_j)) - o_i] / n_pos``; positives and negatives
  as for ``bpr``; no positive gives 0, a positive with no negative contributes 0. ``logq``
  ``(..., N)`` (``None``: a uniform sampler, a constant correction, which cancels) comes from
  :attr:`metarec.episodes.batch.EpisodeSet.logq`.

:func:`set_loss_of` applies a loss by name to a set's predictions (it passes the set's ``logq``
to the losses that take one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from metarec.algorithms.ranking_losses import sampled_bpr, sampled_softmax

__all__ = [
    "LOSSES",
    "CORRECTED",
    "masked_mse",
    "masked_bce",
    "masked_bpr",
    "masked_softmax",
    "apply_loss",
    "set_loss_of",
]


def _clean(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    return torch.where(mask, pred, zero), torch.where(mask, target.to(pred.dtype), zero)


def _count(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return mask.sum(dim=-1).to(dtype).clamp_min(1.0)  # (...)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real entries: ``(..., N) x3 -> (...)``."""
    p, t = _clean(pred, target, mask)
    return ((p - t) ** 2).sum(dim=-1) / _count(mask, pred.dtype)


def masked_bce(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits over real entries: ``(..., N) x3 -> (...)``."""
    p, t = _clean(pred, target, mask)
    per = F.binary_cross_entropy_with_logits(p, t, reduction="none")  # (..., N)
    return torch.where(mask, per, torch.zeros_like(per)).sum(dim=-1) / _count(mask, pred.dtype)


def _split(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A labelled set -> its cleaned predictions, positive mask and negative mask."""
    p, t = _clean(pred, target, mask)
    return p, mask & (t > 0.5), mask & (t <= 0.5)


def masked_bpr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BPR over all real (positive, negative) pairs: ``(..., N) x3 -> (...)``; the set form of
    :func:`~metarec.algorithms.ranking_losses.sampled_bpr` (a set is its own positives and
    negatives)."""
    p, pos, neg = _split(pred, target, mask)
    return sampled_bpr(p, pos, p, neg)


def masked_softmax(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    logq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax with the logQ correction over real entries (see the module docstring):
    ``(..., N) x3 [, logq (..., N)] -> (...)``; the set form of
    :func:`~metarec.algorithms.ranking_losses.sampled_softmax`.

    Example:
        >>> pred = torch.tensor([[2.0, 0.0, 1.0]])        # a positive, two negatives
        >>> target, mask = torch.tensor([[1.0, 0.0, 0.0]]), torch.ones(1, 3, dtype=torch.bool)
        >>> round(masked_softmax(pred, target, mask).item(), 4)   # log(e^2 + e^0 + e^1) - 2
        0.4076
    """
    p, pos, neg = _split(pred, target, mask)
    lq = None if logq is None else torch.where(mask, logq.to(p.dtype), torch.zeros_like(p))
    return sampled_softmax(p, pos, p, neg, lq, lq)


Loss = Callable[..., torch.Tensor]

LOSSES: dict[str, Loss] = {
    "mse": masked_mse,
    "bce": masked_bce,
    "bpr": masked_bpr,
    "softmax": masked_softmax,
}
"""Loss name -> masked loss function ``(pred, target, mask) -> (...)`` (``AlgorithmConfig.loss``
picks one); the :data:`CORRECTED` ones also take ``logq``."""

CORRECTED = ("softmax",)
"""The losses that take the sampler's log-probabilities (``logq``)."""


def apply_loss(
    name: str,
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    logq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss ``name`` over ``(..., N)`` tensors: ``(...)``; ``logq`` goes to the
    :data:`CORRECTED` losses (the others have no use for it)."""
    if name in CORRECTED and logq is not None:
        return LOSSES[name](pred, target, mask, logq)
    return LOSSES[name](pred, target, mask)


def set_loss_of(name: str, pred: torch.Tensor, data: Any) -> torch.Tensor:
    """Loss ``name`` of predictions ``pred (..., N)`` over an
    :class:`~metarec.episodes.batch.EpisodeSet` ``data`` (its ``targets`` and ``mask``, and its
    ``logq`` for the :data:`CORRECTED` losses): ``(...)``."""
    return apply_loss(name, pred, data.targets, data.mask, getattr(data, "logq", None))
