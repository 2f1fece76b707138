"""Padded episode tensors: what the task sampler produces and the algorithms consume.

A meta-batch of ``T`` tasks is two :class:`EpisodeSet`\\ s (support and query), each a set of
``(T, N)`` tensors padded to the longest task with a boolean ``mask``; padded positions hold
index 0 (the unknown user/item) and target 0, and every loss masks them out. Models look side
features up by index, so a batch carries only indices and targets: it is small, lives on one
device, and maps directly onto ``torch.func.vmap`` over the task axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EpisodeSet", "EpisodeBatch"]


@dataclass(frozen=True)
class EpisodeSet:
    """One side (support or query) of a batch of tasks.

    Attributes:
        users: ``int64 (T, N)`` encoded user indices.
        items: ``int64 (T, N)`` encoded item indices.
        targets: ``float (T, N)`` ratings, or 0/1 labels for implicit feedback.
        mask: ``bool (T, N)``: True for real interactions, False for padding.
        rows: ``int64 (T, N)`` or ``None``: the interaction-table row of each entry (-1 for
            padding and sampled negatives); used by leakage checks, never by models.
        logq: ``float (T, N)`` or ``None``: the log-probability that the negative sampler draws
            each entry's item (0 for padding), the sampled softmax's logQ correction
            (:func:`metarec.algorithms.losses.masked_softmax`); ``None``: a uniform sampler or
            none (no correction).

    Example:
        Two tasks padded to the longer one (the second has two real interactions):

        >>> s = EpisodeSet(users=torch.tensor([[1, 1, 1], [2, 2, 0]]),
        ...                items=torch.tensor([[3, 4, 5], [3, 6, 0]]),
        ...                targets=torch.tensor([[4.0, 2.0, 5.0], [3.0, 1.0, 0.0]]),
        ...                mask=torch.tensor([[True, True, True], [True, True, False]]))
        >>> s.n_tasks, s.sizes().tolist()
        (2, [3, 2])
        >>> s.select(slice(1, 2)).items.tolist()
        [[3, 6, 0]]
    """

    users: torch.Tensor
    items: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    rows: torch.Tensor | None = None
    logq: torch.Tensor | None = None

    @property
    def n_tasks(self) -> int:
        return int(self.users.shape[0])

    def sizes(self) -> torch.Tensor:
        """Real (unpadded) interactions per task, ``int64 (T,)``."""
        return self.mask.sum(dim=1)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> EpisodeSet:
        t = self.targets.to(device=device, dtype=dtype) if dtype else self.targets.to(device)
        r = None if self.rows is None else self.rows.to(device)
        lq = None if self.logq is None else self.logq.to(device=device, dtype=t.dtype)
        return EpisodeSet(
            self.users.to(device), self.items.to(device), t, self.mask.to(device), r, lq
        )

    def select(self, idx: torch.Tensor | slice) -> EpisodeSet:
        """Tasks ``idx`` (a slice or an index tensor along the task axis)."""
        r = None if self.rows is None else self.rows[idx]
        lq = None if self.logq is None else self.logq[idx]
        return EpisodeSet(
            self.users[idx], self.items[idx], self.targets[idx], self.mask[idx], r, lq
        )

    def with_mask(self, mask: torch.Tensor) -> EpisodeSet:
        """The same entries with another ``mask`` (``bool (T, N)``; e.g. a random part of them)."""
        return EpisodeSet(self.users, self.items, self.targets, mask, self.rows, self.logq)


@dataclass(frozen=True)
class EpisodeBatch:
    """A meta-batch of ``T`` few-shot tasks.

    Attributes:
        support, query: the two :class:`EpisodeSet`\\ s.
        units: ``int64 (T,)``: the task unit of each task (user index, domain index or cohort id).
        domains: ``int64 (T,)``: the domain of each task's interactions (0 when single-domain).

    Example:
        >>> from metarec.data.synthetic import make_synthetic
        >>> from metarec.episodes.sampler import SamplerConfig, TaskSampler
        >>> from metarec.episodes.splits import random_split
        >>> t = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> splits = random_split(t, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10)
        >>> sampler = TaskSampler(t, splits.pools["meta-train"], SamplerConfig(n_support=3, n_query=5))
        >>> b = sampler.sample(8)
        >>> b.n_tasks, tuple(b.support.users.shape), tuple(b.query.users.shape), tuple(b.units.shape)
        (8, (8, 3), (8, 5), (8,))
        >>> [c.n_tasks for c in b.chunks(3)]
        [3, 3, 2]
    """

    support: EpisodeSet
    query: EpisodeSet
    units: torch.Tensor
    domains: torch.Tensor

    @property
    def n_tasks(self) -> int:
        return self.support.n_tasks

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> EpisodeBatch:
        return EpisodeBatch(
            self.support.to(device, dtype),
            self.query.to(device, dtype),
            self.units.to(device),
            self.domains.to(device),
        )

    def select(self, idx: torch.Tensor | slice) -> EpisodeBatch:
        return EpisodeBatch(
            self.support.select(idx), self.query.select(idx), self.units[idx], self.domains[idx]
        )

    def chunks(self, size: int) -> list[EpisodeBatch]:
        """Split the task axis into chunks of at most ``size`` tasks (bounded peak memory)."""
        if size <= 0:
            raise ValueError(f"chunk size={size}: must be >= 1; pass chunk_size >= 1 or None")
        return [self.select(slice(i, i + size)) for i in range(0, self.n_tasks, size)]
