"""The analytic inner loop with its meta-gradient written out: one autograd node per task group.

:mod:`metarec.algorithms.mlp` writes the inner gradient of a ReLU decision MLP in closed form and
lets autograd differentiate the unrolled loop; autograd then records and replays several
hundred small kernels per meta-batch. Here the reverse pass is written out as well (the adjoint
of the inner forward and backward passes, step by step, in reverse), so a whole group of tasks is
one :class:`torch.autograd.Function` whose forward and backward are a few dozen batched matrix
products and ReLU masks per inner step, with the bias and step updates folded into the products
(``baddbmm``). Second order exactly (the ``create_graph=True`` semantics, as autograd of the
closed form); ``first_order`` reduces the reverse pass to the query losses' back-propagation.

Notation (per task, batched over ``T``): hidden layers ``l = 1..L`` with ReLU, the head
``l = L+1`` (one output, no activation), ``a_0`` the encodings, ``z_l`` pre-activations,
``a_l = relu(z_l)``, predictions ``p = z_{L+1}``, ``e = dL/dp`` (see
:func:`~metarec.algorithms.mlp._dloss_coef`). The inner backward pass is ``d_{L+1} = e``,
``u_l = d_l W_l``, ``d_{l-1} = u_l * [a_{l-1} > 0]``, and the step
``W_l <- W_l - alpha d_l^T a_{l-1}``, ``b_l <- b_l - alpha 1^T d_l``. The first layer is
kernelised (see :func:`~metarec.algorithms.mlp._inner`) with its bias folded in:
``z_1 = Z - G D_k`` with ``Z = X W_1^T + b_1`` (one GEMM over every row), ``G = R X^T + 1``
(``R``: the rows evaluated, ``X``: the support encodings) and ``D_k = alpha sum_{j<k} d_1^{(j)}``,
because ``W_1`` moves by ``-alpha d_1^T X`` and ``b_1`` by ``-alpha 1^T d_1``. ``Z`` and ``G``
are computed outside by ordinary autograd, so gradients reach ``W_1``, ``b_1`` and the encoder.

Reverse pass of one inner step ``k`` (adjoints ``W^_l, b^_l`` of the step's output weights,
``D^`` of ``D_{k+1}``; the step's input adjoints start equal to them):

* the update: ``g^_l = -alpha W^_l`` (the adjoint of the inner gradient), ``d^_1 = alpha D^``;
* the inner backward pass, ``l = 2..L+1``: ``u^_l = d^_{l-1} * [a_{l-1} > 0]``,
  ``d^_l = u^_l W_l^T + a_{l-1} g^_{W_l}^T + g^_{b_l}``, ``W^_l += u^_l^T d_l``,
  ``a^_{l-1} += d_l g^_{W_l}``; then ``p^ = d^_{L+1} * c * f'(p)``;
* the inner forward pass, ``l = L+1..2``: ``z^_l = a^_l * [a_l > 0]`` (``z^_{L+1} = p^``),
  ``W^_l += z^_l^T a_{l-1}``, ``b^_l += 1^T z^_l``, ``a^_{l-1} += z^_l W_l``; then
  ``Z^ += z^_1``, ``G^ -= z^_1 D_k^T``, ``D^ -= G^T z^_1``.

Only a scalar inner rate with every decision-MLP parameter adapting is covered
(:func:`fused_applies`); the learned rates (Meta-SGD, MAML++) and partial inner-loop sets use the
autograd path of :mod:`metarec.algorithms.mlp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from metarec.algorithms.losses import LOSSES
from metarec.algorithms.mlp import MLPSpec, _dloss_coef

__all__ = ["fused_applies", "fused_query_losses"]

Params = Mapping[str, torch.Tensor]
_relu_grad = torch.ops.aten.threshold_backward  # (grad, output, 0): grad * [output > 0], one pass


def fused_applies(
    spec: MLPSpec, fast: Params, lrs: Params | None, per_step_lrs: Params | None
) -> bool:
    """Whether :func:`fused_query_losses` computes this inner loop: at least one hidden layer,
    every hidden-layer and head parameter adapting, one scalar rate (no learned rates)."""
    names = {n for pair in (*spec.layers, spec.head) for n in pair}
    return bool(spec.layers) and lrs is None and per_step_lrs is None and set(fast) == names


def _lin(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (T, N, i) W^T + b``: shared ``W (o, i)``, ``b (o,)`` or per task ``(T, o, i)``, ``(T, o)``."""
    if w.dim() == 2:
        return F.linear(a, w, b)  # one GEMM over all T * N rows
    return torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2))  # (T, N, o)


