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

The per-group meta-gradients live in :mod:`metarec.algorithms.meta_grads`, the batch checks and
task groups in :mod:`metarec.algorithms.batching`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from metarec._errors import ConfigError
from metarec.algorithms.batching import (
    Grads,
    Params,
    _check_batch,
    _check_params,
    _check_set,
    _concat,
    _groups,
    _set,
    _tensors,
    _trim,
)
from metarec.algorithms.inner import adapt, set_loss
from metarec.algorithms.meta_grads import (
    _ANALYTIC,
    _analytic_grads,
    _analytic_spec,
    _decision,
    _encode,
    _maml_losses,
    _reptile,
)
from metarec.algorithms.mlp import mlp_forward, mlp_spec, mlp_trajectory
from metarec.algorithms.state import msl_weights, state_lrs
from metarec.config.algorithm import AlgorithmConfig
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.models.base import encoder_is_fixed, model_adapt_patterns, split_params, staged_call

__all__ = ["adapt_patterns", "meta_loss_and_grads", "task_weights", "adapt_batch", "predict_batch"]


def adapt_patterns(cfg: AlgorithmConfig, model: nn.Module) -> tuple[str, ...]:
    """The inner-loop patterns: ``cfg.adapt``, else the head for ANIL, else the model's
    (:func:`~metarec.models.base.model_adapt_patterns`: every parameter of a plain ``nn.Module``).

    Example:
        >>> import torch, metarec as mr
        >>> from metarec.data.synthetic import make_synthetic
        >>> model = mr.build_model("melu", make_synthetic(n_domains=2, n_users=20, n_items=30, seed=0))
        >>> adapt_patterns(mr.AlgorithmConfig("maml"), model), adapt_patterns(mr.AlgorithmConfig("anil"), model)
        (('decision.*', 'head.*'), ('head.*',))
        >>> adapt_patterns(mr.AlgorithmConfig("maml"), torch.nn.Linear(2, 1))
        ('*',)
    """
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

    Example:
        One outer step of MAML on four tasks:

        >>> import torch, metarec as mr
        >>> from metarec.data.synthetic import make_synthetic
        >>> from metarec.episodes.splits import random_split
        >>> table = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> pool = random_split(table, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10).pools["meta-train"]
        >>> batch = mr.TaskSampler(table, pool, mr.SamplerConfig(n_support=3, n_query=5), seed=0).sample(4)
        >>> model = mr.build_model("melu", table, embedding_dim=4, hidden=[8])
        >>> params = dict(model.named_parameters())
        >>> cfg = mr.AlgorithmConfig("maml", inner_steps=1, inner_lr=0.1)
        >>> opt = torch.optim.Adam(params.values(), lr=1e-3)
        >>> loss, grads = meta_loss_and_grads(cfg, model, params, batch)
        >>> for k, p in params.items():
        ...     p.grad = grads[k]
        >>> opt.step()
        >>> loss.shape, list(grads) == list(params), grads["head.weight"].shape
        (torch.Size([]), True, torch.Size([1, 8]))
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

    Example:
        >>> import torch, metarec as mr
        >>> from metarec.data.synthetic import make_synthetic
        >>> from metarec.episodes.splits import random_split
        >>> table = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> pool = random_split(table, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10).pools["meta-train"]
        >>> batch = mr.TaskSampler(table, pool, mr.SamplerConfig(n_support=3, n_query=5), seed=0).sample(4)
        >>> model = mr.build_model("melu", table, embedding_dim=4, hidden=[8])
        >>> params = dict(model.named_parameters())
        >>> cfg = mr.AlgorithmConfig("maml", inner_steps=1, inner_lr=0.1)
        >>> fast = adapt_batch(cfg, model, params, batch.support)  # 4 tasks, 3 shots each
        >>> sorted(fast), tuple(fast["head.weight"].shape)
        (['decision.0.bias', 'decision.0.weight', 'head.bias', 'head.weight'], (4, 1, 8))
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
    n = cfg.default_steps if steps is None else steps
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

    def one(*tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        s = _set(tensors)
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

    out = vmap(one, randomness="different")(*_tensors(support))
    return {k: v.detach() for k, v in out.items()}


def predict_batch(
    model: nn.Module, params: Params, fast_stacked: Params, users: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """Predictions of each task's adapted model: ``users, items (T, N) -> (T, N)``.

    ``fast_stacked`` (from :func:`adapt_batch`) replaces those entries of ``params``; wrap
    the call in ``torch.no_grad()`` for evaluation.

    Example:
        >>> import torch, metarec as mr
        >>> from metarec.data.synthetic import make_synthetic
        >>> from metarec.episodes.splits import random_split
        >>> table = make_synthetic(n_domains=2, n_users=30, n_items=40, seed=0)
        >>> pool = random_split(table, "user", (0.6, 0.2, 0.2), n_query=5, min_interactions=10).pools["meta-train"]
        >>> batch = mr.TaskSampler(table, pool, mr.SamplerConfig(n_support=3, n_query=5), seed=0).sample(4)
        >>> model = mr.build_model("melu", table, embedding_dim=4, hidden=[8])
        >>> params = dict(model.named_parameters())
        >>> cfg = mr.AlgorithmConfig("maml", inner_steps=1, inner_lr=0.1)
        >>> fast = adapt_batch(cfg, model, params, batch.support)
        >>> with torch.no_grad():
        ...     pred = predict_batch(model, params, fast, batch.query.users, batch.query.items)
        >>> pred.shape, bool(pred.isfinite().all())
        (torch.Size([4, 5]), True)
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
