"""The meta-loss and meta-gradients of one group of tasks, by path: the analytic inner loop of
MeLU-style decision layers (:mod:`metarec.algorithms.mlp`; its reverse pass written out where
:func:`~metarec.algorithms.mlp_fused.fused_applies`), the MAML family under
:func:`torch.func.vmap`, and Reptile. Summed over groups by
:func:`metarec.algorithms.meta.meta_loss_and_grads`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad_and_value, vmap

from metarec._errors import ConfigError
from metarec.algorithms.batching import Grads, Params, _set, _tensors, _trim
from metarec.algorithms.inner import adapt, adapt_trajectory, set_loss
from metarec.algorithms.mlp import MLPSpec, mlp_query_losses, mlp_spec
from metarec.algorithms.mlp_fused import fused_applies, fused_query_losses
from metarec.algorithms.state import state_lrs
from metarec.config.algorithm import AlgorithmConfig
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.models.base import staged_call

__all__: list[str] = []


_ANALYTIC = ("maml", "fomaml", "metasgd", "anil")  # the analytic path covers the MAML family
_FAST = True  # the analytic path's reverse pass written out where it applies (mlp_fused) and
# MeLU's distinct rows encoded once; False: the path before both, autograd through the
# closed-form inner loop on every padded entry's encoding (the same numbers; benchmarks and
# tests compare the two)


def _analytic_spec(
    cfg: AlgorithmConfig, model: nn.Module, fast: Params, eligible: bool
) -> MLPSpec | None:
    """The analytic inner loop's :class:`MLPSpec` when ``cfg.engine`` allows it and the model
    qualifies (``eligible``: the algorithm and the fixed encoder allow it)."""
    if cfg.engine == "vmap":
        return None
    spec = mlp_spec(model, fast, cfg.loss) if eligible else None
    if spec is None and cfg.engine == "analytic":
        raise ConfigError(
            f"engine='analytic': {type(model).__name__} with name={cfg.name!r}, loss={cfg.loss!r}, inner-loop "
            f"parameters {sorted(fast)} has no analytic inner loop (it needs MeLU without dropout, one of "
            f"{_ANALYTIC}, loss 'mse' or 'bce', and only decision/head parameters adapting); pass engine='auto' "
            "or engine='vmap'"
        )
    return spec


def _decision(spec: MLPSpec, slow: Params) -> dict[str, torch.Tensor]:
    """The decision-MLP entries of ``slow`` (weights that do not adapt but are used by the MLP)."""
    names = {n for pair in (*spec.layers, spec.head) for n in pair}
    return {k: v for k, v in slow.items() if k in names}


def _analytic_grads(
    cfg: AlgorithmConfig,
    model: nn.Module,
    spec: MLPSpec,
    fast: Params,
    slow: Params,
    state: Params,
    batch: EpisodeBatch,
    groups: list[torch.Tensor],
    wn: torch.Tensor,
    sw: torch.Tensor | None,
) -> tuple[torch.Tensor, Grads]:
    """``(sum_t wn_t L_t, grads)`` over the tasks of ``groups`` by the analytic inner loop (each
    group at its own width) and one autograd pass outside it; the encoder runs once for all."""
    leaves = {k: v.detach().requires_grad_() for k, v in {**fast, **slow, **state}.items()}
    f, s, a = ({k: leaves[k] for k in d} for d in (fast, slow, state))
    lrs, step_lrs = state_lrs(cfg, a, f)
    sub = _trim(batch.select(torch.cat(groups)))
    ns = sub.support.users.shape[1]
    x, pos = _encode_rows(
        model,
        s,
        torch.cat([sub.support.users, sub.query.users], 1),
        torch.cat([sub.support.items, sub.query.items], 1),
        distinct=_FAST,
    )  # (U, F) distinct rows, (T, Ns+Nq) the row of each entry
    dec = _decision(spec, s)
    fused = _FAST and cfg.inner_steps > 0 and fused_applies(spec, f, lrs, step_lrs)
    if fused:  # the first layer on the weights shared by every task, once per distinct row
        w1n, b1n = spec.layers[0]
        z1 = F.linear(x, f[w1n], f[b1n])  # (U, o)
    value = torch.zeros((), dtype=wn.dtype, device=wn.device)
    start = 0
    for g in groups:
        rows = slice(start, start + g.shape[0])
        start += g.shape[0]
        part = _trim(sub.select(rows))  # this group's own widths
        sup, qry = part.support, part.query
        nsg, nqg = sup.users.shape[1], qry.users.shape[1]
        idx = torch.cat([pos[rows, :nsg], pos[rows, ns : ns + nqg]], 1)  # (Tg, Ns_g+Nq_g)
        h = F.embedding(idx, x)  # (Tg, Ns_g+Nq_g, F): a gather
        if fused:  # one autograd node per group, its reverse pass written out
            losses = fused_query_losses(
                spec,
                f,
                h,
                (sup.targets, sup.mask),
                (qry.targets, qry.mask),
                cfg.inner_steps,
                cfg.inner_lr,
                first_order=cfg.is_first_order,
                loss=cfg.loss,
                every_step=sw is not None,
                first=F.embedding(idx, z1),
            )
        else:
            losses = mlp_query_losses(
                spec,
                f,
                dec,
                (h[:, :nsg], sup.targets, sup.mask),
                (h[:, nsg:], qry.targets, qry.mask),
                cfg.inner_steps,
                cfg.inner_lr,
                first_order=cfg.is_first_order,
                lrs=lrs,
                per_step_lrs=step_lrs,
                loss=cfg.loss,
                every_step=sw is not None,
            )
        per_task = (
            losses[-1] if sw is None else sum(sw[j] * lj for j, lj in enumerate(losses))
        )  # (Tg,)
        value = value + (wn[g] * per_task).sum()
    names = list(leaves)
    gs = torch.autograd.grad(value, [leaves[k] for k in names], allow_unused=True)
    return value.detach(), {
        k: torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(names, gs, strict=True)
    }


def _encode_rows(
    model: nn.Module,
    slow: Params,
    users: torch.Tensor,
    items: torch.Tensor,
    distinct: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (U, F), pos (T, N))`` with ``x[pos] == model.encode(users, items)``.

    For MeLU (and ``distinct``), whose encoding of an entry depends on its ``(user, item)`` pair
    alone, ``x`` holds each distinct pair once (a meta-batch repeats its user on every entry of a
    task and pads its sets, so about half the entries are repeats); otherwise every entry is its
    own row.
    """
    from metarec.models.melu import MeLU

    if not (distinct and isinstance(model, MeLU) and type(model).encode is MeLU.encode):
        x = staged_call(model, slow, "encode", (users, items))  # (T, N, F)
        pos = torch.arange(users.numel(), device=users.device).view(users.shape)
        return x.reshape(users.numel(), x.shape[-1]), pos
    lo_u, lo_i = users.min(), items.min()
    span = items.max() - lo_i + 1
    uniq, pos = torch.unique((users - lo_u) * span + (items - lo_i), return_inverse=True)
    x = staged_call(
        model, slow, "encode", ((uniq // span + lo_u)[None], (uniq % span + lo_i)[None])
    )[0]  # (U, F)
    return x, pos


def _encode(model: nn.Module, slow: Params, data: EpisodeSet, enabled: bool) -> torch.Tensor | None:
    """``model.encode`` of one set from the meta-parameters (``None`` when not ``enabled``)."""
    return staged_call(model, slow, "encode", (data.users, data.items)) if enabled else None


def _maml_losses(
    cfg: AlgorithmConfig,
    model: nn.Module,
    fast: Params,
    slow: Params,
    state: Params,
    part: EpisodeBatch,
    sw: torch.Tensor | None,
    enc: bool = False,
) -> torch.Tensor:
    """Per-task query loss after adaptation (MAML family): ``(Tc,)``."""
    lrs, step_lrs = state_lrs(cfg, state, fast)

    def task(s: tuple[torch.Tensor, ...], q: tuple[torch.Tensor, ...]) -> torch.Tensor:
        support, query = _set(s), _set(q)
        hs, hq = _encode(model, slow, support, enc), _encode(model, slow, query, enc)
        traj = adapt_trajectory(
            model,
            fast,
            slow,
            support,
            cfg.inner_steps,
            cfg.inner_lr,
            first_order=cfg.is_first_order,
            lrs=lrs,
            per_step_lrs=step_lrs,
            loss=cfg.loss,
            features=hs,
        )
        if sw is None:
            return set_loss(model, traj[-1], slow, query, cfg.loss, features=hq)
        per_step = torch.stack(
            [set_loss(model, f, slow, query, cfg.loss, features=hq) for f in traj]
        )  # (steps,)
        return (sw * per_step).sum()

    return vmap(task, randomness="different")(_tensors(part.support), _tensors(part.query))


def _reptile(
    cfg: AlgorithmConfig,
    model: nn.Module,
    fast: Params,
    slow: Params,
    part: EpisodeBatch,
    wc: torch.Tensor,
    enc: bool = False,
) -> tuple[torch.Tensor, Grads]:
    """Reptile on a chunk: fast grads ``sum_t wc_t (theta - theta_t)``, slow: query gradient."""

    def task(
        s: tuple[torch.Tensor, ...], q: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, Grads, Grads]:
        support, query = _set(s), _set(q)
        hs = _encode(model, {k: v.detach() for k, v in slow.items()}, support, enc)
        adapted = adapt(
            model,
            fast,
            slow,
            support,
            cfg.inner_steps,
            cfg.inner_lr,
            first_order=True,
            loss=cfg.loss,
            features=hs,
        )
        adapted = {k: v.detach() for k, v in adapted.items()}
        if not slow:
            return set_loss(model, adapted, slow, query, cfg.loss), adapted, {}

        def query_loss(sl: dict[str, torch.Tensor]) -> torch.Tensor:
            return set_loss(
                model, adapted, sl, query, cfg.loss, features=_encode(model, sl, query, enc)
            )

        g_slow, ql = grad_and_value(query_loss)(dict(slow))
        return ql, adapted, g_slow

    ql, adapted, g_slow = vmap(task, randomness="different")(
        _tensors(part.support), _tensors(part.query)
    )
    grads = {
        k: torch.einsum("t,t...->...", wc, fast[k] - adapted[k]) for k in fast
    }  # theta - theta_t
    grads.update({k: torch.einsum("t,t...->...", wc, g) for k, g in g_slow.items()})
    return (wc * ql).sum(), grads
