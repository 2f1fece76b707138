"""The inner loop, written for ONE task and vmapped over the task axis by the callers.

An inner step is plain gradient descent on the masked support loss,
``fast <- fast - alpha * grad_fast L_support(fast, slow)``, with ``alpha`` the scalar ``lr``,
a per-entry tensor (Meta-SGD, ``lrs[name]`` shaped like the parameter) or a per-step scalar
(MAML++, ``per_step_lrs[name][step]``). The gradient comes from :func:`torch.func.grad`, so the
result stays differentiable in ``fast``, ``slow`` and the rates (second order, the
``create_graph=True`` semantics); ``first_order=True`` detaches each inner gradient
(FOMAML: the query gradient then flows to the initial weights as through the identity).

``features``: for a model that splits into ``encode``/``decide`` (see
:mod:`metarec.models.base`) with no inner-loop parameter in its encoder, the caller may pass
the task's ``encode`` output; the losses then run ``decide`` alone on it, the same numbers as the
full forward pass without recomputing the encoder at every step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, grad

from metarec.algorithms.losses import set_loss_of
from metarec.episodes.batch import EpisodeSet
from metarec.models.base import staged_call

__all__ = ["set_loss", "adapt", "adapt_trajectory"]

Params = Mapping[str, torch.Tensor]


def set_loss(
    model: nn.Module,
    fast: Params,
    slow: Params,
    data: EpisodeSet,
    loss: str = "mse",
    *,
    features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked loss of ``model`` with weights ``fast | slow`` on one set: ``(...,N) -> (...)``.

    ``features`` ``(..., N, F)``: ``model.encode(data.users, data.items)`` computed already;
    only ``model.decide`` runs (``data.users`` / ``data.items`` are then unused).
    """
    if features is not None:
        pred = staged_call(model, {**slow, **fast}, "decide", (features,))  # (..., N)
    else:
        pred = functional_call(
            model, (dict(fast), dict(slow)), (data.users, data.items)
        )  # (..., N)
    return set_loss_of(loss, pred, data)


def adapt_trajectory(
    model: nn.Module,
    fast: Params,
    slow: Params,
    support: EpisodeSet,
    steps: int,
    lr: float,
    *,
    first_order: bool = False,
    lrs: Params | None = None,
    per_step_lrs: Params | None = None,
    loss: str = "mse",
    features: torch.Tensor | None = None,
) -> list[dict[str, torch.Tensor]]:
    """The fast weights after each of ``steps`` inner steps (``steps`` dicts; ``[]`` if 0).

    ``support`` holds one task: ``users``, ``items``, ``targets``, ``mask`` of shape ``(N,)``
    (under ``vmap`` the task axis is hidden). See :func:`adapt` for the arguments.
    """

    def support_loss(f: dict[str, torch.Tensor]) -> torch.Tensor:
        return set_loss(model, f, slow, support, loss, features=features)

    cur = dict(fast)
    out: list[dict[str, torch.Tensor]] = []
    for step in range(steps):
        g = grad(support_loss)(cur)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        new = {}
        for k, p in cur.items():
            if per_step_lrs is not None:
                alpha: torch.Tensor | float = per_step_lrs[k][step]
            elif lrs is not None:
                alpha = lrs[k]
            else:
                alpha = lr
            new[k] = p - alpha * g[k]
        cur = new
        out.append(cur)
    return out


def adapt(
    model: nn.Module,
    fast: Params,
    slow: Params,
    support: EpisodeSet,
    steps: int,
    lr: float,
    *,
    first_order: bool = False,
    lrs: Params | None = None,
    per_step_lrs: Params | None = None,
    loss: str = "mse",
    features: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Adapt the fast weights to one task's support set.

    Args:
        model: the model (its own parameters are not used: weights come from the dicts).
        fast: inner-loop parameters ``{name: tensor}`` (the initialisation).
        slow: the other parameters (held fixed in the inner loop).
        support: one task's support set, tensors ``(N,)``.
        steps: inner steps (0 returns ``fast``).
        lr: scalar inner learning rate (ignored when ``lrs`` or ``per_step_lrs`` is given).
        first_order: detach the inner gradients (FOMAML / Reptile).
        lrs: Meta-SGD rates ``{name: tensor shaped like fast[name]}``.
        per_step_lrs: MAML++ rates ``{name: (>= steps,)}``.
        loss: a :data:`~metarec.algorithms.losses.LOSSES` name.
        features: the support set's ``model.encode`` output ``(N, F)`` when no fast weight is
            read by the encoder (see :func:`set_loss`); ``None`` runs the full model.

    Returns:
        The adapted fast weights (same names and shapes as ``fast``).

    Example (a meta-batch, tasks vmapped)::

        adapted = torch.func.vmap(
            lambda u, i, t, m: adapt(model, fast, slow, EpisodeSet(u, i, t, m), 5, 0.01)
        )(s.users, s.items, s.targets, s.mask)          # {name: (T, *shape)}
    """
    traj = adapt_trajectory(
        model,
        fast,
        slow,
        support,
        steps,
        lr,
        first_order=first_order,
        lrs=lrs,
        per_step_lrs=per_step_lrs,
        loss=loss,
        features=features,
    )
    return traj[-1] if traj else dict(fast)
