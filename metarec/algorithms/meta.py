"""Entry points for the outer loop: the meta-loss and its gradients, adaptation, prediction.

All three are pure functions of a parameter dict (the model only supplies the forward pass and
its buffers) and run the tasks of a meta-batch together: under :func:`torch.func.vmap` (any
model), or, for MeLU-style decision layers and the MAML family, as the batched analytic inner
loop of :mod:`metarec.algorithms.mlp` (``cfg.engine``; the same meta-gradients).

The meta-loss is a weighted mean over tasks, ``sum_t w_t L_t / sum_t w_t``, of each task's
masked query loss after adaptation (``global``/``finetune``: the loss on support and query
with the initial weights), with ``w_t = 1`` for a task that has at least one real query
interaction and 0 for an all-padding task. Chunking the task axis (``cfg.chunk_size``) sums
per-chunk gradients of ``sum_{t in chunk} w_t L_t / sum_t w_t``, so it equals the unchunked
result exactly (up to float summation order). Each chunk is cut to the width of its longest
support and query set (trailing all-padding columns dropped; the masked losses ignore them).
``cfg.buckets`` first groups the tasks by support size (:func:`~metarec.algorithms.buckets.bucket_tasks`)
so that each group is cut to its own longest task (chunks then split each group);
``cfg.sort_tasks`` with ``buckets=1`` orders the tasks by support size before chunking.

When every inner-loop parameter lies outside the model's encoder (``cfg.encode_once`` and
:func:`~metarec.models.base.encoder_is_fixed`), each task's support and query sets are encoded
once from the meta-parameters inside the differentiated function, and the inner loop runs the
model's ``decide`` stage only: the same losses and meta-gradients (the encoder's gradients flow
through the encodings) without re-running the encoder at every inner step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from metarec._errors import ConfigError
from metarec.algorithms.buckets import bucket_tasks
from metarec.algorithms.config import AlgorithmConfig, msl_weights, state_lrs
from metarec.algorithms.inner import adapt, adapt_trajectory, set_loss
from metarec.algorithms.mlp import MLPSpec, mlp_forward, mlp_query_losses, mlp_spec, mlp_trajectory
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.models.base import encoder_is_fixed, model_adapt_patterns, split_params, staged_call

__all__ = ["adapt_patterns", "meta_loss_and_grads", "task_weights", "adapt_batch", "predict_batch"]

Params = Mapping[str, torch.Tensor]
Grads = dict[str, torch.Tensor]


def adapt_patterns(cfg: AlgorithmConfig, model: nn.Module) -> tuple[str, ...]:
    """The inner-loop patterns: ``cfg.adapt``, else the head for ANIL, else the model's
    (:func:`~metarec.models.base.model_adapt_patterns`: every parameter of a plain ``nn.Module``)."""
    if cfg.adapt is not None:
        return cfg.adapt
    if cfg.name == "anil":
        head = getattr(model, "head_patterns", None)
        if not head:
            raise ConfigError(
                f"name='anil': ANIL adapts the model's head, but {type(model).__name__} declares no head_patterns; "
                "set a class attribute head_patterns = ('fc.*',) naming the output layer, or pass "
                "AlgorithmConfig('maml', adapt=('fc.*',))"
            )
        return tuple(head)
    return model_adapt_patterns(model)


def meta_loss_and_grads(
    cfg: AlgorithmConfig,
    model: nn.Module,
    params: Params,
    batch: EpisodeBatch,
    *,
    state: Params | None = None,
    step_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Grads]:
    """Meta-loss of a meta-batch and its gradients w.r.t. ``params`` and ``state``.

    Args:
        cfg: algorithm and hyper-parameters (``cfg.chunk_size`` chunks the task axis).
        model: supplies the forward pass and buffers.
        params: ``{name: tensor}`` with all of the model's parameter names (the tensors are
            detached first; nothing accumulates in ``.grad``).
        batch: ``T`` tasks, support and query ``(T, N)``.
        state: learned algorithm state from :func:`init_algorithm_state` (Meta-SGD, MAML++).
        step_weights: ``(inner_steps,)`` multi-step loss weights (default: uniform;
            see :func:`msl_weights` for the MAML++ annealing).

    Returns:
        ``(loss, grads)``: the detached scalar meta-loss and ``{name: gradient}`` for every key
        of ``params`` and then of ``state``, ready to be set as ``.grad`` of the optimised
        tensors (for ``reptile`` the fast-weight entries are ``theta - theta_adapted``).

    Example::

        loss, grads = meta_loss_and_grads(cfg, model, params, batch, state=state)
        for k, p in {**params, **state}.items():
            p.grad = grads[k]
        opt.step()
    """
    _check_batch(batch)
    _check_params(model, params)
    p = {k: v.detach() for k, v in params.items()}
    st = {k: v.detach() for k, v in (state or {}).items()}
    fast, slow = split_params(model, adapt_patterns(cfg, model), p)
    no_inner = cfg.name in ("global", "finetune")
    w = task_weights(cfg, batch).to(next(iter(p.values())).dtype)  # (T,)
    total = w.sum().clamp_min(1.0)
    sw = None
    if cfg.multi_step_loss:
        sw = msl_weights(cfg.inner_steps, 0.0) if step_weights is None else step_weights
        if sw.shape != (cfg.inner_steps,):
            raise ConfigError(
                f"step_weights: shape {tuple(sw.shape)} does not match inner_steps={cfg.inner_steps}; "
                f"pass a ({cfg.inner_steps},) tensor, e.g. msl_weights({cfg.inner_steps}, progress)"
            )
        sw = sw.to(w)

    enc = cfg.encode_once and encoder_is_fixed(model, fast)
    spec = _analytic_spec(cfg, model, fast, enc and cfg.name in _ANALYTIC)
    loss = torch.zeros((), dtype=w.dtype, device=w.device)
    acc: Grads = {}

    def add(lc: torch.Tensor, gc: Grads) -> None:
        nonlocal loss
        loss = loss + lc.detach()
        for k, g in gc.items():
            acc[k] = acc[k] + g if k in acc else g

    groups = _groups(cfg, batch)
    if spec is not None:  # all groups in one graph (one encoder pass), or one graph per chunk
        for gs in [groups] if cfg.chunk_size is None else [[g] for g in groups]:
            add(*_analytic_grads(cfg, model, spec, fast, slow, st, batch, gs, w / total, sw))
        groups = []
    for idx in groups:
        part, wc = _trim(batch.select(idx)), w[idx] / total
        if cfg.name == "reptile":
            add(*_reptile(cfg, model, fast, slow, part, wc, enc))
            continue

        def objective(
            f: Params, s: Params, a: Params, part: EpisodeBatch = part, wc: torch.Tensor = wc
        ) -> torch.Tensor:
            if no_inner:
                per_task = set_loss(
                    model, f, s, _concat(part.support, part.query), cfg.loss
                )  # (Tc,)
            else:
                per_task = _maml_losses(cfg, model, f, s, a, part, sw, enc)  # (Tc,)
            return (wc * per_task).sum()

        (gf, gs_, ga), lc = grad_and_value(objective, argnums=(0, 1, 2))(fast, slow, st)
        add(lc, {**gf, **gs_, **ga})
    grads = {k: acc[k].detach() for k in p}
    grads.update({k: acc[k].detach() if k in acc else torch.zeros_like(v) for k, v in st.items()})
    return loss, grads


def task_weights(cfg: AlgorithmConfig, batch: EpisodeBatch) -> torch.Tensor:
    """Each task's weight ``w_t`` in the meta-loss ``sum_t w_t L_t / sum_t w_t``: ``bool (T,)``,
    True for a task with a real query interaction (``global``/``finetune``: a real interaction
    in either set). A data-parallel run weights each rank's meta-gradient by ``sum w_t``."""
    real = batch.query.mask.any(dim=1)  # (T,)
    if cfg.name in ("global", "finetune"):
        real = real | batch.support.mask.any(dim=1)
    return real


