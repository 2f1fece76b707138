"""Shared training plumbing: the pointwise loss and epoch loops with validation selection."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["point_loss", "train_selected", "Validate"]

Validate = Callable[[], float]
"""Scores the current weights on meta-val; higher is better (the caller applies the sign)."""


def point_loss(pred: torch.Tensor, target: torch.Tensor, feedback: str) -> torch.Tensor:
    """Mean squared error (explicit ratings) or binary cross-entropy with logits (implicit)."""
    if feedback == "explicit":
        return F.mse_loss(pred, target.to(pred.dtype))
    return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype))


def train_selected(
    run_epoch: Callable[[int], float],
    modules: Sequence[nn.Module],
    *,
    epochs: int,
    validate: Validate | None = None,
    patience: int | None = None,
) -> dict[str, Any]:
    """Run ``epochs`` epochs; after each, score ``validate()`` and keep the best weights.

    ``run_epoch(epoch)`` trains one epoch and returns its mean training loss. With a
    ``validate``, the state of ``modules`` at the best validation score is restored at the end
    and training stops after ``patience`` epochs without improvement.

    Returns:
        ``{"best_epoch", "best_val", "history": [{"epoch", "loss", "val"}...]}``
        (``best_epoch`` is 1-based; without ``validate`` it is the last epoch).
    """
    best, best_epoch, since = -math.inf, epochs, 0
    snapshot: list[dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        loss = run_epoch(epoch)
        row: dict[str, float] = {"epoch": epoch, "loss": float(loss)}
        if validate is not None:
            score = float(validate())
            row["val"] = score
            if score > best:
                best, best_epoch, since = score, epoch, 0
                snapshot = [copy.deepcopy(m.state_dict()) for m in modules]
            else:
                since += 1
        history.append(row)
        if patience is not None and since >= patience:
            break
    if snapshot is not None:
        for m, s in zip(modules, snapshot):
            m.load_state_dict(s)
    return {
        "best_epoch": best_epoch,
        "best_val": best if validate is not None else None,
        "history": history,
    }
