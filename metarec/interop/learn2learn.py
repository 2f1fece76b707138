"""learn2learn interop: metarec tasks and the fast/slow parameter split with
``learn2learn.algorithms.MAML``.

learn2learn is optional and imported only inside :func:`l2l_maml`
(``pip install learn2learn``). The metarec side is plain torch:

* :func:`fast_parameters`: the model's inner-loop parameters (its adapt patterns); freeze the
  others (``requires_grad=False``) so ``MAML.adapt`` updates the fast ones only, as metarec's
  inner loop does;
* :func:`maml_step`: one task's support loss and query loss for a learner returned by
  ``maml.clone()``, from an :class:`~metarec.episodes.batch.EpisodeBatch` row.

Example (with learn2learn installed)::

    maml = l2l_maml(model, lr=0.05)                       # learn2learn.algorithms.MAML
    for t in range(batch.n_tasks):
        learner = maml.clone()
        support_loss, query_loss = maml_step(learner, batch, t, steps=3)
        query_loss.backward()
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.algorithms.losses import LOSSES
from metarec.episodes.batch import EpisodeBatch
from metarec.models.base import model_adapt_patterns, split_params

__all__ = ["fast_parameters", "l2l_maml", "maml_step"]


def fast_parameters(model: nn.Module, *, freeze_slow: bool = True) -> dict[str, nn.Parameter]:
    """The model's inner-loop parameters ``{name: parameter}`` (its adapt patterns; every
    parameter of a plain ``nn.Module``); with ``freeze_slow`` the others get ``requires_grad=False``."""
    fast, slow = split_params(model, model_adapt_patterns(model))
    if freeze_slow:
        for p in slow.values():
            p.requires_grad_(False)
    return fast  # type: ignore[return-value]


def l2l_maml(
    model: nn.Module, lr: float, *, first_order: bool = False, freeze_slow: bool = True
) -> Any:
    """``learn2learn.algorithms.MAML(model, lr, first_order)`` with the slow weights frozen.

    Raises:
        ImportError: learn2learn is not installed (the message says how to install it).
    """
    try:
        import learn2learn as l2l
    except ImportError as e:
        raise ImportError(
            f"l2l_maml needs an importable 'learn2learn' package ({e}); pip install learn2learn"
        ) from None
    fast_parameters(model, freeze_slow=freeze_slow)
    return l2l.algorithms.MAML(model, lr=lr, first_order=first_order, allow_unused=True)


def maml_step(
    learner: Any, batch: EpisodeBatch, task: int, *, steps: int = 1, loss: str = "mse"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` calls of ``learner.adapt(support_loss)`` on task ``task`` of ``batch``, then
    the query loss: ``(last support loss, query loss)``. ``learner`` is anything with
    ``adapt(loss)`` and ``__call__(users, items)`` (a ``MAML.clone()``)."""
    if not 0 <= task < batch.n_tasks:
        raise ConfigError(
            f"task={task!r}: the batch has {batch.n_tasks} tasks; pass 0 <= task < {batch.n_tasks}"
        )
    fn = LOSSES[loss]
    s, q = batch.support.select(slice(task, task + 1)), batch.query.select(slice(task, task + 1))
    sup = fn(learner(s.users, s.items), s.targets, s.mask).sum()
    for _ in range(steps):
        learner.adapt(sup)
        sup = fn(learner(s.users, s.items), s.targets, s.mask).sum()
    return sup, fn(learner(q.users, q.items), q.targets, q.mask).sum()