def adapt_batch(
    cfg: AlgorithmConfig,
    model: nn.Module,
    params: Params,
    support: EpisodeSet,
    steps: int | None = None,
    lr: float | None = None,
    *,
    state: Params | None = None,
) -> dict[str, torch.Tensor]:
    """Adapt to every task's support set (evaluation; no meta-gradient, outputs detached).

    Args:
        steps: inner steps (default ``cfg.inner_steps``; ``global``: 0, no adaptation).
        lr: scalar rate (default ``cfg.inner_lr``); not allowed with learned rates.
        state: learned rates (Meta-SGD, MAML++), as for :func:`meta_loss_and_grads`.

    Returns:
        The fast weights per task, ``{name: (T, *shape)}`` (pass to :func:`predict_batch`).
    """
    _check_set(support, "support")
    _check_params(model, params)
    p = {k: v.detach() for k, v in params.items()}
    fast, slow = split_params(model, adapt_patterns(cfg, model), p)
    lrs, step_lrs = state_lrs(cfg, state, fast)
    lrs = None if lrs is None else {k: v.detach() for k, v in lrs.items()}
    step_lrs = None if step_lrs is None else {k: v.detach() for k, v in step_lrs.items()}
    if lr is not None and cfg.meta_learned_lrs:
        raise ConfigError(
            f"lr={lr!r}: name={cfg.name!r} adapts with its learned rates (state); leave lr=None"
        )
    n = (0 if cfg.name == "global" else cfg.inner_steps) if steps is None else steps
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(
            f"steps={steps!r}: must be an int >= 0; pass steps=None for cfg.inner_steps"
        )
    if step_lrs is not None and n > cfg.inner_steps:
        raise ConfigError(
            f"steps={n}: per-step rates were learned for inner_steps={cfg.inner_steps}; pass steps <= {cfg.inner_steps}"
        )
    T = support.n_tasks
    if n == 0:
        return {k: v.expand(T, *v.shape).clone() for k, v in fast.items()}
    enc = cfg.encode_once and encoder_is_fixed(model, fast)
    spec = _analytic_spec(cfg, model, fast, enc)
    if spec is not None:
        with torch.no_grad():
            x = staged_call(model, slow, "encode", (support.users, support.items))  # (T, N, F)
            out = mlp_trajectory(
                spec,
                fast,
                _decision(spec, slow),
                x,
                support.targets,
                support.mask,
                n,
                cfg.inner_lr if lr is None else lr,
                first_order=True,
                lrs=lrs,
                per_step_lrs=step_lrs,
                loss=cfg.loss,
            )
        return {k: out[k].detach() for k in fast}

    def one(
        u: torch.Tensor, i: torch.Tensor, t: torch.Tensor, m: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        s = EpisodeSet(u, i, t, m)
        return adapt(
            model,
            fast,
            slow,
            s,
            n,
            cfg.inner_lr if lr is None else lr,
            first_order=True,
            lrs=lrs,
            per_step_lrs=step_lrs,
            loss=cfg.loss,
            features=_encode(model, slow, s, enc),
        )

    out = vmap(one, randomness="different")(
        support.users, support.items, support.targets, support.mask
    )
    return {k: v.detach() for k, v in out.items()}


def predict_batch(
    model: nn.Module, params: Params, fast_stacked: Params, users: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """Predictions of each task's adapted model: ``users, items (T, N) -> (T, N)``.

    ``fast_stacked`` (from :func:`adapt_batch`) replaces those entries of ``params``; wrap
    the call in ``torch.no_grad()`` for evaluation.
    """
    _check_params(model, params)
    extra = [k for k in fast_stacked if k not in params]
    if extra:
        raise ConfigError(
            f"fast_stacked: {extra[0]!r} is not a parameter name; pass the dict adapt_batch returned"
        )
    slow = {k: v for k, v in params.items() if k not in fast_stacked}
    spec = mlp_spec(model, fast_stacked, "mse") if encoder_is_fixed(model, fast_stacked) else None
    if spec is not None and all(v.dim() == params[k].dim() + 1 for k, v in fast_stacked.items()):
        x = staged_call(model, slow, "encode", (users, items))  # (T, N, F)
        return mlp_forward(spec, {**_decision(spec, slow), **fast_stacked}, x)

    def one(f: Params, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (dict(f), slow), (u, i))

    return vmap(one, randomness="different")(dict(fast_stacked), users, items)


# ---------------------------------------------------------------------- helpers
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
    return EpisodeSet(
        s.users[:, :width], s.items[:, :width], s.targets[:, :width], s.mask[:, :width], r
    )


def _tensors(s: EpisodeSet) -> tuple[torch.Tensor, ...]:
    return s.users, s.items, s.targets, s.mask


def _concat(a: EpisodeSet, b: EpisodeSet) -> EpisodeSet:
    return EpisodeSet(
        *(torch.cat([x, y], dim=-1) for x, y in zip(_tensors(a), _tensors(b), strict=True))
    )


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
        for name, t in zip(("users", "items", "targets", "mask"), _tensors(s), strict=True)
    }
    if len(set(shapes.values())) != 1 or len(shapes["users"]) != 2:
        raise ConfigError(
            f"{arg}: users, items, targets and mask must share one (T, N) shape, got {shapes}"
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
