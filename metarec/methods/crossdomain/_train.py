"""Shared training plumbing of the cross-domain methods: the pointwise loss, and epochs with
validation selection run by the one outer loop (:func:`metarec.train.outer.outer_loop`, one
step per epoch)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metarec.train.log import TrainingLog
from metarec.train.outer import Step, Validation, outer_loop

__all__ = ["point_loss", "train_selected", "stage_log", "Validate"]

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
    desc: str = "epochs",
) -> dict[str, Any]:
    """Run ``epochs`` epochs; after each, score ``validate()`` and keep the best weights.

    ``run_epoch(epoch)`` trains one epoch and returns its mean training loss. With a
    ``validate``, the state of ``modules`` at the best validation score is restored at the end
    and training stops after ``patience`` epochs without improvement.

    Returns:
        ``{"best_epoch", "best_val", "history": [{"epoch", "loss", "val"}...]}``
        (``best_epoch`` is 1-based; without ``validate`` it is the last epoch).
    """
    snapshot: list[dict[str, torch.Tensor]] | None = None

    def keep_best(at: int) -> None:
        nonlocal snapshot
        snapshot = [copy.deepcopy(m.state_dict()) for m in modules]

    def check() -> Validation:
        assert validate is not None
        score = float(validate())
        return Validation(score, {"val": score})

    st = outer_loop(
        lambda i: Step(float(run_epoch(i + 1))),
        steps=epochs,
        val_every=1,
        validate=None if validate is None else check,
        keep_best=keep_best,
        patience=patience if validate is not None else None,
        desc=desc,
        unit="epoch",
    )
    if snapshot is not None:
        for m, s in zip(modules, snapshot, strict=False):
            m.load_state_dict(s)
    history = [
        {"epoch": r["step"], "loss": r["loss"], **({"val": r["val"]["val"]} if "val" in r else {})}
        for r in st.rows
    ]
    return {
        "best_epoch": st.best_step if validate is not None and st.best_step else epochs,
        "best_val": st.best_score if validate is not None else None,
        "history": history,
        "stopped_early": st.stopped_early,
    }


def stage_log(log: Mapping[str, Any], metric: str, sign: float, seconds: float) -> TrainingLog:
    """The :class:`TrainingLog` of a method's selected stage (its last one with meta-val
    selection: the mapping, the bridge, fine-tuning or the target MF), from the logs the fitters
    return; the meta-val values are given back their sign (``metric``, e.g. MAE)."""
    stage: Mapping[str, Any] = next(
        (log[k] for k in ("mapping", "bridge", "finetune", "target_mf") if k in log), log
    )
    history = list(stage.get("history") or [])
    rows = []
    for h in history:
        row: dict[str, Any] = {"step": int(h["epoch"]), "loss": float(h["loss"])}
        if "val" in h and h["val"] is not None:
            row["val"] = {metric: sign * float(h["val"])}
        rows.append(row)
    best = stage.get("best_val")
    best_step = int(stage.get("best_epoch") or 0) if history else 0
    best_val = {metric: sign * float(best)} if best is not None and math.isfinite(best) else {}
    return TrainingLog(
        steps=len(history),
        best_step=best_step,
        stopped_early=bool(stage.get("stopped_early", False)),
        seconds=seconds,
        budget=None,
        metric=metric,
        best_val=best_val,
        unit="epoch",
        rows=tuple(rows),
    )
