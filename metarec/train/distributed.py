"""Data-parallel meta-training on ``torch.distributed``: one global meta-batch split over ranks.

Launch any training run with ``torchrun`` (one or several machines)::

    torchrun --nproc-per-node 2 -m metarec train synthetic-cold-start --out RUN
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 \\
        --nproc-per-node 4 -m metarec train SCENARIO --out RUN        # and --node-rank 1 on the other

How a step runs on ``W`` ranks (:class:`DistContext`, used by :func:`metarec.train.loop.train`):

1. every rank draws the same global meta-batch of ``algorithm.meta_batch`` tasks (same sampler
   seed, same random stream) and keeps its own contiguous, disjoint slice of the tasks
   (:meth:`DistContext.shard`); drawing is vectorised numpy, cheap next to the meta-gradient;
2. each rank computes the meta-loss and meta-gradients of its slice;
3. one all-reduce (gloo on CPU, NCCL on CUDA) sums ``n_r * g_r`` and ``n_r`` over ranks, where
   ``n_r = sum_t w_t`` is the rank's count of tasks with a real query
   (:func:`~metarec.algorithms.task_weights`), so every rank holds the meta-gradient of the whole
   global meta-batch, ``sum_r n_r g_r / sum_r n_r``: equal (up to float summation order) to one
   process training on the same global meta-batch;
4. every rank takes the same optimiser step, so the weights stay identical without a broadcast.

Only rank 0 writes the run directory (config, metrics log, checkpoints, test metrics); the
other ranks write into a private scratch folder that is removed at the end
(:meth:`DistContext.run_dir`). Resume (``--resume``) restores every rank from rank 0's
checkpoint, so resuming is exact (the run directory must be visible to every node, e.g. a shared
file system). Validation runs on every rank (the same numbers), so early stopping agrees.

A rank that dies, or a collective that does not complete within ``METAREC_DIST_TIMEOUT``
seconds (default 300), makes the other ranks raise :class:`DistributedError` naming the step;
``torchrun`` then stops the whole job with a non-zero exit status instead of hanging.

Limit: with dropout (random masks drawn per task) ranks draw from their own random streams, so
the run is not bit-equal to a single process and its resume is not bit-exact.
"""

from __future__ import annotations

import atexit
import datetime
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metarec._errors import ConfigError
from metarec.algorithms import AlgorithmConfig, task_weights
from metarec.episodes.batch import EpisodeBatch

__all__ = ["DistContext", "DistributedError", "init", "world_from_env"]

_ENV_TIMEOUT = "METAREC_DIST_TIMEOUT"


class DistributedError(RuntimeError):
    """A collective failed: another rank died, or it did not answer within the timeout."""


