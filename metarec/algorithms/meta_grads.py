"""The meta-loss and meta-gradients of one group of tasks, by path: the analytic inner loop of
MeLU-style decision layers (:mod:`metarec.algorithms.mlp`), the MAML family under
:func:`torch.func.vmap`, and Reptile. Summed over groups by
:func:`metarec.algorithms.meta.meta_loss_and_grads`."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad_and_value, vmap

from metarec._errors import ConfigError
from metarec.algorithms.batching import Grads, Params, _tensors, _trim
from metarec.algorithms.inner import adapt, adapt_trajectory, set_loss
from metarec.algorithms.mlp import MLPSpec, mlp_query_losses, mlp_spec
from metarec.algorithms.state import state_lrs
from metarec.config.algorithm import AlgorithmConfig
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.models.base import staged_call

__all__: list[str] = []


_ANALYTIC = ("maml", "fomaml", "metasgd", "anil")  # the analytic path covers the MAML family


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
    h = staged_call(
        model,
        s,
        "encode",
        (
            torch.cat([sub.support.users, sub.query.users], 1),
            torch.cat([sub.support.items, sub.query.items], 1),
        ),
    )  # (T, Ns+Nq, F)
    dec = _decision(spec, s)
    value = torch.zeros((), dtype=wn.dtype, device=wn.device)
    start = 0
    for g in groups:
        rows = slice(start, start + g.shape[0])
        start += g.shape[0]
        part = _trim(sub.select(rows))  # this group's own widths
        sup, qry = part.support, part.query
        hs = h[rows, : sup.users.shape[1]]  # (Tg, Ns_g, F)
        hq = h[rows, ns : ns + qry.users.shape[1]]  # (Tg, Nq_g, F)
        losses = mlp_query_losses(
            spec,
            f,
            dec,
            (hs, sup.targets, sup.mask),
            (hq, qry.targets, qry.mask),
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
        support, query = EpisodeSet(*s), EpisodeSet(*q)
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
        support, query = EpisodeSet(*s), EpisodeSet(*q)
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
