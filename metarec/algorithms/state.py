"""Algorithm choice and hyper-parameters, and the learnable algorithm state.

Algorithms (``AlgorithmConfig.name``):

* ``maml``: second-order MAML (``first_order=True`` makes it FOMAML).
* ``fomaml``: first-order MAML (the inner gradients are detached).
* ``reptile``: outer gradient ``theta - theta_adapted`` (fast weights), averaged over tasks,
  for an outer optimiser (plain SGD with rate ``eps`` gives Reptile's
  ``theta <- theta + eps * (theta_adapted - theta)``); slow weights get the first-order query
  gradient at the adapted point.
* ``metasgd``: MAML with a learned inner learning rate per parameter entry (``lr.<name>``).
* ``anil``: MAML adapting only the model's head (``model.head_patterns``).
* ``global``: no inner loop; plain training on every interaction of the task (support and
  query) with the initial weights; evaluated without adaptation.
* ``finetune``: trained like ``global``; evaluated after fine-tuning on the support set.

MAML++ options (maml, fomaml, anil): ``per_step_lr`` learns one inner rate per parameter tensor
and step (``step_lr.<name>``, shape ``(inner_steps,)``); ``multi_step_loss`` (also metasgd)
takes a weighted sum of the query losses after every inner step (:func:`msl_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from metarec._errors import ConfigError
from metarec.config.algorithm import ALGORITHMS, ENGINES, AlgorithmConfig

__all__ = [
    "ALGORITHMS",
    "ENGINES",
    "AlgorithmConfig",
    "init_algorithm_state",
    "msl_weights",
    "state_lrs",
]


def init_algorithm_state(
    cfg: AlgorithmConfig, fast: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Learnable algorithm state for ``cfg``, to be optimised with the model's parameters.

    Args:
        cfg: the algorithm config.
        fast: the inner-loop parameters (``split_params(model, ...)[0]``).

    Returns:
        ``{}`` for most algorithms; Meta-SGD: ``{"lr.<name>": tensor like the parameter}``;
        MAML++ ``per_step_lr``: ``{"step_lr.<name>": (inner_steps,)}``; every entry starts at
        ``inner_lr`` and is a fresh leaf with ``requires_grad=True``.

    Example:
        >>> import metarec as mr
        >>> from metarec.data.synthetic import make_synthetic
        >>> table = make_synthetic(n_domains=2, n_users=20, n_items=30, seed=0)
        >>> fast, slow = mr.split_params(mr.build_model("melu", table, embedding_dim=4, hidden=[8]))
        >>> init_algorithm_state(AlgorithmConfig("maml"), fast)
        {}
        >>> state = init_algorithm_state(AlgorithmConfig("metasgd", inner_lr=0.05), fast)
        >>> sorted(state)
        ['lr.decision.0.bias', 'lr.decision.0.weight', 'lr.head.bias', 'lr.head.weight']
        >>> lr = state["lr.head.weight"]
        >>> lr.shape == fast["head.weight"].shape, bool((lr == 0.05).all()), lr.requires_grad
        (True, True, True)
        >>> cfg = AlgorithmConfig("maml", per_step_lr=True, inner_steps=3)   # MAML++
        >>> init_algorithm_state(cfg, fast)["step_lr.head.weight"].shape
        torch.Size([3])
    """
    if cfg.name == "metasgd":
        return {
            f"lr.{k}": torch.full_like(v.detach(), cfg.inner_lr).requires_grad_()
            for k, v in fast.items()
        }
    if cfg.per_step_lr:
        return {
            f"step_lr.{k}": torch.full(
                (cfg.inner_steps,), cfg.inner_lr, dtype=v.dtype, device=v.device
            ).requires_grad_()
            for k, v in fast.items()
        }
    return {}


def state_lrs(
    cfg: AlgorithmConfig, state: Mapping[str, torch.Tensor] | None, fast: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
    """``(lrs, per_step_lrs)`` keyed by parameter name, checked against ``cfg`` and ``fast``."""
    if not cfg.meta_learned_lrs:
        return None, None
    prefix = "lr." if cfg.name == "metasgd" else "step_lr."
    missing = [k for k in fast if prefix + k not in (state or {})]
    if missing:
        raise ConfigError(
            f"state: name={cfg.name!r} (per_step_lr={cfg.per_step_lr}) needs learned rates, "
            f"{prefix + missing[0]!r} is missing; create them with "
            "state = init_algorithm_state(cfg, split_params(model, ...)[0]) and pass state=state"
        )
    assert state is not None
    rates = {k: state[prefix + k] for k in fast}
    return (rates, None) if cfg.name == "metasgd" else (None, rates)


def msl_weights(steps: int, progress: float = 0.0, min_weight: float = 0.03) -> torch.Tensor:
    """MAML++ multi-step loss weights ``(steps,)``, summing to 1.

    ``progress`` in ``[0, 1]`` anneals from uniform (``1/steps`` each) to mostly the final step:
    each non-final weight is ``max((1 - progress) / steps, min_weight / steps)``, the final one
    takes the rest (Antoniou et al., "How to train your MAML", ICLR 2019).
    """
    if not 0.0 <= progress <= 1.0:
        raise ConfigError(
            f"progress={progress!r}: must be in [0, 1] (fraction of the annealing done)"
        )
    w = max((1.0 - progress) / steps, min_weight / steps)
    out = torch.full((steps,), w, dtype=torch.get_default_dtype())
    out[-1] = 1.0 - w * (steps - 1)
    return out
