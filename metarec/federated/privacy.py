"""Client-level differential privacy: update clipping and Gaussian noise on the mean.

A client clips its update ``delta = theta_client - theta_global`` to L2 norm ``C`` over all
parameters together (:func:`clip_update`); the server averages ``m`` clipped updates with equal
weights and adds ``N(0, sigma^2)`` with ``sigma = z * C / m`` to every coordinate of the mean
(:func:`noise_std`, :func:`add_noise`), the Gaussian mechanism of DP-FedAvg (McMahan et al.,
2018) with noise multiplier ``z``. This is the calibration of Flower's
``DifferentialPrivacyClientSideFixedClipping`` wrapper; metarec applies it itself because that
wrapper refuses to aggregate a round in which any client failed, and rounds must survive failed
clients here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["update_norm", "clip_update", "noise_std", "add_noise"]


def update_norm(new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of ``new - old`` over every tensor together."""
    sq = sum(float(((new[k].double() - old[k].double()) ** 2).sum()) for k in old)
    return sq**0.5


def clip_update(
    new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor], clip: float
) -> tuple[dict[str, torch.Tensor], float]:
    """``old + delta * min(1, clip / ||delta||)`` and ``||delta||`` before clipping.

    >>> new, norm = clip_update({"w": torch.tensor([3.0, 4.0])}, {"w": torch.zeros(2)}, 1.0)
    >>> new["w"].tolist(), norm
    ([0.6000000238418579, 0.800000011920929], 5.0)
    """
    norm = update_norm(new, old)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return {k: old[k] + (new[k] - old[k]) * scale for k in old}, norm


def noise_std(noise_multiplier: float, clip: float, n_clients: int) -> float:
    """Standard deviation of the noise on the mean of ``n_clients`` clipped updates."""
    return noise_multiplier * clip / max(n_clients, 1)


def add_noise(
    params: Mapping[str, torch.Tensor], std: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``params`` plus i.i.d. ``N(0, std^2)`` noise (drawn from ``generator``)."""
    if std == 0:
        return dict(params)
    return {
        k: v + std * torch.randn(v.shape, generator=generator, dtype=v.dtype)
        for k, v in params.items()
    }
