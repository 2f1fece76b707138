"""Episode tensors as the engine's entry points take them (:mod:`metarec.algorithms.meta`):
checks of batches, sets and parameter dicts; task groups (support-size buckets, chunks); the
trimming of all-padding columns."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.algorithms.buckets import bucket_tasks
from metarec.config.algorithm import AlgorithmConfig
from metarec.episodes.batch import EpisodeBatch, EpisodeSet

__all__: list[str] = []

Params = Mapping[str, torch.Tensor]
Grads = dict[str, torch.Tensor]


def _groups(cfg: AlgorithmConfig, batch: EpisodeBatch) -> list[torch.Tensor]:
    """Task index groups: by support size (``cfg.buckets``; ``cfg.sort_tasks``), then chunks."""
    T = batch.n_tasks
    lengths = batch.support.mask.sum(dim=1)
    if cfg.buckets > 1:
        groups = bucket_tasks(lengths, cfg.buckets)
    elif cfg.sort_tasks:
        groups = [torch.argsort(lengths, stable=True)]
    else:
        groups = [torch.arange(T, device=lengths.device)]
    size = cfg.chunk_size or T
    return [g[i : i + size] for g in groups for i in range(0, g.shape[0], size)]


def _trim(part: EpisodeBatch) -> EpisodeBatch:
    """``part`` without the trailing columns that are padding in every task (support and query
    separately; at least one column is kept)."""
    return EpisodeBatch(_trim_set(part.support), _trim_set(part.query), part.units, part.domains)


def _trim_set(s: EpisodeSet) -> EpisodeSet:
    used = s.mask.any(dim=0).nonzero()
    width = max(int(used.max()) + 1 if used.numel() else 1, 1)
    if width == s.mask.shape[1]:
        return s
    r = None if s.rows is None else s.rows[:, :width]
    lq = None if s.logq is None else s.logq[:, :width]
    return EpisodeSet(
        s.users[:, :width], s.items[:, :width], s.targets[:, :width], s.mask[:, :width], r, lq
    )


def _tensors(s: EpisodeSet) -> tuple[torch.Tensor, ...]:
    """``(users, items, targets, mask)``, and ``logq`` when the set has one (what a vmapped task
    function takes; :func:`_set` rebuilds the set)."""
    base = (s.users, s.items, s.targets, s.mask)
    return base if s.logq is None else (*base, s.logq)


def _set(t: tuple[torch.Tensor, ...]) -> EpisodeSet:
    """The :class:`EpisodeSet` of :func:`_tensors`' tuple (one task's, under ``vmap``)."""
    users, items, targets, mask = t[:4]
    return EpisodeSet(users, items, targets, mask, logq=t[4] if len(t) > 4 else None)


def _concat(a: EpisodeSet, b: EpisodeSet) -> EpisodeSet:
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb):  # one side has logq: the other's entries get no correction (0)
        ta, tb = _tensors(_with_logq(a)), _tensors(_with_logq(b))
    return _set(tuple(torch.cat([x, y], dim=-1) for x, y in zip(ta, tb, strict=True)))


def _with_logq(s: EpisodeSet) -> EpisodeSet:
    if s.logq is not None:
        return s
    return EpisodeSet(s.users, s.items, s.targets, s.mask, s.rows, torch.zeros_like(s.targets))


def _check_batch(batch: EpisodeBatch) -> None:
    if not isinstance(batch, EpisodeBatch):
        raise ConfigError(
            f"batch: expected an EpisodeBatch, got {type(batch).__name__}; build one with the task sampler"
        )
    _check_set(batch.support, "batch.support")
    _check_set(batch.query, "batch.query")


def _check_set(s: EpisodeSet, arg: str) -> None:
    shapes = {
        name: tuple(t.shape)
        for name, t in zip(("users", "items", "targets", "mask", "logq"), _tensors(s), strict=False)
    }
    if len(set(shapes.values())) != 1 or len(shapes["users"]) != 2:
        raise ConfigError(
            f"{arg}: users, items, targets, mask (and logq) must share one (T, N) shape, got {shapes}"
        )
    if s.mask.dtype != torch.bool:
        raise ConfigError(
            f"{arg}.mask: dtype {s.mask.dtype}, expected torch.bool; pass mask.bool()"
        )


def _check_params(model: nn.Module, params: Params) -> None:
    names = [k for k, _ in model.named_parameters()]
    missing = [k for k in names if k not in params]
    extra = [k for k in params if k not in set(names)]
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise ConfigError(
            f"params: {what} ({len(missing)} missing, {len(extra)} unexpected); params must hold "
            f"exactly the model's parameter names; pass params = dict(model.named_parameters())"
        )
