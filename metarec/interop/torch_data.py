"""Tasks as a ``torch.utils.data.IterableDataset``: each item is one meta-batch.

    ds = TaskDataset(table, splits.pools[splits.train], SamplerConfig(n_support=5), meta_batch=32, steps=1000, seed=0)
    for batch in DataLoader(ds, batch_size=None, num_workers=2):   # EpisodeBatch, (tasks, N) tensors
        loss, grads = meta_loss_and_grads(cfg, model, params, batch)

``batch_size=None`` (the meta-batch is already batched). With ``num_workers > 0`` each worker
samples with its own seed ``seed + 1000 * worker_id`` and yields its share of ``steps``, so the
run is reproducible for a fixed number of workers. ``steps=None`` iterates over the pool once in
order (evaluation: every task exactly once, ``meta_batch`` tasks per item).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from metarec._errors import ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeBatch
from metarec.episodes.pool import TaskPool
from metarec.episodes.sampler import SamplerConfig, TaskSampler

__all__ = ["TaskDataset"]


class TaskDataset(IterableDataset):
    """Meta-batches of ``meta_batch`` tasks from ``pool`` (see the module docstring).

    Args:
        table, pool, config: as for :class:`~metarec.episodes.sampler.TaskSampler`.
        meta_batch: tasks per item.
        steps: items to yield (sampled with replacement across items, as the outer loop does);
            ``None``: one ordered pass over the pool.
        seed: the sampler's seed.
        dtype: the targets' dtype.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> from metarec.data.synthetic import make_synthetic
        >>> from metarec.episodes.splits import random_split
        >>> table = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10)
        >>> ds = TaskDataset(table, splits.pools[splits.train], SamplerConfig(n_support=3, n_query=5),
        ...                  meta_batch=8, steps=2, seed=0)
        >>> [tuple(b.support.users.shape) for b in DataLoader(ds, batch_size=None)]
        [(8, 3), (8, 3)]
        >>> evaluation = TaskDataset(table, splits.pools["meta-test"], SamplerConfig(n_support=3, n_query=5),
        ...                          meta_batch=5)
        >>> len(evaluation), [b.n_tasks for b in evaluation]   # 12 tasks, each once, in order
        (3, [5, 5, 2])
    """

    def __init__(
        self,
        table: InteractionTable,
        pool: TaskPool,
        config: SamplerConfig,
        *,
        meta_batch: int = 32,
        steps: int | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for arg, v in (("meta_batch", meta_batch), ("steps", steps)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(
                    f"{arg}={v!r}: must be an int >= 1; e.g. TaskDataset(..., {arg}=32)"
                )
        if len(pool) == 0:
            raise ConfigError(
                "pool: holds no task; pass a non-empty pool (e.g. splits.pools[splits.train])"
            )
        self.table, self.pool, self.config = table, pool, config
        self.meta_batch, self.steps, self.seed, self.dtype = meta_batch, steps, seed, dtype

    def __len__(self) -> int:
        return self.steps if self.steps is not None else -(-len(self.pool) // self.meta_batch)

    def __iter__(self) -> Iterator[EpisodeBatch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        sampler = TaskSampler(
            self.table, self.pool, self.config, seed=self.seed + 1000 * wid, dtype=self.dtype
        )
        if self.steps is None:  # one ordered pass; worker w takes every nw-th chunk
            starts = range(0, len(self.pool), self.meta_batch)
            for j, s in enumerate(starts):
                if j % nw == wid:
                    yield sampler.batch(np.arange(s, min(s + self.meta_batch, len(self.pool))))
            return
        for j in range(self.steps):
            if j % nw == wid:
                yield sampler.sample(self.meta_batch)