@dataclass
class DistContext:
    """This process's place in a data-parallel run (``world == 1``: a plain single process).

    Attributes:
        rank, world, local_rank: from torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``.
        device: the device this rank trains on (``cuda:LOCAL_RANK`` for a CUDA run).
        owns_group: whether :func:`init` created the process group (and :meth:`close` ends it).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False
    step: int = 0
    _scratch: Path | None = None

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the run directory (rank 0)."""
        return self.rank == 0

    def shard(self, batch: EpisodeBatch) -> EpisodeBatch:
        """This rank's disjoint slice of the global meta-batch's tasks: ``T`` tasks -> about ``T / world``.

        Raises:
            ConfigError: the global meta-batch has fewer tasks than there are ranks.
        """
        if self.world == 1:
            return batch
        T = batch.n_tasks
        if T < self.world:
            raise ConfigError(
                f"algorithm.meta_batch={T}: a data-parallel run on {self.world} ranks needs at least one task per "
                f"rank; pass algorithm.meta_batch >= {self.world} (e.g. --set algorithm.meta_batch={32 * self.world})"
            )
        lo, hi = self.rank * T // self.world, (self.rank + 1) * T // self.world
        return batch.select(slice(lo, hi))

    def all_reduce(
        self,
        cfg: AlgorithmConfig,
        loss: torch.Tensor,
        grads: Mapping[str, torch.Tensor],
        local: EpisodeBatch,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The global meta-loss and meta-gradients from this rank's ``(loss, grads)`` on ``local``.

        Every rank must call it once per step with the same keys (one flat all-reduce).

        Raises:
            DistributedError: another rank died or did not answer within the timeout.
        """
        self.step += 1
        if self.world == 1:
            return loss, dict(grads)
        import torch.distributed as dist

        names = list(grads)
        n = task_weights(cfg, local).sum().to(loss.dtype)
        flat = torch.cat(
            [(grads[k] * n).reshape(-1).to(loss.dtype) for k in names]
            + [(loss * n).reshape(1), n.reshape(1)]
        )
        flat = flat.to(self.device)
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        except (
            Exception
        ) as e:  # gloo / NCCL raise RuntimeError subclasses on a lost peer or a timeout
            raise DistributedError(
                f"rank {self.rank} of {self.world}: the all-reduce of the meta-gradients at step {self.step} failed "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); another rank has died or stopped "
                f"answering (timeout {_timeout_s():.0f} s, {_ENV_TIMEOUT}); the run stops here; continue it from the "
                "last checkpoint with --resume"
            ) from e
        total = flat[-1].clamp_min(1.0)
        out, pos = {}, 0
        for k in names:
            g = grads[k]
            out[k] = (flat[pos : pos + g.numel()].reshape(g.shape) / total).to(
                device=g.device, dtype=g.dtype
            )
            pos += g.numel()
        return (flat[-2] / total).to(loss.device), out

    def run_dir(self, out: str | Path, resume: bool) -> Path:
        """Where this rank writes: ``out`` on rank 0; a scratch folder on the others (removed at
        exit), which on ``resume`` starts from a copy of rank 0's run files and checkpoints."""
        out = Path(out)
        if self.is_main:
            return out
        self._scratch = Path(tempfile.mkdtemp(prefix=f"metarec-rank{self.rank}-"))
        atexit.register(shutil.rmtree, self._scratch, ignore_errors=True)
        if resume:
            for name in ("manifest.json", "config.json", "metrics.jsonl", "checkpoints"):
                src = out / name
                if src.is_dir():
                    shutil.copytree(src, self._scratch / name)
                elif src.exists():
                    shutil.copy2(src, self._scratch / name)
        return self._scratch

    def close(self) -> None:
        """End the process group if :func:`init` created it (idempotent)."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                # Every rank reaches here before any tears down: rank 0 hosts the rendezvous
                # store, and a rank still destroying its group when rank 0 exits aborts in
                # gloo's background thread ("terminate called without an active exception").
                dist.barrier()
                dist.destroy_process_group()
            self.owns_group = False


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from torchrun's environment (``(0, 1, 0)`` when absent)."""

    def get(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r}: must be an integer (set by torchrun); unset it or launch with torchrun"
            ) from None

    world = get("WORLD_SIZE", 1)
    rank, local = get("RANK", 0), get("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(
            f"RANK={rank}, WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE; launch with torchrun"
        )
    return rank, world, local


def init(device: torch.device) -> DistContext:
    """The :class:`DistContext` of this process; joins (or reuses) the process group when
    launched by ``torchrun`` with ``WORLD_SIZE > 1``.

    Args:
        device: the run's device (``train.device`` resolved); a CUDA run trains rank ``r`` on
            ``cuda:LOCAL_RANK`` with NCCL, a CPU run uses gloo.
    """
    rank, world, local = world_from_env()
    if world == 1:
        return DistContext(device=device)
    import torch.distributed as dist

    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local}: only {torch.cuda.device_count()} CUDA device(s) on this machine; pass "
                f"--nproc-per-node <= {torch.cuda.device_count()} to torchrun"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=_timeout_s()),
        )
        owns = True
    if not os.environ.get("TQDM_DISABLE") and rank != 0:
        os.environ["TQDM_DISABLE"] = "1"  # one progress bar per run (rank 0)
    return DistContext(rank=rank, world=world, local_rank=local, device=device, owns_group=owns)


def _timeout_s() -> float:
    raw = os.environ.get(_ENV_TIMEOUT, "300")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(
            f"{_ENV_TIMEOUT}={raw!r}: must be a number of seconds > 0; e.g. {_ENV_TIMEOUT}=300"
        )
    return value
