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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "masked_mse", "masked_bce", "masked_bpr"]


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


def masked_bpr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BPR over all real (positive, negative) pairs: ``(..., N) x3 -> (...)``."""
    p, t = _clean(pred, target, mask)
    pos = mask & (t > 0.5)  # (..., N)
    neg = mask & (t <= 0.5)
    pair = pos.unsqueeze(-1) & neg.unsqueeze(-2)  # (..., N_pos, N_neg)
    diff = p.unsqueeze(-1) - p.unsqueeze(-2)  # (..., N, N): pred_i - pred_j
    diff = torch.where(pair, diff, torch.zeros_like(diff))
    per = torch.where(pair, -F.logsigmoid(diff), torch.zeros_like(diff))
    n_pairs = pair.flatten(-2).sum(dim=-1).to(pred.dtype).clamp_min(1.0)  # (...)
    return per.flatten(-2).sum(dim=-1) / n_pairs


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": masked_mse,
    "bce": masked_bce,
    "bpr": masked_bpr,
}
"""Loss name -> masked loss function (``AlgorithmConfig.loss`` picks one)."""
