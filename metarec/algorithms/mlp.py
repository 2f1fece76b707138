"""Analytic inner loop for MLP decision layers: batched matmuls, no nested autograd.

For a model whose inner-loop parameters are the layers of a ReLU MLP on top of a fixed encoder
(MeLU: ``decide(x) = head(relu(... relu(W_1 x + b_1) ...))``, the embeddings meta-learned only),
the inner gradient of the masked support loss has a closed form (back-propagation written out),
so a whole meta-batch adapts with a handful of batched matrix products per inner step instead of
one ``torch.func.grad`` per task under ``vmap``. With ``p`` the predictions ``(T, N)``,
``e = dL/dp`` (mse: ``2 (p - y) m / n``; bce: ``(sigmoid(p) - y) m / n``), ``a_l`` the layer
inputs and ``z_l`` the pre-activations:

``g_head = e^T a_L``, ``d_L = (e w_head) * [z_L > 0]``, ``g_W_l = d_l^T a_{l-1}``,
``g_b_l = sum_rows d_l``, ``d_{l-1} = (d_l W_l) * [z_{l-1} > 0]``.

Every expression is an ordinary differentiable torch op of the weights, so ordinary autograd of
the query loss through the unrolled steps is second-order MAML exactly (the ``create_graph=True``
semantics; the ReLU indicator has zero derivative, as in autograd's own double backward);
``first_order=True`` detaches the inner gradients. The first inner step and the encodings run
on weights shared by every task, so they are one large matrix product over all rows.

:func:`mlp_spec` says whether a model and loss qualify (MeLU without dropout, ``mse``/``bce``,
inner-loop parameters among the decision layers and head); otherwise the engine uses the general
``torch.func`` path (:mod:`metarec.algorithms.inner`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metarec.algorithms.losses import LOSSES

__all__ = ["MLPSpec", "mlp_spec", "mlp_forward", "mlp_trajectory", "mlp_query_losses"]

Params = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class MLPSpec:
    """The decision MLP's parameter names: hidden ReLU layers ``(weight, bias)`` and the head."""

    layers: tuple[tuple[str, str], ...]
    head: tuple[str, str]


def mlp_spec(model: nn.Module, fast: Params, loss: str) -> MLPSpec | None:
    """The :class:`MLPSpec` when the analytic path computes ``model``'s inner loop exactly, else ``None``.

    Qualifies: a :class:`~metarec.models.melu.MeLU` (``decide`` not overridden) without dropout,
    loss ``mse`` or ``bce``, and every inner-loop parameter (``fast``) a decision-layer or head
    parameter (the encoder then runs once per task).
    """
    from metarec.models.melu import MeLU

    if not isinstance(model, MeLU) or type(model).decide is not MeLU.decide or model.config.dropout:
        return None
    if loss not in ("mse", "bce") or model.head.out_features != 1:
        return None
    layers = tuple(
        (f"decision.{i}.weight", f"decision.{i}.bias") for i in range(len(model.decision))
    )
    head = ("head.weight", "head.bias")
    allowed = {n for pair in (*layers, head) for n in pair}
    if not fast or any(k not in allowed for k in fast):
        return None
    return MLPSpec(layers, head)