def _mm(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``d (T, N, o) W`` for a shared ``(o, i)`` or per-task ``(T, o, i)`` weight -> ``(T, N, i)``."""
    if w.shape[-2] == 1:  # a one-output layer: an outer product, one broadcast multiply
        return d * (w if w.dim() == 3 else w.unsqueeze(0))
    return torch.matmul(d, w)


def _acc(acc: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if acc is None else acc + x


def _accmm(
    acc: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    """``acc + alpha * a @ b`` (batched), one ``baddbmm`` when ``acc`` exists."""
    if acc is None:
        out = torch.bmm(a, b)
        return out if alpha == 1.0 else out.mul_(alpha)
    return torch.baddbmm(acc, a, b, alpha=alpha)


class _Step:
    """What the reverse pass needs of one inner step: activations, inner errors, weights."""

    __slots__ = ("acts", "deltas", "ws", "d", "f")

    def __init__(
        self,
        acts: list[torch.Tensor],
        deltas: list[torch.Tensor],
        ws: list[torch.Tensor],
        d: torch.Tensor | None,
        f: torch.Tensor,
    ) -> None:
        self.acts, self.deltas, self.ws, self.d, self.f = acts, deltas, ws, d, f


class _Query:
    """A query evaluation: its activations, the weights it used and ``dL_t/dp`` per row."""

    __slots__ = ("acts", "ws", "d", "dp")

    def __init__(
        self,
        acts: list[torch.Tensor],
        ws: list[torch.Tensor],
        d: torch.Tensor | None,
        dp: torch.Tensor,
    ) -> None:
        self.acts, self.ws, self.d, self.dp = acts, ws, d, dp


def _hidden(
    z1: torch.Tensor, ws: list[torch.Tensor], bs: list[torch.Tensor]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Layer inputs ``[a_1 .. a_L]`` and predictions ``(T, N)`` from the first pre-activation."""
    acts = [torch.relu(z1)]
    for j in range(len(ws) - 1):
        acts.append(torch.relu(_lin(acts[-1], ws[j], bs[j])))
    return acts, _lin(acts[-1], ws[-1], bs[-1]).squeeze(-1)


def _first(z0: torch.Tensor, g: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
    """``z_1 = Z - G D`` (``Z`` alone before the first step)."""
    return z0 if d is None else torch.baddbmm(z0, g, d, alpha=-1.0)


def _batched(w: torch.Tensor, t: int) -> torch.Tensor:
    """A shared ``(o, i)`` weight as a ``(T, o, i)`` view (no copy), a per-task one as it is."""
    return w if w.dim() == 3 else w.expand(t, *w.shape)


def _forward(
    opts: dict[str, Any],
    z0: torch.Tensor,
    g: torch.Tensor,
    ws: list[torch.Tensor],
    bs: list[torch.Tensor],
) -> tuple[torch.Tensor, list[_Step], dict[int, _Query]]:
    """The inner loop and the query losses ``(n_out, T)``, with what the reverse pass needs."""
    steps, lr, loss = opts["steps"], opts["lr"], opts["loss"]
    y, c = opts["support"]
    yq, mq = opts["query"]
    ns = y.shape[1]
    z0s, z0q, gs, gq = z0[:, :ns], z0[:, ns:], g[:, :ns], g[:, ns:]
    yq0, cq = _dloss_coef(yq, mq, loss, z0.dtype)
    n = len(ws)
    d: torch.Tensor | None = None
    saved: list[_Step] = []
    queries: dict[int, _Query] = {}
    losses: list[torch.Tensor] = []
    for k in range(steps):
        acts, p = _hidden(_first(z0s, gs, d), ws, bs)
        f = p if loss == "mse" else torch.sigmoid(p)
        delta = ((f - y) * c).unsqueeze(-1)  # (T, Ns, 1): e = dL/dp
        deltas = [delta]
        new_w, new_b = list(ws), list(bs)
        for j in range(n - 1, -1, -1):  # layer j + 2, input acts[j]
            u = _mm(delta, ws[j])  # (T, Ns, i)
            new_w[j] = torch.baddbmm(ws[j], delta.transpose(1, 2), acts[j], alpha=-lr)
            new_b[j] = torch.sub(bs[j], delta.sum(dim=1), alpha=lr)
            delta = _relu_grad(u, acts[j], 0)  # d_{l-1}
            deltas.append(delta)
        deltas.reverse()  # [d_1 .. d_{L+1}]
        if not opts["first_order"]:
            saved.append(_Step(acts, deltas, ws, d, f))
        d = delta * lr if d is None else torch.add(d, delta, alpha=lr)  # D_{k+1} (T, Ns, o1)
        ws, bs = new_w, new_b
        if opts["every_step"] or k == steps - 1:
            qa, pq = _hidden(_first(z0q, gq, d), ws, bs)
            losses.append(LOSSES[loss](pq, yq, mq))
            fq = pq if loss == "mse" else torch.sigmoid(pq)
            queries[k] = _Query(qa, ws, d, (fq - yq0) * cq)
    return torch.stack(losses), saved, queries


def _reverse(
    opts: dict[str, Any],
    g: torch.Tensor,
    saved: list[_Step],
    queries: dict[int, _Query],
    grad: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor], list[torch.Tensor]]:
    """Adjoints of ``Z``, ``G`` (``None``: zero) and of the shared weights and biases, given the
    losses' adjoint ``grad (n_out, T)``."""
    steps, lr, loss = opts["steps"], opts["lr"], opts["loss"]
    c = opts["support"][1]
    ns = c.shape[1]
    gs, gq = g[:, :ns], g[:, ns:]
    T = c.shape[0]
    n = len(next(iter(queries.values())).ws)
    wbar: list[torch.Tensor | None] = [None] * n  # per task (T, o, i): adjoint of W_l after step k
    bbar: list[torch.Tensor | None] = [None] * n
    dbar: torch.Tensor | None = None  # adjoint of D_{k+1}
    z0s_bar = z0q_bar = gs_bar = gq_bar = None
    order = sorted(queries)  # grad[i] belongs to the query evaluation after step order[i]
    for k in range(steps - 1, -1, -1):
        q = queries.get(k)
        if q is not None:  # the query losses after step k: plain back-propagation
            zbar = (grad[order.index(k)].unsqueeze(-1) * q.dp).unsqueeze(-1)  # (T, Nq, 1)
            for j in range(n - 1, -1, -1):
                a = q.acts[j]
                wbar[j] = _accmm(wbar[j], zbar.transpose(1, 2), a)
                bbar[j] = _acc(bbar[j], zbar.sum(dim=1))
                zbar = _relu_grad(_mm(zbar, q.ws[j]), a, 0)
            z0q_bar = _acc(z0q_bar, zbar)
            if q.d is not None:
                gq_bar = _accmm(gq_bar, zbar, q.d.transpose(1, 2), -1.0)
                if not opts["first_order"]:
                    dbar = _accmm(dbar, gq.transpose(1, 2), zbar, -1.0)
        if opts["first_order"]:
            continue  # the inner gradients are constants: the weights' adjoints pass through
        s = saved[k]
        new_w, new_b = list(wbar), list(bbar)
        carry: list[torch.Tensor | None] = [None] * n  # d_l g^_{W_l} / (-lr), for a^_{l-1}
        # adjoint of the inner backward pass, d^_1 (= lr D^) -> d^_{L+1}; the rate lr of d^_1
        # rides on the products (alpha) instead of a pass of its own
        dh, scale = dbar, lr
        for j in range(n):  # layer j + 2: d_{j+1} = u * [acts[j] > 0], u = d_{j+2} W
            dj, a = s.deltas[j + 1], s.acts[j]
            w = _batched(s.ws[j], T)
            wb, bb = wbar[j], bbar[j]
            nxt: torch.Tensor | None = None
            if dh is not None:
                ub = _relu_grad(dh, a, 0)  # u^ / scale
                base = ub.new_zeros(()) if bb is None else bb.unsqueeze(1) * -lr
                nxt = torch.baddbmm(base, ub, w.transpose(1, 2), alpha=scale)  # (T, N, o)
                new_w[j] = _accmm(new_w[j], dj.transpose(1, 2), ub, scale)  # (T, o, i)
            if wb is not None:
                assert bb is not None
                if nxt is None:
                    nxt = torch.baddbmm(bb.unsqueeze(1), a, wb.transpose(1, 2)).mul_(-lr)
                else:
                    nxt = torch.baddbmm(nxt, a, wb.transpose(1, 2), alpha=-lr)
                carry[j] = torch.bmm(dj, wb) if wb.shape[1] != 1 else dj * wb  # (T, N, i)
            dh, scale = nxt, 1.0
        if dh is None:
            continue
        pbar = dh.squeeze(-1) * c  # (T, Ns)
        if loss == "bce":
            pbar = pbar * s.f * (1.0 - s.f)
        # adjoint of the inner forward pass, head -> first layer
        zbar = pbar.unsqueeze(-1)
        for j in range(n - 1, -1, -1):
            a = s.acts[j]
            new_w[j] = _accmm(new_w[j], zbar.transpose(1, 2), a)
            new_b[j] = _acc(new_b[j], zbar.sum(dim=1))
            w = _batched(s.ws[j], T)
            cj = carry[j]
            ab = torch.bmm(zbar, w) if cj is None else torch.baddbmm(cj, zbar, w, beta=-lr)
            zbar = _relu_grad(ab, a, 0)  # z^_l of the layer below
        z0s_bar = _acc(z0s_bar, zbar)
        if s.d is not None:
            gs_bar = _accmm(gs_bar, zbar, s.d.transpose(1, 2), -1.0)
            dbar = _accmm(dbar, gs.transpose(1, 2), zbar, -1.0)
        wbar, bbar = new_w, new_b
    assert z0q_bar is not None
    z0_bar = _join(z0s_bar, z0q_bar, ns)
    g_bar = None if gq_bar is None else _join(gs_bar, gq_bar, ns)
    assert all(w is not None for w in wbar) and all(b is not None for b in bbar)
    return (
        z0_bar,
        g_bar,
        [w.sum(dim=0) for w in wbar if w is not None],
        [b.sum(dim=0) for b in bbar if b is not None],
    )


class _Unrolled(torch.autograd.Function):
    """Per-task query losses ``(n_out, T)`` after the inner loop of one task group."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, opts: dict[str, Any], z0: torch.Tensor, g: torch.Tensor, *wb: torch.Tensor
    ) -> torch.Tensor:
        n = len(wb) // 2
        losses, saved, queries = _forward(opts, z0, g, list(wb[:n]), list(wb[n:]))
        ctx.opts, ctx.saved, ctx.queries, ctx.g = opts, saved, queries, g
        dev = z0.device.type
        # the reverse pass runs under the forward's autocast state (on CUDA, autograd runs the
        # backward on another thread, where the caller's autocast is not active)
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dev, enabled, dtype = ctx.autocast
        with torch.autocast(dev, dtype=dtype, enabled=enabled):
            z0_bar, g_bar, w_bar, b_bar = _reverse(ctx.opts, ctx.g, ctx.saved, ctx.queries, grad)
        ctx.saved = ctx.queries = None  # free the saved steps now
        return (None, z0_bar, g_bar, *w_bar, *b_bar)


def _join(top: torch.Tensor | None, bottom: torch.Tensor, ns: int) -> torch.Tensor:
    """The gradient of a ``(T, Ns + Nq, .)`` input from its support and query rows (``None``: zero)."""
    if top is None:
        top = bottom.new_zeros(bottom.shape[0], ns, bottom.shape[2])
    return torch.cat([top, bottom], dim=1)


def fused_query_losses(
    spec: MLPSpec,
    fast: Params,
    rows: torch.Tensor,
    support: tuple[torch.Tensor, torch.Tensor],
    query: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    lr: float,
    *,
    first_order: bool = False,
    loss: str = "mse",
    every_step: bool = False,
    first: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per-task query losses ``[(T,)]`` after the last inner step (``every_step``: after each),
    differentiable in ``fast`` and ``rows``: the same values and gradients as
    :func:`~metarec.algorithms.mlp.mlp_query_losses` (check :func:`fused_applies` first).

    Args:
        rows: ``(T, Ns + Nq, F)`` encodings, the support rows first.
        support, query: ``(targets, mask)``, ``(T, Ns)`` and ``(T, Nq)``.
        steps, lr, first_order, loss, every_step: as for ``mlp_query_losses`` (``steps >= 1``).
        first: the first layer's initial pre-activation ``rows W_1^T + b_1`` ``(T, Ns + Nq, o)``
            when the caller has it (e.g. from distinct rows, gathered); computed here otherwise.
    """
    (ys, ms), (yq, mq) = support, query
    ns = ys.shape[1]
    w1n, b1n = spec.layers[0]
    z0 = F.linear(rows, fast[w1n], fast[b1n]) if first is None else first  # (T, Ns + Nq, o)
    xs = rows[:, :ns]
    right = xs.detach() if first_order else xs
    g = torch.baddbmm(rows.new_ones(()), rows, right.transpose(1, 2))  # (T, Ns+Nq, Ns): R X^T + 1
    names = [*spec.layers[1:], spec.head]
    wb = [fast[w] for w, _ in names] + [fast[b] for _, b in names]
    opts = {
        "steps": steps,
        "lr": float(lr),
        "loss": loss,
        "first_order": first_order,
        "every_step": every_step,
        "support": _dloss_coef(ys, ms, loss, rows.dtype),
        "query": (yq, mq),
    }
    out = _Unrolled.apply(opts, z0, g, *wb)
    return list(out.unbind(0))
