"""Input checks shared by the metrics (:mod:`metarec.metrics.per_task`, :mod:`metarec.metrics.degenerate`):
``(T, N)`` shapes and dtypes, finite values, 0/1 labels, the cut-off ``k``."""

from __future__ import annotations

import torch

from metarec._errors import ConfigError

__all__: list[str] = []


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(
            f"k={k!r}: the ranking cutoff k must be a positive integer (k >= 1); "
            "pass k >= 1, e.g. k=10"
        )
    return k


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    # float64 for exact-enough averages; MPS has no float64.
    return torch.float32 if t.device.type == "mps" else torch.float64


def _check_2d(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *, what: str = "scores"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate ``(T, N)`` inputs; return detached float copies with padding zeroed."""
    for name, t in ((what, scores), ("targets", targets), ("mask", mask)):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(
                f"{name} is a {type(t).__name__}: expected a torch.Tensor; wrap it with torch.as_tensor(...)"
            )
    if scores.dim() != 2:
        raise ConfigError(
            f"{what} has shape {tuple(scores.shape)}: expected (T, N) (tasks x padded items); "
            "pass one row per task, e.g. add a task axis with .unsqueeze(0)"
        )
    if targets.shape != scores.shape or mask.shape != scores.shape:
        raise ConfigError(
            f"{what} {tuple(scores.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(mask.shape)}: all three must have the same (T, N) shape; pass the "
            "predictions for the same EpisodeSet whose targets and mask you pass"
        )
    if mask.dtype != torch.bool:
        raise ConfigError(
            f"mask has dtype {mask.dtype}: expected torch.bool (True = real interaction); "
            "pass mask.bool()"
        )
    dt = _work_dtype(scores)
    s = scores.detach().to(dt)
    y = targets.detach().to(device=s.device, dtype=dt)
    m = mask.to(s.device)
    if not bool(torch.isfinite(s[m]).all()):
        raise ConfigError(
            f"{what} contain NaN or infinite values at real (mask=True) positions: metrics are "
            "undefined; check the model for divergence (learning rate, inner steps) before evaluating"
        )
    if not bool(torch.isfinite(y[m]).all()):
        raise ConfigError(
            "targets contain NaN or infinite values at real (mask=True) positions; "
            "clean the interactions or set mask=False there"
        )
    zero = torch.zeros((), dtype=dt, device=s.device)
    return torch.where(m, s, zero), torch.where(m, y, zero), m


def _check_binary(labels: torch.Tensor, mask: torch.Tensor) -> None:
    real = labels[mask]
    if not bool(((real == 0) | (real == 1)).all()):
        bad = real[(real != 0) & (real != 1)][:3].tolist()
        raise ConfigError(
            f"labels contain values other than 0/1 at real positions (e.g. {bad}): this metric "
            "needs implicit-feedback labels; binarize ratings first, e.g. (targets >= 4).float(), "
            "or use ndcg_at_k for graded relevance"
        )


def _nan(like: torch.Tensor) -> torch.Tensor:
    return torch.full_like(like, float("nan"))