def _linear(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (T, N, i)`` by a shared ``(o, i)`` or per-task ``(T, o, i)`` weight, plus bias -> ``(T, N, o)``."""
    if w.dim() == 2:
        if b.dim() == 1:
            return F.linear(a, w, b)  # one GEMM over all T * N rows
        return F.linear(a, w) + b.unsqueeze(-2)
    return torch.baddbmm(b.unsqueeze(-2), a, w.transpose(-1, -2))  # (T, N, o)


def _bias(z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return z + (b if b.dim() == 1 else b.unsqueeze(-2))  # shared (o,) | per task (T, o)


def _forward(
    spec: MLPSpec, w: Params, x: torch.Tensor, z0: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Predictions ``(T, N)``, layer inputs ``[a_0 .. a_L]`` and pre-activations ``[z_1 .. z_L]``
    (``z0``: the first layer's pre-activation, computed already)."""
    acts, zs = [x], []
    a = x
    for i, (wn, bn) in enumerate(spec.layers):
        z = z0 if (i == 0 and z0 is not None) else _linear(a, w[wn], w[bn])  # (T, N, o)
        a = torch.relu(z)
        zs.append(z)
        acts.append(a)
    hw, hb = spec.head
    return _linear(a, w[hw], w[hb]).squeeze(-1), acts, zs  # (T, N)


def _dloss_coef(
    target: torch.Tensor, mask: torch.Tensor, loss: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, c)`` with ``d L_t / d pred = (f(pred) - y) * c`` for the masked mean loss
    (:mod:`metarec.algorithms.losses`): mse ``f(p) = p``, ``c = 2 m / n``; bce ``f = sigmoid``,
    ``c = m / n``; ``y`` is the target with padding set to 0 (NaN padding stays harmless)."""
    n = mask.sum(dim=-1, keepdim=True).to(dtype).clamp_min(1.0)  # (T, 1)
    y = torch.where(mask, target.to(dtype), torch.zeros((), dtype=dtype, device=target.device))
    return y, mask.to(dtype) * ((2.0 if loss == "mse" else 1.0) / n)


def _dloss(pred: torch.Tensor, yc: tuple[torch.Tensor, torch.Tensor], loss: str) -> torch.Tensor:
    """``d L_t / d pred`` ``(T, N)`` from :func:`_dloss_coef`'s ``(y, c)``."""
    y, c = yc
    return ((pred if loss == "mse" else torch.sigmoid(pred)) - y) * c


def _grads(
    spec: MLPSpec,
    w: Params,
    acts: list[torch.Tensor],
    zs: list[torch.Tensor],
    e: torch.Tensor,
    need: set[str],
    want_d0: bool = False,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Per-task inner gradients ``{name: (T, *shape)}`` of the names in ``need``, and (``want_d0``)
    the first layer's back-propagated error ``d_1 (T, N, o)``."""
    g: dict[str, torch.Tensor] = {}
    hw, hb = spec.head
    if hw in need:
        g[hw] = torch.bmm(e.unsqueeze(1), acts[-1])  # (T, 1, N) @ (T, N, H) -> (T, 1, H)
    if hb in need:
        g[hb] = e.sum(dim=-1, keepdim=True)  # (T, 1)
    used = [i for i, (wn, bn) in enumerate(spec.layers) if wn in need or bn in need]
    lowest = 0 if want_d0 else min(used, default=None)
    if lowest is None:
        return g, None
    d = e.unsqueeze(-1) * w[hw]  # (T, N, 1) * (1, H) | (T, 1, H) -> (T, N, H)
    for i in range(len(spec.layers) - 1, lowest - 1, -1):
        d = torch.where(
            zs[i] > 0, d, 0.0
        )  # ReLU' (a where is several times faster than a bool multiply)
        wn, bn = spec.layers[i]
        if wn in need:
            g[wn] = torch.bmm(d.transpose(1, 2), acts[i])  # (T, o, N) @ (T, N, i) -> (T, o, i)
        if bn in need:
            g[bn] = d.sum(dim=1)  # (T, o)
        if i > lowest:
            d = torch.matmul(d, w[wn])  # (T, N, o) @ (o, i) | (T, o, i) -> (T, N, i)
    return g, d


def _rate(
    k: str, step: int, lr: float, lrs: Params | None, per_step_lrs: Params | None
) -> torch.Tensor | float:
    if per_step_lrs is not None:
        return per_step_lrs[k][step]
    if lrs is not None:
        return lrs[k]
    return lr


def _step(p: torch.Tensor, g: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """``p - alpha * g`` (one fused kernel for a float rate)."""
    return torch.add(p, g, alpha=-alpha) if isinstance(alpha, float) else p - alpha * g


def _inner(
    spec: MLPSpec,
    fast: Params,
    slow: Params,
    xs: torch.Tensor,
    ys: torch.Tensor,
    ms: torch.Tensor,
    steps: int,
    lr: float,
    first_order: bool,
    lrs: Params | None,
    per_step_lrs: Params | None,
    loss: str,
    xq: torch.Tensor | None = None,
    every_step: bool = False,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, list[torch.Tensor]]:
    """The inner loop. Returns ``(weights, D, query predictions)``: the adapted weights other
    than a kernelised first-layer weight, ``D`` (see below; ``None`` when not kernelised) and the
    query predictions ``(T, Nq)`` after the last step (``every_step``: after each step).

    Kernelised first layer: when its weight ``W`` adapts with a scalar (or per-step scalar) rate,
    ``W_k = W - D_k^T X`` with ``D_k = sum_{j<k} alpha_j d_j`` ``(T, Ns, o)``, so its
    pre-activation on any rows ``R`` is ``R W^T - (R X^T) D_k + b_k``: the wide product
    ``R W^T`` runs once, with the shared weight, over every row of the batch, and each step costs
    an ``(Ns x Ns)`` Gram product instead of two ``(Ns x F)`` ones. ``first_order`` detaches the
    right-hand ``X`` of the Gram matrix as it detaches the inner gradient ``d^T X``.
    """
    w0n, b0n = spec.layers[0] if spec.layers else ("", "")
    kern = w0n in fast and lrs is None
    ns = xs.shape[1]
    rows = xs if xq is None else torch.cat([xs, xq], dim=1)  # (T, Ns [+ Nq], F)
    if kern:
        z_shared = F.linear(rows, fast[w0n])  # (T, Ns+Nq, o): one GEMM, weight shared by every task
        gram = torch.bmm(
            rows, (xs.detach() if first_order else xs).transpose(1, 2)
        )  # (T, Ns+Nq, Ns)
    cur = {k: v for k, v in fast.items() if not (kern and k == w0n)}
    need = set(cur)
    big_d: torch.Tensor | None = None
    preds: list[torch.Tensor] = []
    yc = _dloss_coef(ys, ms, loss, xs.dtype)

    def first(part: slice, w: Params) -> torch.Tensor | None:
        if not kern:
            return None
        z = _bias(z_shared[:, part], w[b0n])
        return z if big_d is None else z - torch.bmm(gram[:, part], big_d)  # (T, n, o)

    for step in range(steps):
        w = {**slow, **cur}
        pred, acts, zs = _forward(spec, w, xs, first(slice(0, ns), w))
        g, d0 = _grads(spec, w, acts, zs, _dloss(pred, yc, loss), need, want_d0=kern)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        cur = {
            k: _step(p, g[k], _rate(k, step, lr, lrs, per_step_lrs)) for k, p in cur.items()
        }  # -> (T, *shape)
        if kern:
            assert d0 is not None
            d0 = d0.detach() if first_order else d0
            a0 = _rate(w0n, step, lr, lrs, per_step_lrs)
            big_d = a0 * d0 if big_d is None else _step(big_d, d0, -a0)  # D + alpha * d
        if xq is not None and (every_step or step == steps - 1):
            w = {**slow, **cur}
            preds.append(_forward(spec, w, xq, first(slice(ns, None), w))[0])
    return cur, big_d, preds


def mlp_trajectory(
    spec: MLPSpec,
    fast: Params,
    slow: Params,
    x: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    lr: float,
    *,
    first_order: bool = False,
    lrs: Params | None = None,
    per_step_lrs: Params | None = None,
    loss: str = "mse",
) -> dict[str, torch.Tensor]:
    """The adapted fast weights ``{name: (T, *shape)}`` after ``steps`` inner steps, every task at once.

    Args:
        spec: from :func:`mlp_spec`.
        fast, slow: shared weights (``fast`` adapt; ``slow``: the other decision-MLP weights).
        x: ``(T, N, F)`` support encodings (``model.encode`` of the support sets).
        targets, mask: ``(T, N)``.
        steps, lr, first_order, lrs, per_step_lrs, loss: as :func:`metarec.algorithms.adapt`.
    """
    cur, big_d, _ = _inner(
        spec, fast, slow, x, targets, mask, steps, lr, first_order, lrs, per_step_lrs, loss
    )
    w0n = spec.layers[0][0] if spec.layers else ""
    if w0n in fast and w0n not in cur:
        w0 = fast[w0n]
        cur[w0n] = w0 if big_d is None else w0 - torch.bmm(big_d.transpose(1, 2), x)  # (T, o, F)
    return {k: cur[k] for k in fast}


def mlp_query_losses(
    spec: MLPSpec,
    fast: Params,
    slow: Params,
    support: tuple[torch.Tensor, ...],
    query: tuple[torch.Tensor, ...],
    steps: int,
    lr: float,
    *,
    first_order: bool = False,
    lrs: Params | None = None,
    per_step_lrs: Params | None = None,
    loss: str = "mse",
    every_step: bool = False,
) -> list[torch.Tensor]:
    """Per-task query losses ``[(T,)]`` after the last inner step (``every_step``: after each).

    ``support``, ``query``: ``(x (T, N, F), targets (T, N), mask (T, N))``.
    """
    xs, ys, ms = support
    xq, yq, mq = query
    _, _, preds = _inner(
        spec,
        fast,
        slow,
        xs,
        ys,
        ms,
        steps,
        lr,
        first_order,
        lrs,
        per_step_lrs,
        loss,
        xq,
        every_step,
    )
    return [LOSSES[loss](p, yq, mq) for p in preds]


def mlp_forward(spec: MLPSpec, w: Params, x: torch.Tensor) -> torch.Tensor:
    """Predictions ``(T, N)`` of the decision MLP with weights ``w`` (shared or ``(T, *shape)``) on ``x (T, N, F)``."""
    return _forward(spec, w, x)[0]
